"""The README's temporal-consistency picture tool: three rows of tiles, one range per clip."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def test_temporal_strip(tmp_path: Path) -> None:
    from tools.temporal_strip import LABEL_W, strip

    clip = tmp_path / "c.mp4"
    with av.open(str(clip), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(25))
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(9):
            img = np.full((48, 64, 3), i * 20, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    a = np.stack([np.full((48, 64), i, np.float32) for i in range(9)])
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", a * 0 + np.linspace(0, 1, 64, dtype=np.float32))
    img = strip(clip, tmp_path / "a.npy", tmp_path / "b.npy", n=3, width=32)
    assert img.shape == (3 * 24, LABEL_W + 3 * 32, 3) and img.dtype == np.uint8
    # one range for the clip: the per-frame row's first and last tiles differ (0 vs 8)
    first, last = img[24:48, LABEL_W:LABEL_W + 32], img[24:48, LABEL_W + 64:]
    assert np.abs(first.astype(int) - last.astype(int)).max() > 50
    assert cv2.imencode(".png", img)[0]
