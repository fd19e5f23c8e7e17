"""`depthcli predict` on folders, lists and globs: outputs, formats, failures, resume, batching."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import signal_checks
from click.testing import CliRunner

from conftest import ROOT, ctrl_c_able, in_own_process, write_image
from depthcli.cli import main
from depthcli.io.manifest import MARKER  # the output journal (issue 21)
from depthcli.outputs import read_pfm


def invoke(args: list[str], ckpt: Path, *extra: str):
    base = ["predict", *args, "--model", "da2-tiny-test", "--weights", str(ckpt),
            "--input-size", "70", "--device", "cpu", *extra]
    return CliRunner().invoke(main, base)


def huge_png_header(path: Path, w: int = 100000, h: int = 100000) -> Path:
    """A PNG whose IHDR claims w x h pixels (no image data): must be refused from the header."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(
        ">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    path.write_bytes(data)
    return path


@pytest.fixture()
def messy(tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    """A folder of good and bad files; returns (root, good rel paths, bad rel paths)."""
    root = tmp_path / "in"
    good = []
    write_image(root / "a" / "x.jpg", 40, 60, seed=1); good.append("a/x.jpg")
    write_image(root / "b" / "x.jpg", 50, 30, seed=2); good.append("b/x.jpg")
    write_image(root / "a" / "x.png", 40, 60, seed=3); good.append("a/x.png")  # same stem
    write_image(root / "rgba.png", 33, 47, seed=4, channels=4); good.append("rgba.png")
    write_image(root / "gray.png", 30, 30, seed=5, channels=1); good.append("gray.png")
    write_image(root / "deep16.png", 31, 45, seed=6, dtype=np.uint16); good.append("deep16.png")
    write_image(root / "tiny.bmp", 2, 3, seed=7); good.append("tiny.bmp")
    write_image(root / "UPPER.JPEG", 20, 28, seed=8); good.append("UPPER.JPEG")
    write_image(root / "sub dir" / "ünïcødé name.webp", 24, 36, seed=9); good.append("sub dir/ünïcødé name.webp")
    write_image(root / "n1" / "n2" / "n3" / "deep.tif", 22, 26, seed=10); good.append("n1/n2/n3/deep.tif")
    bad = []
    (root / "empty.jpg").write_bytes(b""); bad.append("empty.jpg")
    (root / "garbage.png").write_bytes(os.urandom(300)); bad.append("garbage.png")
    full = cv2.imencode(".png", np.full((40, 40, 3), 128, np.uint8))[1].tobytes()
    (root / "truncated.png").write_bytes(full[: len(full) // 2]); bad.append("truncated.png")
    huge_png_header(root / "huge.png"); bad.append("huge.png")
    os.symlink(root / "does-not-exist.jpg", root / "dangling.jpg"); bad.append("dangling.jpg")
    (root / "notes.txt").write_text("not an image")  # skipped silently, counted
    (root / "clip.xyz").write_bytes(b"?")
    return root, good, bad


def test_messy_folder(messy, tiny_ckpt, tmp_path) -> None:
    root, good, bad = messy
    out = tmp_path / "out"
    r = invoke([str(root), "-o", str(out), "--format", "npy", "--json", "-b", "3"], tiny_ckpt)
    assert r.exit_code == 1, r.stderr
    assert "Traceback" not in r.stderr
    summary = json.loads(r.stdout)
    assert summary["written"] == len(good) and summary["failed"] == len(bad)
    assert summary["not_images"] == 2
    for rel in bad:
        lines = [ln for ln in r.stderr.splitlines() if str(root / rel) in ln]
        assert len(lines) == 1, (rel, r.stderr)
    # every good file: float32 npy at the input's size, mirrored, no collisions
    expected = {
        "a/x.jpg": "a/x.npy", "a/x.png": "a/x.png.npy", "b/x.jpg": "b/x.npy",
        "rgba.png": "rgba.npy", "gray.png": "gray.npy", "deep16.png": "deep16.npy",
        "tiny.bmp": "tiny.npy", "UPPER.JPEG": "UPPER.npy",
        "sub dir/ünïcødé name.webp": "sub dir/ünïcødé name.npy",
        "n1/n2/n3/deep.tif": "n1/n2/n3/deep.npy",
    }
    assert set(expected) == set(good)
    for src, dst in expected.items():
        d = np.load(out / dst)
        img = cv2.imread(str(root / src), cv2.IMREAD_UNCHANGED)
        assert d.dtype == np.float32 and d.shape == img.shape[:2], src
        assert np.isfinite(d).all()
    npys = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and p.name != MARKER)
    assert npys == sorted(expected.values())  # nothing else (no temp files, no bad outputs)
    huge_line = next(ln for ln in r.stderr.splitlines() if "huge.png" in ln)
    assert "100000x100000" in huge_line


def test_messy_folder_subprocess_exit_code(messy, tiny_ckpt, tmp_path) -> None:
    root, good, bad = messy
    r = subprocess.run([sys.executable, "-m", "depthcli", "predict", str(root), "-o",
                        str(tmp_path / "o"), "--model", "da2-tiny-test", "--weights", str(tiny_ckpt),
                        "--input-size", "70", "--format", "npy", "-b", "4"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stdout == ""
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == len(bad)


def test_batched_equals_unbatched(tmp_path, tiny_ckpt) -> None:
    root = tmp_path / "in"
    for i in range(7):  # two shapes after preprocessing, several per bucket
        write_image(root / f"im{i}.png", 40 if i % 2 else 60, 60 if i % 2 else 40, seed=i)
    r1 = invoke([str(root), "-o", str(tmp_path / "b1"), "--format", "npy", "-b", "1"], tiny_ckpt)
    r4 = invoke([str(root), "-o", str(tmp_path / "b4"), "--format", "npy", "-b", "4"], tiny_ckpt)
    assert r1.exit_code == 0 and r4.exit_code == 0
    for i in range(7):
        a, b = np.load(tmp_path / "b1" / f"im{i}.npy"), np.load(tmp_path / "b4" / f"im{i}.npy")
        assert np.abs(a - b).max() <= 1e-5 * (a.max() - a.min())


def test_list_file_and_glob(tmp_path, tiny_ckpt) -> None:
    root = tmp_path / "data"
    write_image(root / "p" / "one.jpg", 30, 40, seed=1)
    write_image(root / "q" / "two.png", 30, 40, seed=2)
    write_image(root / "q" / "three.png", 30, 40, seed=3)
    lst = root / "list.txt"
    lst.write_text("# comment\n\np/one.jpg\n  q/two.png  \nmissing.jpg\n")
    out = tmp_path / "out"
    r = invoke([str(lst), str(root / "q" / "*.png"), "-o", str(out), "--format", "npy"],
               tiny_ckpt)
    assert r.exit_code == 1  # missing.jpg
    assert "missing.jpg" in r.stderr and "no such file" in r.stderr
    assert (out / "p" / "one.npy").is_file() and (out / "q" / "two.npy").is_file()
    assert (out / "three.npy").is_file()  # glob mirrored from its fixed prefix
    # the glob names q/two.png again: the same file is processed once (issue 14)
    assert not (out / "two.npy").exists()


def test_all_formats(tmp_path, tiny_ckpt) -> None:
    img = write_image(tmp_path / "pic.png", 36, 52, seed=3)
    out = tmp_path / "out"
    r = invoke([str(img), "-o", str(out), "-f", "color,gray,png16", "-f", "npy", "-f", "pfm",
                "-f", "exr,side"], tiny_ckpt)
    assert r.exit_code == 0, r.stderr
    d = np.load(out / "pic.npy")
    assert np.allclose(read_pfm(out / "pic.pfm"), d)
    exr = cv2.imread(str(out / "pic.exr"), cv2.IMREAD_UNCHANGED)
    assert exr.dtype == np.float32 and np.allclose(exr, d)
    color = cv2.imread(str(out / "pic.png"))
    gray = cv2.imread(str(out / "pic_gray.png"), cv2.IMREAD_UNCHANGED)
    p16 = cv2.imread(str(out / "pic_png16.png"), cv2.IMREAD_UNCHANGED)
    side = cv2.imread(str(out / "pic_side.png"))
    assert color.shape == (36, 52, 3) and gray.shape == (36, 52) and gray.dtype == np.uint8
    assert p16.dtype == np.uint16 and side.shape == (36, 52 * 2 + 50, 3)
    # near (largest inverse depth) is brightest and 65535; farthest is 0
    assert gray.flat[d.argmax()] == 255 and gray.flat[d.argmin()] == 0
    assert p16.flat[d.argmax()] == 65535 and p16.flat[d.argmin()] == 0
    # official truncation: (d - min) / (max - min) * 255 -> uint8
    exp = ((d - d.min()) / (d.max() - d.min()) * 255.0).astype(np.uint8)  # float32, as run.py
    assert np.array_equal(gray, exp)
    assert np.all(side[:, 52:102] == 255)
    assert np.array_equal(side[:, :52], cv2.imread(str(img)))


def test_single_png_format_name_and_cmap(tmp_path, tiny_ckpt) -> None:
    img = write_image(tmp_path / "pic.jpg", 30, 30)
    out = tmp_path / "o"
    r = invoke([str(img), "-o", str(out), "--cmap", "inferno", "--range", "p5,95", "--invert",
                "--threads", "1"], tiny_ckpt)
    assert r.exit_code == 0, r.stderr
    assert (out / "pic.png").is_file()
    bad = invoke([str(img), "-o", str(out), "--cmap", "nope"], tiny_ckpt)
    assert bad.exit_code == 2
    bad = invoke([str(img), "-o", str(out), "--format", "gif"], tiny_ckpt)
    assert bad.exit_code == 2 and "gif" in bad.stderr


def test_inputs_never_overwritten(tmp_path, tiny_ckpt) -> None:
    root = tmp_path / "in"
    img = write_image(root / "x.png", 30, 40)
    before = img.read_bytes()
    r = invoke([str(root), "-o", str(root), "--format", "color"], tiny_ckpt)
    assert r.exit_code == 0, r.stderr
    assert img.read_bytes() == before
    assert (root / "x_depth.png").is_file()
    # a sibling input with the would-be output name is not touched either
    other = write_image(root / "y.jpg", 30, 40, seed=2)
    shadow = write_image(root / "y.png", 30, 40, seed=3)
    before2 = shadow.read_bytes()
    r = invoke([str(other), "-o", str(root)], tiny_ckpt)
    assert r.exit_code == 0 and shadow.read_bytes() == before2 and (root / "y_depth.png").is_file()


def test_skip_existing_resumes(tmp_path, tiny_ckpt) -> None:
    root = tmp_path / "in"
    for i in range(4):
        write_image(root / f"i{i}.png", 30, 30, seed=i)
    out = tmp_path / "out"
    r = invoke([str(root), "-o", str(out), "-f", "npy,color"], tiny_ckpt)
    assert r.exit_code == 0
    (out / "i2.npy").unlink()
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir() if p.name != MARKER}
    r = invoke([str(root), "-o", str(out), "-f", "npy,color", "--skip-existing", "--json"],
               tiny_ckpt)
    s = json.loads(r.stdout)
    assert r.exit_code == 0 and s["skipped"] == 3 and s["written"] == 1
    for p, m in mtimes.items():
        assert p.stat().st_mtime_ns == m  # untouched
    assert (out / "i2.npy").is_file()


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch) -> None:
    from depthcli.io import atomic

    dst = tmp_path / "d" / "x.npy"

    def boom(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic.write_with(dst, boom)
    assert not dst.exists() and list(dst.parent.iterdir()) == []


def _folder_run(tmp_path: Path, ckpt: Path, n: int, *extra: str) -> tuple[Path, list[str]]:
    """n small images under tmp_path/in and the subprocess command predicting them to out/."""
    root = tmp_path / "in"
    for i in range(n):
        write_image(root / f"f{i:02d}.png", 40, 40, seed=i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "depthcli", "predict", str(root), "-o", str(out), "--model",
           "da2-tiny-test", "--weights", str(ckpt), "--input-size", "70", *extra]
    return out, cmd


def _wait_for_outputs(out: Path, count: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.npy"))) < count:
        time.sleep(0.01)


def test_sigkill_then_skip_existing_completes(tmp_path, tiny_ckpt) -> None:
    n = 120  # enough that the kill (at the third output) lands mid-run, on a loaded machine too
    out, cmd = _folder_run(tmp_path, tiny_ckpt, n, "-f", "npy,color", "-q")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_outputs(out, 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(out.glob("*.npy")))
    assert done_before < n
    # complete = every format present (atomic writes: present means whole); only those skip
    complete = sum((out / f"f{i:02d}.npy").exists() and (out / f"f{i:02d}.png").exists()
                   for i in range(n))
    r = subprocess.run(cmd + ["--skip-existing", "--json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["written"] + s["skipped"] == n and s["skipped"] == complete
    files = sorted(p.name for p in out.iterdir() if p.name != MARKER)
    assert files == sorted([f"f{i:02d}.npy" for i in range(n)] + [f"f{i:02d}.png" for i in range(n)])
    for i in range(n):
        assert np.load(out / f"f{i:02d}.npy").shape == (40, 40)
        assert cv2.imread(str(out / f"f{i:02d}.png")).shape == (40, 40, 3)


def test_usage_errors_exit_2(tmp_path, tiny_ckpt) -> None:
    r = invoke(["x.png", "--batch-size", "0"], tiny_ckpt)
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["predict"])
    assert r.exit_code == 2


def test_extreme_aspect_ratio_is_refused_per_image(tmp_path, tiny_ckpt) -> None:
    root = tmp_path / "in"
    write_image(root / "ok.png", 30, 30)
    write_image(root / "strip.png", 1, 400)
    r = CliRunner().invoke(main, ["predict", str(root), "-o", str(tmp_path / "o"), "--weights",
                                  str(tiny_ckpt), "--model", "da2-tiny-test", "--device", "cpu",
                                  "-f", "npy"])
    assert r.exit_code == 1 and "strip.png" in r.stderr and "aspect ratio" in r.stderr
    assert (tmp_path / "o" / "ok.npy").is_file()


def test_ctrl_c_lost_on_its_way_still_stops_the_run(tmp_path) -> None:
    """A KeyboardInterrupt swallowed where it landed (Python's "Exception ignored" in a
    finaliser) must not let the run go on as if Ctrl-C had not been pressed; the handler is
    put back afterwards (tests/signal_checks.py, in a process of its own)."""
    in_own_process(signal_checks.lost_ctrl_c, str(tmp_path))


def test_ctrl_c_stops_cleanly(tmp_path, tiny_ckpt) -> None:
    # 150 inputs: at 30 a loaded machine once saw the whole run finish (6 s) before the signal
    # landed (exit 0); an interrupted run never gets far, so the rest only costs their writing.
    out, cmd = _folder_run(tmp_path, tiny_ckpt, 150, "-f", "npy")
    proc = subprocess.Popen(ctrl_c_able(cmd), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_outputs(out, 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    files = [p for p in out.iterdir() if p.name != MARKER]
    assert len(files) < 150, "the run ended before the signal"
    assert all(p.suffix == ".npy" and not p.name.startswith(".") for p in files)
    for p in files:
        assert np.load(p).shape == (40, 40)
