"""Resume of killed video runs: SIGKILL inside the first pass, between the passes and inside the
second pass (per-frame and temporal models), rerun with --skip-existing, and every output equal
in bytes to an uninterrupted run's; a rerun with other settings starts over. Tiny models and
clips; the kills are real SIGKILLs of a (forked) child process, at points chosen by frame
number."""

from __future__ import annotations

import os
import signal
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_video import make_video, probe

from depthcli.cli import main
from depthcli.io.atomic import PARTIAL_DIR

ENV = {"DEPTHCLI_CHECKPOINT_FRAMES": "5", "DEPTHCLI_SEGMENT_FRAMES": "8"}



def _kill_hooks(where: str, at: int) -> None:
    """In the child: SIGKILL itself once the given pass reaches frame `at` (or right after the
    state between the passes is saved)."""
    from depthcli.runs import video_progress, video_resume

    save, step = video_resume.VideoState.save, video_progress.VideoProgress.step

    def saving(self, meta, arrays):  # type: ignore[no-untyped-def]
        save(self, meta, arrays)
        if where == "between" and meta["phase"] == "pass2" and meta["done"] == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    def stepping(self, n=1):  # type: ignore[no-untyped-def]
        step(self, n)
        if ("pass2" if self.label == "pass 2/2" else "pass1") == where and self.n >= at:
            os.kill(os.getpid(), signal.SIGKILL)

    video_resume.VideoState.save = saving  # type: ignore[method-assign]
    video_progress.VideoProgress.step = stepping  # type: ignore[method-assign]


def _args(src: Path, out: Path, model: str, ckpt: Path, *extra: str) -> list[str]:
    return ["predict", str(src), "-o", str(out), "--model", model, "--weights", str(ckpt),
            "--input-size", "56", "--device", "cpu", "--backend", "torch", "--threads", "1", *extra]


def _killed(where: str, at: int, args: list[str]) -> None:
    """The CLI in a forked child (no second interpreter start-up), SIGKILLed at a known point."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            _kill_hooks(where, at)
            CliRunner().invoke(main, [*args, "--skip-existing"])
        finally:
            os._exit(3)  # it finished or failed instead of being killed
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def _run(args: list[str]) -> None:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != ".depthcli-outputs"}


pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rclips")
    return {"pf": make_video(d / "pf.mp4", 26, 48, 32, audio="aac"),
            "vda": make_video(d / "vda.mp4", 60, 48, 32, rate=Fraction(25))}


def _check_same(ref: Path, out: Path, names: set[str]) -> None:
    a, b = _files(ref), _files(out)
    assert set(a) == set(b) and names <= set(a), (sorted(a), sorted(b))
    for name in a:
        assert a[name] == b[name], name
    assert not (out / PARTIAL_DIR).exists()


def test_per_frame_killed_in_pass1_between_and_in_pass2(clips, tiny_ckpt, tmp_path) -> None:
    fmts = ("-f", "color,npy,png16")
    ref, out = tmp_path / "ref", tmp_path / "out"
    _run(_args(clips["pf"], ref, "da2-tiny-test", tiny_ckpt, *fmts))
    args = _args(clips["pf"], out, "da2-tiny-test", tiny_ckpt, *fmts)
    _killed("pass1", 13, args)
    assert not (out / "pf.mp4").exists() and (out / PARTIAL_DIR).is_dir()
    _killed("between", 0, args)
    _killed("pass2", 19, args)
    res = CliRunner().invoke(main, [*args, "--skip-existing", "-v"])
    assert res.exit_code == 0, res.output
    assert "resuming at frame 10" not in res.stderr  # the first pass was complete
    assert "pass 2/2" in res.stderr and "pass 1/2" not in res.stderr
    _check_same(ref, out, {"pf.mp4", "pf.npy", "pf_png16/000025.png"})
    assert probe(out / "pf.mp4")["audio"] == "aac" and probe(out / "pf.mp4")["n"] == 26


def test_temporal_killed_in_both_passes(clips, tiny_vda_ckpt, tmp_path) -> None:
    fmts = ("-f", "gray,npy")
    ref, out = tmp_path / "ref", tmp_path / "out"
    _run(_args(clips["vda"], ref, "vda-tiny-test", tiny_vda_ckpt, *fmts))
    args = _args(clips["vda"], out, "vda-tiny-test", tiny_vda_ckpt, *fmts)
    _killed("pass1", 50, args)  # after the second window's state (frame 46) was saved
    _killed("pass2", 45, args)
    _run([*args, "--skip-existing"])
    _check_same(ref, out, {"vda_gray.mp4", "vda.npy"})


def test_one_pass_resume_and_changed_settings_start_over(clips, tiny_ckpt, tmp_path) -> None:
    fmts = ("-f", "color,exr", "--video-norm", "frame")
    ref, out = tmp_path / "ref", tmp_path / "out"
    _run(_args(clips["pf"], ref, "da2-tiny-test", tiny_ckpt, *fmts))
    args = _args(clips["pf"], out, "da2-tiny-test", tiny_ckpt, *fmts)
    _killed("pass1", 19, args)  # inside the third segment: its pending frames are replayed
    _run([*args, "--skip-existing"])
    _check_same(ref, out, {"pf.mp4", "pf_exr/000000.exr"})

    # killed again, then rerun with another colour map: the partial state is not reused
    other, ref2 = tmp_path / "other", tmp_path / "ref2"
    _killed("pass1", 12, _args(clips["pf"], other, "da2-tiny-test", tiny_ckpt, *fmts))
    changed = ("--cmap", "gray")
    _run(_args(clips["pf"], ref2, "da2-tiny-test", tiny_ckpt, *fmts, *changed))
    res = CliRunner().invoke(main, [*_args(clips["pf"], other, "da2-tiny-test", tiny_ckpt,
                                           *fmts, *changed), "--skip-existing", "-v"])
    assert res.exit_code == 0, res.output
    log = res.output + res.stderr
    assert "settings differ" in log and "resuming" not in log
    _check_same(ref2, other, {"pf.mp4"})


def test_temporal_recompute_mode_killed_in_pass2(clips, tiny_vda_ckpt, tmp_path,
                                                 monkeypatch) -> None:
    """The second pass that runs the model again (small disks) resumes its window chain too."""
    from depthcli.runs import video_disk

    fmts = ("-f", "gray,png16")  # png16: float32 in the store, so both modes agree in bytes
    ref, out = tmp_path / "ref", tmp_path / "out"
    _run(_args(clips["vda"], ref, "vda-tiny-test", tiny_vda_ckpt, *fmts))
    monkeypatch.setattr(video_disk, "plan", lambda *a, **k: video_disk.DiskPlan(0, 1, True, 1))
    args = _args(clips["vda"], out, "vda-tiny-test", tiny_vda_ckpt, *fmts)
    _killed("pass2", 50, args)
    res = CliRunner().invoke(main, [*args, "--skip-existing", "-v"])
    assert res.exit_code == 0, res.output
    assert "resuming at frame 46" in res.stderr
    _check_same(ref, out, {"vda_gray.mp4", "vda_png16/000059.png"})
