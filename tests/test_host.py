"""Host-side machinery: the PNG encoder, malloc tuning, the fast preprocess path."""

from __future__ import annotations

import io
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from depthcli.engine.transforms import Preprocess
from depthcli.io import png


def _decode(buf: bytes) -> tuple[np.ndarray, np.ndarray]:
    cv = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
    pil = np.asarray(Image.open(io.BytesIO(buf)))
    return cv, pil


@pytest.mark.parametrize("shape,dtype", [
    ((1, 1), np.uint8), ((3, 2, 3), np.uint8), ((5, 7, 4), np.uint8), ((37, 61, 3), np.uint8),
    ((9, 13), np.uint16), ((11, 3, 3), np.uint16), ((64, 33, 1), np.uint8),
])
def test_png_roundtrip_bit_exact(shape, dtype) -> None:
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    cv, pil = _decode(png.encode_png(img))
    want = img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img
    assert cv.dtype == dtype and np.array_equal(cv, want)  # OpenCV: BGR(A) back
    if want.ndim == 3 and dtype == np.uint16:
        return  # Pillow opens 48-bit RGB as 8-bit; OpenCV's check above covers it
    if want.ndim == 3:  # Pillow reads the file's RGB(A) order
        want = want[:, :, [2, 1, 0, 3][: want.shape[2]]]
    assert np.array_equal(pil.astype(dtype), want)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("pieces", [2, 3, 5])
def test_png_parallel_pieces_decode_identically(monkeypatch, pieces, fast) -> None:
    """Independently deflated pieces joined at sync-flush points are one valid zlib stream."""
    if fast and png._isal is None:
        pytest.skip("python-isal is not installed on this platform")
    monkeypatch.setattr(png, "MIN_PIECE", 256)
    rng = np.random.default_rng(pieces)
    smooth = np.cumsum(rng.integers(0, 3, size=(120, 90, 3)), axis=1).astype(np.uint8)
    one = png.encode_png(smooth, threads=1, fast=fast)
    many = png.encode_png(smooth, threads=pieces, fast=fast)
    assert one != many  # really split
    for buf in (one, many):
        cv, _ = _decode(buf)
        assert np.array_equal(cv, smooth)
    if not fast:  # the zlib path makes OpenCV's default choices: sizes within 10 %
        ok, ref = cv2.imencode(".png", smooth)
        assert ok and abs(len(one) - len(ref)) < 0.1 * len(ref)


def test_png_stream_split_over_several_idat_chunks(monkeypatch) -> None:
    monkeypatch.setattr(png, "IDAT_MAX", 100)
    img = np.random.default_rng(7).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    buf = png.encode_png(img)
    assert buf.count(b"IDAT") > 3
    cv, pil = _decode(buf)
    assert np.array_equal(cv, img) and np.array_equal(pil, img[:, :, ::-1])


def test_png_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8 or uint16"):
        png.encode_png(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="unsupported"):
        png.encode_png(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        png.encode_png(np.zeros((0, 4), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        png.encode_png(np.zeros((3, 0, 3), np.uint8))


def test_malloc_tuning_applies_once_and_can_be_disabled() -> None:
    code = "from depthcli.engine.allocator import tune_malloc; print(tune_malloc(), tune_malloc())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"DEPTHCLI_MALLOC_TUNING": "0", "PATH": ""})
    glibc = sys.platform.startswith("linux") and __import__("platform").libc_ver()[0] == "glibc"
    assert on.stdout.split() == ([str(glibc)] * 2)
    assert off.stdout.split() == ["False", "False"]


def test_fast_preprocess_is_close_to_exact() -> None:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (301, 457, 3), dtype=np.uint8), (5, 5), 0)
    exact, fast = Preprocess(exact=True)(img), Preprocess(exact=False)(img)
    assert exact.shape == fast.shape == (3, 518, 784)
    diff = np.abs(exact - fast)
    assert 0 < diff.max() < 1e-3  # float32 vs float64 resize; bf16 input rounding is ~1e-2


def test_estimator_keeps_exact_preprocess_for_fp32(small_ckpt) -> None:
    from depthcli.engine.core import DepthEngine
    from depthcli.models import create_model

    model = create_model("da2-small", weights=small_ckpt)
    assert DepthEngine(model, device="cpu", precision="fp32").preprocess.exact
    assert not DepthEngine(model, device="cpu", precision="bf16").preprocess.exact


def test_default_workers_by_device(monkeypatch) -> None:
    from depthcli.engine.device import default_workers

    monkeypatch.setattr("os.cpu_count", lambda: 32)
    assert default_workers("cpu") == 2  # the model owns the cores
    assert default_workers("cuda") == 8
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert default_workers("cuda") == 2


def test_png_threads_after_fork_and_shutdown() -> None:
    """A forked child (Ray/multiprocessing workers) and a run after `shutdown` still encode
    multi-threaded PNGs, byte-equal: the inherited pool has no threads and must not be used."""
    import os
    import signal

    big = np.random.default_rng(0).integers(0, 65535, (1500, 1500), dtype=np.uint16)
    want = png.encode_png(big)  # > 2 MiB: split across the pool
    assert png._pool is not None
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if it encodes the same bytes (a hang fails by timeout)
        code = 4  # an exception: never back into pytest, whose worker this process copies
        try:
            signal.alarm(60)
            code = 0 if png.encode_png(big) == want else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    png.shutdown()
    assert png._pool is None
    assert png.encode_png(big) == want
