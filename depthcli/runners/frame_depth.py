"""How a video's frames become depth: one interface, two strategies.

- `PerFrame`: image models; frames are preprocessed in worker threads (in order), batched
  `batch_size` at a time through the engine, and upsampled to the frame size.
- `Windowed`: temporal models (Video Depth Anything); frames go through 32-frame windows with
  key frames and scale/shift alignment (`depthcli.windows`), streamed with a lag of one window.

Both yield `(frame, full, compact)` in frame order: `full` is the (H, W) float32 depth at the
frame size (or None when the caller does not need it yet), `compact` what a clip-wide second pass
keeps on disk (network-size depth for per-frame models; the full frame for windowed ones, whose
alignment happens at frame size), and `expand(compact)` turns it back into `full` exactly.

Resume (`runners.video_resume`): `state(done)` is what must be saved to continue after `done`
frames came out, or None when that is not a point to continue from (a temporal model between
two windows is; per-frame models always are); `restore(state)` before `depths` continues there,
given the frames from `done` on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch

from ..engine import DepthEstimator
from ..errors import reason
from ..io.video import Frame
from ..threads import prefetch
from ..transforms import upsample

Item = tuple[Frame, "np.ndarray | None", torch.Tensor]


class FrameDepth(Protocol):
    lowres: bool  # whether `compact` is smaller than the frame (pass 2 must expand it)

    def depths(self, frames: Iterable[Frame]) -> Iterator[Item]: ...

    def expand(self, compact: torch.Tensor) -> np.ndarray: ...

    def frame_tensor(self, compact: torch.Tensor) -> torch.Tensor: ...

    def state(self, done: int) -> dict[str, np.ndarray] | None: ...

    def restore(self, state: dict[str, np.ndarray]) -> None: ...


def _preprocessed(fn, frames: Iterable[Frame], workers: int,
                  ahead: int) -> Iterator[tuple[Frame, np.ndarray]]:
    """(frame, fn(frame.bgr)) in frame order, computed `ahead` at a time in worker threads."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="depthcli-prep")
    try:
        for fr, fut in prefetch(lambda f: fn(f.bgr), frames, pool, ahead, ordered=True):
            yield fr, fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class PerFrame:
    """Each frame on its own through the engine, `batch` frames per forward pass."""

    lowres = True

    def __init__(self, est: DepthEstimator, size: tuple[int, int], *, batch: int, workers: int,
                 need_full: bool) -> None:
        self.est, self.size, self.batch, self.workers = est, size, max(1, batch), workers
        self.need_full = need_full

    def _flush(self, batch: list[tuple[Frame, np.ndarray]]) -> Iterator[Item]:
        try:
            out = self.est.forward_batch(np.stack([x for _, x in batch]))
        except Exception as exc:
            raise RuntimeError(f"inference failed at frame {batch[0][0].index}: "
                               f"{reason(exc)}") from exc
        for (fr, _), d in zip(batch, out, strict=True):
            yield fr, (self.est.postprocess(d, self.size) if self.need_full else None), d

    def depths(self, frames: Iterable[Frame]) -> Iterator[Item]:
        batch: list[tuple[Frame, np.ndarray]] = []
        for fr, x in _preprocessed(self.est.preprocess, frames, self.workers,
                                   ahead=self.batch + self.workers):
            batch.append((fr, x))
            if len(batch) >= self.batch:
                yield from self._flush(batch)
                batch = []
        if batch:
            yield from self._flush(batch)

    def frame_tensor(self, compact: torch.Tensor) -> torch.Tensor:
        """The frame-size depth as a tensor (for clip statistics), as `expand` computes it."""
        return upsample(compact[None], self.size, self.est.spec.upsample_align_corners)[0]

    def expand(self, compact: torch.Tensor) -> np.ndarray:
        return self.est.postprocess(compact, self.size)

    def state(self, done: int) -> dict[str, np.ndarray] | None:
        return {}  # frames are independent: any frame is a point to continue from

    def restore(self, state: dict[str, np.ndarray]) -> None:
        pass


class Windowed:
    """A temporal model's windows (Video Depth Anything), streamed; see `depthcli.windows`."""

    lowres = False

    def __init__(self, est: DepthEstimator, size: tuple[int, int], *, workers: int) -> None:
        from ..windows import TemporalWindows, video_preprocess

        self.est, self.size, self.workers = est, size, workers
        self.preprocess = video_preprocess(est.preprocess.input_size, size, est.spec.mean,
                                           est.spec.std)
        self.windows = TemporalWindows(self._forward, size, metric=est.spec.output == "metric")

    def _forward(self, window: np.ndarray) -> np.ndarray:
        return self.est.forward_batch(window).float().cpu().numpy()

    def state(self, done: int) -> dict[str, np.ndarray] | None:
        w = self.windows
        return w.state() if w.resumable() and w.emitted == done else None

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self.windows.restore(state)

    def depths(self, frames: Iterable[Frame]) -> Iterator[Item]:
        waiting: deque[Frame] = deque()  # frames whose depth is not final yet (one window)
        pushed = self.windows.seen  # a resumed run: frames before this are in the window state

        def pair(done: list[np.ndarray]) -> Iterator[Item]:
            for d in done:
                t = torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32))
                yield waiting.popleft(), t.numpy(), t

        for fr, x in _preprocessed(self.preprocess, frames, self.workers, ahead=self.workers * 2):
            waiting.append(fr)
            if fr.index >= pushed:
                yield from pair(self.windows.push(x))
        yield from pair(self.windows.finish())

    def frame_tensor(self, compact: torch.Tensor) -> torch.Tensor:
        return compact

    def expand(self, compact: torch.Tensor) -> np.ndarray:
        return compact.numpy()


def frame_depth(est: DepthEstimator, size: tuple[int, int], *, batch: int, workers: int,
                need_full: bool, temporal: str = "window") -> FrameDepth:
    """The strategy the estimator's model calls for (`temporal`: `window` or `stream`, how a
    temporal model runs; `runners.stream_depth`)."""
    if getattr(est.spec, "temporal", False) and temporal == "stream":
        from .stream_depth import Streamed

        return Streamed(est, size, workers=workers, need_full=need_full)
    if getattr(est.spec, "temporal", False):
        return Windowed(est, size, workers=workers)
    return PerFrame(est, size, batch=batch, workers=workers, need_full=need_full)
