"""A picture of temporal consistency: input frames, per-frame depth, Video Depth Anything depth.

Three rows of N evenly spaced frames of one clip; each depth row is coloured with ONE value range
for its whole clip, so a brightness change from frame to frame is a change of the predicted depth
(per-frame models drift in scale and shift; the temporal model should not).

    depthcli predict clip.mp4 -o pf  --model da2-small -f npy
    depthcli predict clip.mp4 -o vda --model vda-small -f npy
    python -m tools.temporal_strip clip.mp4 pf/clip.npy vda/clip.npy -o strip.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from depthcli.io.atomic import write_bytes
from depthcli.io.png import encode_png
from depthcli.outputs import render

LABEL_W = 120


def _frames(video: Path, picks: list[int]) -> list[np.ndarray]:
    import av

    want, out = set(picks), {}
    with av.open(str(video)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in want:
                out[i] = f.to_ndarray(format="bgr24")
            if i >= max(picks):
                break
    return [out[i] for i in picks]


def _row(images: list[np.ndarray], label: str, width: int) -> np.ndarray:
    tiles = [cv2.resize(im, (width, round(im.shape[0] * width / im.shape[1])),
                        interpolation=cv2.INTER_AREA) for im in images]
    row = np.concatenate(tiles, axis=1)
    pad = np.full((row.shape[0], LABEL_W, 3), 255, np.uint8)
    for k, line in enumerate(label.split("\n")):
        cv2.putText(pad, line, (6, 22 + 20 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return np.concatenate([pad, row], axis=1)


def _colour(stack: np.ndarray, picks: list[int]) -> list[np.ndarray]:
    """Depth frames coloured with one min-max range for the whole clip (near = warm)."""
    lo, hi = float(np.nanmin(stack)), float(np.nanmax(stack))
    out = []
    for i in picks:
        t = render.nearness(stack[i], (lo, hi), near_is_large=True, invert=False)
        out.append(render.colorize(render.to_uint8(t), "spectral_r"))
    return out


def strip(video: Path, per_frame: Path, temporal: Path, n: int = 6, width: int = 240) -> np.ndarray:
    a = np.load(per_frame, mmap_mode="r")
    b = np.load(temporal, mmap_mode="r")
    total = min(len(a), len(b))
    picks = [round(i * (total - 1) / max(1, n - 1)) for i in range(n)]
    rows = [_row(_frames(video, picks), "input", width),
            _row(_colour(np.asarray(a), picks), "per-frame\n(da2)", width),
            _row(_colour(np.asarray(b), picks), "temporal\n(vda)", width)]
    return np.concatenate(rows, axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.temporal_strip",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("video", type=Path)
    ap.add_argument("per_frame", type=Path, help="npy (T, H, W) of a per-frame model")
    ap.add_argument("temporal", type=Path, help="npy (T, H, W) of a vda-* model")
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--width", type=int, default=240, help="width of one tile in pixels")
    a = ap.parse_args()
    write_bytes(a.output, encode_png(strip(a.video, a.per_frame, a.temporal, a.frames, a.width)))
    print(a.output)


if __name__ == "__main__":
    main()
