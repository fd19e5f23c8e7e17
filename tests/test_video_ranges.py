"""A per-frame video split into frame ranges (the Ray engine's actors) and joined: the range
plan, the clip statistics merged exactly, and the joined files equal in bytes to one local
run's (ranges run in-process here, the last to finish first; tests/ray_scenarios.py does the
same through Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_video import make_video

from depthcli import outputs
from depthcli.engine.core import DepthEngine
from depthcli.io.atomic import PARTIAL_DIR
from depthcli.outputs import clipstats
from depthcli.outputs.clipstats import ClipStats
from depthcli.outputs.render import RenderOptions
from depthcli.runs import video as video_mod
from depthcli.runs.options import PredictOptions
from depthcli.runs.video import _logger as video_log
from depthcli.runs.video import predict_video
from depthcli.runs.video_progress import VideoProgress
from depthcli.runs.video_ranges import Span, cleanup, plan
from depthcli.runs.video_resume import state_folder
from depthcli.runs.video_split import run_range


def test_plan_ranges_on_segment_and_batch_boundaries() -> None:
    assert plan(24, False, 2, 4, 1) == [Span(0, 2, 0, 12), Span(1, 2, 12, None)]
    assert [(s.start, s.end) for s in plan(1000, False, 3, 120, 1)] == \
        [(0, 360), (360, 720), (720, None)]
    spans = plan(100, False, 4, 4, 3)  # segments of 4, batches of 3: starts on 12s
    assert len(spans) == 4 and all(s.start % 12 == 0 for s in spans)
    assert plan(239, False, 2, 120, 1) == []  # too short for two ranges of 2 segments
    assert plan(5000, True, 2, 120, 1) == []  # frame count only estimated
    assert plan(5000, False, 1, 120, 1) == []  # one actor
    assert len(plan(5000, False, 64, 120, 1)) == 5000 // 240  # not shorter than 2 segments
    assert Span.of_row(Span(1, 2, 12, None).as_row()) == Span(1, 2, 12, None)


@pytest.mark.parametrize("mode,cap", [("minmax", 1 << 18), ("percentile", 200),
                                      ("percentile", 5)])
def test_stats_of_ranges_merge_to_the_clip_stats(mode, cap, monkeypatch) -> None:
    """min/max exact; the percentile subsample: the same values whatever the ranges, also
    where frames are thinned (cap 5: every other frame goes)."""
    monkeypatch.setattr(clipstats, "PERCENTILE_SAMPLE", cap)
    ropts = RenderOptions(mode=mode, percentiles=(3.0, 97.0))
    g = torch.Generator().manual_seed(0)
    frames = [torch.rand(6, 7, generator=g) * (i + 1) for i in range(40)]
    frames[5][2, 3] = float("nan")
    frames[9][:] = float("inf")  # no finite value: no sample
    whole = ClipStats(ropts)
    for i, f in enumerate(frames):
        whole.update(f, i)
    for cuts in ([0, 20, 40], [0, 7, 8, 33, 40]):
        parts = []
        for a, b in zip(cuts, cuts[1:], strict=False):
            st = ClipStats(ropts)
            for i in range(a, b):
                st.update(frames[i], i)
            parts.append(st)
        merged = ClipStats.merge(ropts, parts)
        assert merged.value_range() == whole.value_range()
        assert (merged.level, merged.size) == (whole.level, whole.size)
        assert sorted(merged.index) == whole.index
        assert np.array_equal(np.sort(np.concatenate(merged.samples or [np.zeros(0)])),
                              np.sort(np.concatenate(whole.samples or [np.zeros(0)])))


@pytest.fixture(scope="module")
def est(tiny_ckpt):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model's forwards: no spinning threads
    yield DepthEngine.from_name("da2-tiny-test", weights=tiny_ckpt, device="cpu",
                                   input_size=56, backend="torch")
    torch.set_num_threads(threads)


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("formats,norm,mode", [
    (("color", "npy", "png16"), "clip", "minmax"),  # two passes, from the npy
    (("gray", "png16"), "clip", "percentile"),  # two passes, from the store; percentiles
    (("color", "exr"), "frame", "minmax"),  # one pass: the segments joined, frame files moved
])
def test_ranges_joined_are_the_local_bytes(tmp_path, est, monkeypatch, formats, norm,
                                           mode) -> None:
    monkeypatch.setenv("DEPTHCLI_SEGMENT_FRAMES", "4")
    monkeypatch.setattr(clipstats, "PERCENTILE_SAMPLE", 2000)  # thinned, unlike per range
    src = make_video(tmp_path / "clip.mp4", n=22, audio="aac")
    ropts = RenderOptions(mode=mode)

    def opts(out: Path) -> PredictOptions:
        return PredictOptions(inputs=(str(src),), out_dir=out, video_norm=norm,
                              output=outputs.OutputOptions(formats, render=ropts))

    local = predict_video(src, tmp_path / "local" / "clip", est, opts(tmp_path / "local"))
    out = tmp_path / "split"
    stale = state_folder(out, out / "clip").with_name(  # a killed split of another plan
        state_folder(out, out / "clip").name + ".range0of3")
    stale.mkdir(parents=True)
    spans = plan(22, False, 2, 4, 1)
    assert [(s.start, s.end) for s in spans] == [(0, 12), (12, None)]
    if norm == "clip" and mode == "minmax":  # the range's actor killed at frame 17: resumed
        monkeypatch.setenv("DEPTHCLI_CHECKPOINT_FRAMES", "3")
        step = VideoProgress.step

        def interrupted(self, n=1):  # type: ignore[no-untyped-def]
            step(self, n)
            if self.n == 5:
                raise KeyboardInterrupt

        monkeypatch.setattr(VideoProgress, "step", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_range(src, out / "clip", est, opts(out), spans[1], spans, "tok")
        monkeypatch.setattr(VideoProgress, "step", step)
        logged = []
        monkeypatch.setattr(video_log, "info", lambda msg, *a: logged.append(msg % a))
    first = run_range(src, out / "clip", est, opts(out), spans[1], spans, "tok")
    assert first == (None, 10)  # not the last: no join
    if norm == "clip" and mode == "minmax":
        assert "clip.mp4: resuming at frame 15" in logged, logged
    if norm == "frame":  # the joining actor killed after a few links: the retry joins
        link, calls = video_mod._link, []

        def killed(a, b):  # type: ignore[no-untyped-def]
            calls.append(b)
            if len(calls) == 4:
                raise KeyboardInterrupt
            link(a, b)

        monkeypatch.setattr(video_mod, "_link", killed)
        with pytest.raises(KeyboardInterrupt):
            run_range(src, out / "clip", est, opts(out), spans[0], spans, "tok")
        monkeypatch.setattr(video_mod, "_link", link)
    report, frames = run_range(src, out / "clip", est, opts(out), spans[0], spans, "tok")
    assert frames == 12 and report is not None
    assert report == {"frames": 22, "written": True, "skipped": False, "errors": local.errors}
    again = run_range(src, out / "clip", est, opts(out), spans[1], spans, "tok")
    assert again == (report, 0)  # a retry after the join: the report, nothing computed
    cleanup(out, "tok")
    assert not (out / PARTIAL_DIR).exists()  # the stale range folder went too
    want, got = _files(tmp_path / "local"), _files(out)
    assert sorted(got) == sorted(want) and len(want) >= 3
    for name in want:
        assert got[name] == want[name], name
