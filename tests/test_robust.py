"""Hostile inputs and full disks (issue 14): confinement to -o, duplicates, ENOSPC on a real
tmpfs, fuzzed files, huge video frames, concurrent runs, no network, Ctrl-C.

Small images, --input-size 28, random-weight checkpoint, one torch thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT, write_image
from depthcli.cli import main
from depthcli.io import confine
from depthcli.io.atomic import remove_stale_temps
from depthcli.io.manifest import MARKER  # the output journal (issue 21)

FAST = ("--model", "da2-tiny-test", "--input-size", "28", "--device", "cpu", "--threads", "1")


def invoke(args: list[str], ckpt: Path, *extra: str):
    return CliRunner().invoke(main, ["predict", *args, "--weights", str(ckpt), *FAST, *extra])


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Every entry under `root` (links not followed): kind, link target or content hash."""
    snap: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        if skip is not None and Path(dirpath) == skip:
            dirs[:] = []
            continue
        for name in dirs + files:
            p = Path(dirpath) / name
            if skip is not None and p == skip:
                continue
            st = p.lstat()
            if p.is_symlink():
                snap[str(p)] = ("link", os.readlink(p))
            elif p.is_file():
                snap[str(p)] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
            else:
                snap[str(p)] = ("dir",)
    return snap


def files_inside(out: Path) -> list[Path]:
    real = Path(os.path.realpath(out))
    found = []
    for dirpath, _, files in os.walk(out):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                assert real in Path(os.path.realpath(p)).parents, p
                found.append(p)
    return found


# --------------------------------------------------------------------------- confinement

def test_safe_rel_mapping() -> None:
    s = confine.safe_rel
    assert s("a/b.jpg") == Path("a/b.jpg")
    assert s("../photos/p.jpg") == Path("_up/photos/p.jpg")
    assert s("x/../../../p.jpg") == Path("_up/_up/p.jpg")
    assert s("./a/./b/../c.jpg") == Path("a/c.jpg")
    assert s("/etc/passwd") == Path("_abs/etc/passwd")
    assert s("_up/p.jpg") == Path("_up_/p.jpg")  # one-to-one: never mixes with a real `..`
    assert s("../_up/p.jpg") == Path("_up/_up_/p.jpg")
    assert s("..") == Path("_up/_")
    for rel in ("../../a", "/x/../../y", "a/../../..", "..\\x"):
        out = s(rel)
        assert not out.is_absolute() and ".." not in out.parts


def test_outputs_confined(tmp_path: Path, tiny_ckpt: Path) -> None:
    """Lists, globs and links that point outside -o, next to files that must survive."""
    w = tmp_path / "w"
    photos = w / "photos"
    for name in ("p", "q", "r", "s", "t", "u"):
        write_image(photos / f"{name}.jpg", 20, 24, seed=ord(name))
    for victim in ("p.png", "q.png", "r.png", "s.png", "t.png", "u.png", "p.npy", "keep.png"):
        (photos / victim).write_bytes(b"the user's own " + victim.encode())
    lists = w / "lists"
    (lists / "d").mkdir(parents=True)
    (lists / "l.txt").write_text(
        f"../photos/p.jpg\n../../w/photos/q.jpg\n{photos / 'r.jpg'}\nd/../../photos/s.jpg\n")
    glob = str(lists / "*" / ".." / ".." / "photos" / "t*.jpg")  # matches climb out of prefix
    folder = w / "in"
    folder.mkdir()
    write_image(folder / "x.jpg", 20, 24, seed=9)
    os.symlink(photos / "u.jpg", folder / "link.jpg")  # a link to a file outside
    os.symlink(photos, folder / "linkdir")  # a linked folder: not followed
    write_image(w / "in2" / "evil" / "v.jpg", 20, 24, seed=10)
    out = w / "out"
    (w / "elsewhere").mkdir()
    out.mkdir()
    os.symlink(w / "elsewhere", out / "evil")  # an -o subfolder leading outside
    os.symlink(photos / "keep.png", out / "x.png")  # a planted link at an output name
    before = snapshot(w, skip=out)

    r = invoke([str(lists / "l.txt"), glob, str(folder), str(w / "in2"), "-o", str(out),
                "-f", "color,npy", "--json"], tiny_ckpt)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.exit_code == 1, r.stderr  # in2/evil/v.jpg is refused, the rest written
    assert snapshot(w, skip=out) == before  # nothing outside -o changed
    assert not any((w / "elsewhere").iterdir())
    assert os.readlink(out / "x.png") == str(photos / "keep.png")  # link kept, not written
    assert "leads outside" in r.stderr and "v.jpg" in r.stderr
    summary = json.loads(r.stdout)
    assert summary["written"] == 7 and summary["failed"] == 1  # p q r s t x u
    written = {str(p.relative_to(out)) for p in files_inside(out) if p.name != MARKER}
    stems = {"_up/photos/p", "_up/_up/w/photos/q", "r", "_up/photos/s", "_up/photos/t",
             "x.jpg", "link"}
    assert written == {f"{s}{ext}" for s in stems for ext in (".png", ".npy")}
    # a rerun overwrites its own outputs at the same paths, and still nothing else
    r2 = invoke([str(lists / "l.txt"), glob, str(folder), str(w / "in2"), "-o", str(out),
                 "-f", "color,npy"], tiny_ckpt)
    assert r2.exit_code == 1
    assert {str(p.relative_to(out)) for p in files_inside(out) if p.name != MARKER} == written
    assert snapshot(w, skip=out) == before


def test_duplicates_processed_once(tmp_path: Path, tiny_ckpt: Path) -> None:
    d = tmp_path / "d"
    write_image(d / "x.jpg", 20, 24, seed=1)
    write_image(d / "y.jpg", 20, 24, seed=2)
    os.symlink(d / "x.jpg", tmp_path / "alias.jpg")
    lst = tmp_path / "l.txt"
    lst.write_text("d/x.jpg\n./d/y.jpg\nd/missing.jpg\nd/../d/missing.jpg\n")
    x = str(d / "x.jpg")
    args = [x, x, str(d / "." / "x.jpg"), str(d), str(lst), str(d / "*.jpg"),
            str(tmp_path / "alias.jpg"), "-o", str(tmp_path / "out"), "-f", "npy", "--json"]
    r = invoke(args, tiny_ckpt)
    summary = json.loads(r.stdout)
    assert summary["written"] == 2, r.stderr
    assert summary["failed"] == 1 and r.stderr.count("missing.jpg") == 1, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MARKER, "x.npy", "y.npy"]


# ------------------------------------------------------------------------------ disk full

@pytest.fixture()
def tiny_fs(tmp_path: Path):
    """A small real tmpfs (root only); skipped where mounting is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_stops_once_and_resumes(tmp_path: Path, tiny_fs: Path, tiny_ckpt: Path) -> None:
    src = tmp_path / "src"
    for i in range(16):
        write_image(src / f"im{i:02d}.png", 96, 96, seed=i)  # npy: 36 kB each
    out = tiny_fs / "out"
    r = invoke([str(src), "-o", str(out), "-f", "npy", "-b", "2", "--workers", "2"], tiny_ckpt)
    assert r.exit_code == 1, r.stderr
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert "No space left on device" in errors[0] and "--skip-existing" in errors[0]
    done = sorted(p for p in out.iterdir() if p.name != MARKER)
    assert 0 < len(done) < 16
    assert not [p for p in done if p.name.startswith(".")]  # no temporary left
    for p in done:
        assert np.load(p).shape == (96, 96)  # finished outputs are complete
    stamps = {p.name: p.stat().st_mtime_ns for p in done}
    subprocess.run(["mount", "-o", "remount,size=4m", str(tiny_fs)], check=True)
    r2 = invoke([str(src), "-o", str(out), "-f", "npy", "--skip-existing", "--json"], tiny_ckpt)
    assert r2.exit_code == 0, r2.stderr
    assert len([p for p in out.iterdir() if p.name != MARKER]) == 16
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in out.iterdir() if p.name in stamps)


def test_disk_full_on_video(tmp_path: Path, tiny_fs: Path, tiny_ckpt: Path) -> None:
    from test_video import make_video

    clip = make_video(tmp_path / "clip.mp4", n=40, w=96, h=64)
    out = tiny_fs / "out"
    r = invoke([str(clip), "-o", str(out), "-f", "npy,color"], tiny_ckpt)
    assert r.exit_code == 1, r.stderr
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "No space left" in errors[0], r.stderr
    assert not [p for p in out.rglob(".*") if p.name != MARKER]  # no temporary left behind


# ---------------------------------------------------------------------------------- fuzz

def test_fuzz_small_corpus(tmp_path: Path, tiny_ckpt: Path) -> None:
    from tools import fuzz

    samples = fuzz.build_corpus(tmp_path / "corpus", 60, 8, seed=3)
    again = fuzz.build_corpus(tmp_path / "corpus2", 60, 8, seed=3)
    assert [s.path.read_bytes() for s in samples] == [s.path.read_bytes() for s in again]
    shutil.rmtree(tmp_path / "corpus2")
    res = fuzz.check_run(samples, tmp_path / "corpus", tmp_path / "out", tiny_ckpt,
                         timeout=300, bisect=False, model="da2-tiny-test")
    print(json.dumps(res.as_dict()))
    assert res.ok, res.problems
    assert res.written >= 8 and res.named_failures >= 10


# A child process that captures native stderr as the CLI does, then lets C code and Python
# threads write at once. libpng writes "libpng error: MSG" and "\n" in two writes; before the
# capture a line of ours written between them was glued to it (the fuzz run's lost file names).
_NATIVE_RACE = r"""
import logging, os, sys, threading
import cv2, numpy as np
from depthcli.cli.native_stderr import capture_native_stderr
assert capture_native_stderr()
logging.basicConfig(level=logging.DEBUG if sys.argv[1] == "debug" else logging.WARNING,
                    format="%(levelname)s: %(message)s", stream=sys.stderr)
ok, buf = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
png = bytearray(buf.tobytes()); png[20] ^= 0xFF  # IHDR CRC error
png = np.frombuffer(bytes(png), np.uint8)
def c_side():
    for _ in range(300):
        assert cv2.imdecode(png, cv2.IMREAD_COLOR) is None
        os.write(2, b"libpng error: simulated"); os.write(2, b"\n")
def ours(k):
    for i in range(300):
        logging.getLogger("t").error("/data/img_%d_%03d.png: truncated or corrupt image", k, i)
ts = [threading.Thread(target=c_side) for _ in range(2)] + [
    threading.Thread(target=ours, args=(k,)) for k in range(2)]
[t.start() for t in ts]; [t.join() for t in ts]
import time; time.sleep(0.3)  # let the drain thread log the last native lines
"""


@pytest.mark.parametrize("level", ["warning", "debug"])
def test_native_stderr_never_splits_our_lines(level: str) -> None:
    r = subprocess.run([sys.executable, "-c", _NATIVE_RACE, level], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    ours = [ln for ln in lines if ln.startswith("ERROR: /data/img_")]
    assert sorted(ours) == sorted(f"ERROR: /data/img_{k}_{i:03d}.png: truncated or corrupt image"
                                  for k in range(2) for i in range(300))
    native = [ln for ln in lines if ln not in ours]
    if level == "warning":  # the C libraries' anonymous lines are not shown at all
        assert native == []
    else:  # -vv: each native line whole, as a debug line of its own
        assert native and all(ln.startswith("DEBUG: native: ") for ln in native), native[:5]
        assert "DEBUG: native: libpng error: IHDR: CRC error" in native
        # (two C threads may still glue their own anonymous lines together: noise, not ours)
        assert "DEBUG: native: libpng error: simulated" in native


def test_decoder_loggers_only_at_vv(capsys: pytest.CaptureFixture[str]) -> None:
    """Pillow's anonymous decoder complaints (found by a fuzz corpus, seed 11: a TIFF header
    with 65500 samples per pixel) are no line of their own below -vv."""
    import logging

    from depthcli.cli.common import setup_logging

    pil = logging.getLogger("PIL.TiffImagePlugin")
    setup_logging(0, False)
    pil.error("More samples per pixel than can be decoded: %s", 65500)
    logging.getLogger("depthcli.test").warning("ours")
    assert capsys.readouterr().err == "WARNING: ours\n"
    setup_logging(2, False)
    pil.error("More samples per pixel than can be decoded: %s", 65500)
    assert "More samples per pixel" in capsys.readouterr().err
    setup_logging(0, False)


# --------------------------------------------------------------------------- video limits

def test_video_frame_size_refused_from_header(tmp_path: Path, tiny_ckpt: Path) -> None:
    from test_video import make_video

    from depthcli.errors import InputError
    from depthcli.io import video_decode as vio

    clip = make_video(tmp_path / "big.mp4", n=3, w=64, h=48)
    with pytest.raises(InputError, match="over the limit of 1000"):
        vio.probe(clip, max_pixels=1000)
    r = invoke([str(clip), "-o", str(tmp_path / "out"), "--max-pixels", "1000"], tiny_ckpt)
    assert r.exit_code == 1 and "64x48 pixels, over the limit" in r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_clip_stats_bounded_for_millions_of_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Percentile sampling stays bounded, and O(1) per frame, however long the clip."""
    import torch

    from depthcli.outputs import clipstats, render

    monkeypatch.setattr(clipstats, "PERCENTILE_SAMPLE", 256)
    st = clipstats.ClipStats(render.RenderOptions(mode="percentile", percentiles=(2, 98)))
    torch.manual_seed(0)
    for _ in range(20000):
        st.update(torch.rand(4, 4) * 15)
        assert st.size <= 2 * 256 + 16 and len(st.samples) <= 2 * 256
    lo, hi = st.value_range()
    assert 0 <= lo < hi <= 15


# ------------------------------------------------------------------------ concurrent runs

def test_two_processes_same_output(tmp_path: Path, tiny_ckpt: Path) -> None:
    src = tmp_path / "src"
    for i in range(10):
        write_image(src / f"im{i}.jpg", 40 + i, 48, seed=i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "depthcli", "predict", str(src), "-o", str(out),
           "--weights", str(tiny_ckpt), *FAST, "-f", "color,npy", "-q"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    for i in range(10):
        img = cv2.imread(str(out / f"im{i}.png"))
        assert img is not None and img.shape == (40 + i, 48, 3)
        assert np.load(out / f"im{i}.npy").shape == (40 + i, 48)
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != MARKER]


def test_stale_temps_of_live_process_kept(tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
        a = tmp_path / f".x.png.{live.pid}.ab12cd.png.tmp"
        b = tmp_path / f".y.png.{dead}.ab12cd.png.tmp"
        a.write_bytes(b"1")
        b.write_bytes(b"2")
        assert remove_stale_temps(tmp_path) == 1
        assert a.exists() and not b.exists()
    finally:
        live.kill()
        live.wait()


# ------------------------------------------------------------------------ network, Ctrl-C

def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_no_network_answers_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = write_image(tmp_path / "x.jpg", 20, 24)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
           "DEPTHCLI_WEIGHTS_DIR": str(tmp_path / "none"), "HF_HUB_OFFLINE": "0"}
    import huggingface_hub.constants as hc

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(hc, "ENDPOINT", env["HF_ENDPOINT"])
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, ["predict", str(img), "-o", str(tmp_path / "out"),
                                  "--model", "da2-small", "--device", "cpu"])
    dt = time.perf_counter() - t0
    print(f"no-network answer in-process: {dt:.2f} s")
    assert r.exit_code == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not available offline" in lines[0], r.stderr
    assert "connection refused" in lines[0] and "--weights FILE" in lines[0]
    assert dt < 10

    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "depthcli", "predict", str(img), "-o",
                        str(tmp_path / "out"), "--device", "cpu"], capture_output=True,
                       text=True, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, timeout=120)
    print(f"no-network answer, whole process (torch import included): "
          f"{time.perf_counter() - t0:.2f} s")
    assert p.returncode == 1
    assert [ln for ln in p.stderr.splitlines() if ln.strip()] == lines


def test_ctrl_c_while_loading_exits_130(tmp_path: Path, tiny_ckpt: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from depthcli.engine.core import DepthEngine

    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(DepthEngine, "from_name", interrupted)
    img = write_image(tmp_path / "x.jpg", 20, 24)
    r = invoke([str(img), "-o", str(tmp_path / "out")], tiny_ckpt)
    assert r.exit_code == 130
    assert "Traceback" not in r.stderr and "Aborted" not in r.output
