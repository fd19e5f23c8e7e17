"""Bounded disk for videos: the clip-wide range's temporary depth is checked against the free
space before the first frame; on a small file system the second pass recomputes the depth (same
picture), and where even that does not fit the video fails at once with the figures. Real small
tmpfs mounts (root only; skipped where mounting is not allowed)."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_video import make_video

from depthcli.cli import main
from depthcli.io.atomic import PARTIAL_DIR
from depthcli.runs.video_disk import outputs_bytes


@pytest.fixture()
def mount(tmp_path: Path):
    made: list[Path] = []

    def make(size: str) -> Path:
        mnt = tmp_path / f"mnt{len(made)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                           capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        made.append(mnt)
        return mnt

    yield make
    for m in made:
        subprocess.run(["umount", "-l", str(m)], check=False)


def _args(src: Path, out: Path, ckpt: Path) -> list[str]:
    return ["predict", str(src), "-o", str(out), "--model", "da2-tiny-test", "--weights",
            str(ckpt), "--input-size", "84", "--device", "cpu", "--backend", "torch",
            "--threads", "1", "-f", "color,png16"]


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != ".depthcli-outputs"}


def test_small_disk_recomputes_instead_of_storing(mount, tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHCLI_SEGMENT_FRAMES", "8")
    clip = make_video(tmp_path / "c.mp4", 24, 160, 120, rate=Fraction(25))
    ref = tmp_path / "ref"
    r = CliRunner().invoke(main, _args(clip, ref, tiny_ckpt))
    assert r.exit_code == 0, r.output
    assert "recomputes" not in r.stderr

    # with the store about 6.0 MB, without it 5.6 MB (outputs 1.0 MB, 4 MB slack)
    out = mount("5800k") / "out"
    r = CliRunner().invoke(main, _args(clip, out, tiny_ckpt))
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if "recomputes" in ln]
    assert len(lines) == 1 and "twice the compute" in lines[0], r.stderr
    # png16 keeps float32 in the store: recomputing gives the very same depth, so the same bytes
    assert _files(out) == _files(ref) and "c_png16/000023.png" in _files(ref)
    assert not (out / PARTIAL_DIR).exists()

    full = mount("2m") / "out"  # not even the outputs and the slack: fails before a frame
    r = CliRunner().invoke(main, [*_args(clip, full, tiny_ckpt), "--json"])
    assert r.exit_code == 1
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "needs about" in err[0] and "free" in err[0], r.stderr
    assert '"frames": 0' in r.stdout
    assert not [p for p in full.rglob("*") if p.name != ".depthcli-outputs"]


def test_output_estimate_counts_raw_exports_exactly() -> None:
    assert outputs_bytes(["npy"], 10, 4, 5, 8, []) == 10 * 20 * 4
    assert outputs_bytes(["color"], 10, 4, 5, 8, ["color"]) == int(10 * 20 * 0.25) + 8 * 20 * 3
