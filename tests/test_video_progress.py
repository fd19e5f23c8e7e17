"""Video progress in frames: per-pass bars with declared or estimated totals, frames/s and ETA,
the run bar's frame count; -q silences them. Tiny models, tiny clips."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_video import make_video

from depthcli.cli import main
from depthcli.cli import predict as cli_predict
from depthcli.cli.common import Progress
from depthcli.io import video_decode as vio
from depthcli.runs.video_progress import VideoProgress, eta_text, frame_total


class _Recorder(Progress):
    """The CLI's bar forced onto a buffer; records each frame bar it opens."""

    made: list[_Recorder] = []

    def __init__(self, enabled: bool, unit: str = "input", total: int | None = None) -> None:
        self.buf = io.StringIO()
        super().__init__(enabled, unit, total, stream=self.buf if enabled else None)
        self.opened: list[tuple[str, int, bool, int]] = []
        self.counts: list[int] = []
        _Recorder.made.append(self)

    def frame_bar(self, desc, total, estimated, done=0):  # type: ignore[override]
        self.opened.append((desc, total, estimated, done))
        bar = super().frame_bar(desc, total, estimated, done)
        self.counts.append(0)
        k = len(self.counts) - 1
        inner = bar.update

        def update(n: int) -> None:
            self.counts[k] += n
            inner(n)

        bar.update = update
        return bar


@pytest.fixture()
def recorder(monkeypatch):
    _Recorder.made = []
    monkeypatch.setattr(cli_predict, "Progress", _Recorder)
    return _Recorder


def _run(src: Path, out: Path, model: str, ckpt: Path, *extra: str):
    args = ["predict", str(src), "-o", str(out), "--model", model, "--weights", str(ckpt),
            "--input-size", "56", "--device", "cpu", "--backend", "torch", "--threads", "1", *extra]
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("pclip") / "c.mp4", 14, 48, 32, rate=Fraction(25))


def test_frame_total_declared_or_estimated(tmp_path, clip) -> None:
    assert frame_total(vio.probe(clip)) == (14, False)
    mkv = make_video(tmp_path / "c.mkv", 10, 48, 32, rate=Fraction(25), fmt="matroska")
    total, estimated = frame_total(vio.probe(mkv))
    assert estimated and abs(total - 10) <= 1


def test_progress_text_counts_fps_and_eta(monkeypatch) -> None:
    clock = iter([0.0, 0.0, 2.0, 4.0, 4.0, 4.0])
    monkeypatch.setattr("depthcli.runs.video_progress.time.perf_counter", lambda: next(clock))
    p = VideoProgress("c.mp4", "frames", (100, True), None, start=20)
    p.step(10)
    assert p.describe(4.0) == "30/~100 frames, 2.50 fps, ETA 0:28"
    assert eta_text(3725) == "1:02:05"
    assert VideoProgress("c", "x", (0, True), None).describe().startswith("0 frames")


@pytest.mark.parametrize("model,extra,labels", [
    ("da2-tiny-test", ("-f", "color,npy"), ["pass 1/2", "pass 2/2"]),
    ("vda-tiny-test", ("-f", "gray", "--json"), ["pass 1/2", "pass 2/2"]),
    ("vda-tiny-test", ("-f", "gray", "--video-norm", "frame"), ["frames"]),
])
def test_bars_in_frames(recorder, clip, tiny_ckpt, tiny_vda_ckpt, tmp_path, model, extra,
                        labels) -> None:
    ckpt = tiny_vda_ckpt if model.startswith("vda") else tiny_ckpt
    res = _run(clip, tmp_path / "o", model, ckpt, *extra)
    assert res.exit_code == 0, res.output
    rec = recorder.made[-1]
    assert [d for d, *_ in rec.opened] == [f"c.mp4 {lab}" for lab in labels]
    assert all(total == 14 and not est and done == 0 for _, total, est, done in rec.opened)
    assert rec.counts == [14] * len(labels)
    assert rec.video_frames == 14 * len(labels)
    text = rec.buf.getvalue()
    assert all(f"{d}:" in text for d, *_ in rec.opened) and "/14 [" in text and "frame/s" in text
    if "--json" in extra:  # the summary keeps its keys
        summary = json.loads(res.stdout)
        assert summary["frames"] == 14 and "frames_per_s" in summary


def test_quiet_shows_no_bar(recorder, clip, tiny_ckpt, tmp_path) -> None:
    res = _run(clip, tmp_path / "o", "da2-tiny-test", tiny_ckpt, "-f", "npy", "-q")
    assert res.exit_code == 0, res.output
    rec = recorder.made[-1]
    assert rec.bar is None and rec.buf.getvalue() == ""
    assert [d for d, *_ in rec.opened] == ["c.mp4 frames"]  # one pass, nothing drawn
    assert rec.counts == [14]
