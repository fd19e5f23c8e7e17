"""Per-frame latency and frames/s of Video Depth Anything on a clip: `--temporal stream` (one
frame in, one depth out) against `--temporal window` (32-frame windows, the offline procedure).

The frames are all there at once (a file): a frame's latency is the time from the run taking it
to its depth at the frame size. Streaming is timed as a live run computes it (`runs.live`'s
step: preprocess, the network with its cache, upsampling), after one warm-up frame on a
throwaway cache; the window mode through the file runner's strategy (`runs.frame_depth`),
where the frames of a window wait for it, so latency grows with a frame's place in the window.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np


def clip_frames(path: str | os.PathLike[str], frames: int, width: int) -> list[np.ndarray]:
    """The first `frames` frames of a video as BGR, resized to `width` (aspect kept, even)."""
    import av
    import cv2

    out: list[np.ndarray] = []
    with av.open(str(path)) as c:
        for fr in c.decode(video=0):
            img = fr.to_ndarray(format="bgr24")
            h = round(img.shape[0] * width / img.shape[1] / 2) * 2
            out.append(cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA))
            if len(out) == frames:
                break
    return out


def _stats(lat: list[float], seconds: float, cpu: float, n: int) -> dict[str, float]:
    """Wall-clock figures, and the process's CPU time per frame: on a loaded machine the
    wall clock says more about the neighbours than about the model."""
    ms = np.asarray(lat) * 1000
    return {"latency_median_ms": round(float(np.median(ms)), 1),
            "latency_p95_ms": round(float(np.percentile(ms, 95)), 1),
            "frames_per_s": round(n / seconds, 3), "seconds": round(seconds, 2),
            "cpu_s_per_frame": round(cpu / n, 3)}


def measure_stream(est: Any, frames: list[np.ndarray]) -> dict[str, float]:
    from ..engine.stream import Stepper

    size = (int(frames[0].shape[0]), int(frames[0].shape[1]))
    Stepper(est, size)(frames[0])  # warm-up on a cache of its own
    step = Stepper(est, size)
    lat: list[float] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for img in frames:
        t = time.perf_counter()
        step(img)
        lat.append(time.perf_counter() - t)
    return _stats(lat, time.perf_counter() - t0, time.process_time() - c0, len(frames))


def measure_window(est: Any, frames: list[np.ndarray]) -> dict[str, float]:
    from ..io.video_decode import Frame
    from ..runs.frame_depth import frame_depth

    size = (int(frames[0].shape[0]), int(frames[0].shape[1]))
    runner = frame_depth(est, size, batch=1, workers=1, temporal="window")
    taken: dict[int, float] = {}

    def source() -> Any:
        for i, img in enumerate(frames):
            taken[i] = time.perf_counter()
            yield Frame(i, i, 0, img)

    lat: list[float] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for fr, _full, _compact in runner.depths(source()):  # full: at the frame size already
        lat.append(time.perf_counter() - taken[fr.index])
    return _stats(lat, time.perf_counter() - t0, time.process_time() - c0, len(frames))


def main() -> None:
    """`python -m depthcli.bench.latency WEIGHTS CLIP [--frames N] [--width W]
    [--input-size S ...] [--model vda-small]`: one JSON line per (input size, mode)."""
    import argparse
    import json

    import torch

    from ..engine.core import DepthEngine

    ap = argparse.ArgumentParser(prog="python -m depthcli.bench.latency",
                                 description="VDA latency: --temporal stream vs window.")
    ap.add_argument("weights")
    ap.add_argument("clip")
    ap.add_argument("--model", default="vda-small")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--input-size", type=int, nargs="+", default=[266, 518])
    ap.add_argument("--modes", nargs="+", default=["stream", "window"])
    a = ap.parse_args()
    frames = clip_frames(a.clip, a.frames, a.width)
    for size in a.input_size:
        est = DepthEngine.from_name(a.model, weights=a.weights, input_size=size,
                                       device="cpu", precision="fp32", backend="torch")
        for mode in a.modes:
            with torch.inference_mode():
                res = (measure_stream if mode == "stream" else measure_window)(est, frames)
            print(json.dumps({"model": a.model, "input_size": size, "temporal": mode,
                              "frames": len(frames), "frame_size": list(frames[0].shape[:2]),
                              "threads": torch.get_num_threads(), **res}), flush=True)


if __name__ == "__main__":
    main()
