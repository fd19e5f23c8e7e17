"""How a video's frames become depth: one interface, two strategies.

- `PerFrame`: image models; frames are preprocessed in worker threads (in order), batched
  `batch_size` at a time through the engine, and upsampled to the frame size.
- `Windowed`: temporal models (Video Depth Anything); frames go through 32-frame windows with
  key frames and scale/shift alignment (`depthcli.engine.windows`), streamed with a lag of one window.

Both yield `(frame, full, compact)` in frame order: `full` is the (H, W) float32 depth at the
frame size (or None when the caller does not need it yet), `compact` what a clip-wide second pass
keeps on disk (network-size depth for per-frame models; the full frame for windowed ones, whose
alignment happens at frame size), and `expand(compact)` turns it back into `full` exactly.

Scene cuts (`--scene-cuts`, `depthcli.runs.scenecuts`): with a detector, each frame is checked as it
enters; a temporal model finishes the shot's windows at a cut (as at the end of a clip) and
starts afresh, so every shot is aligned on its own; a per-frame model only reports the cuts.

Resume (`runs.video_resume`): `state(done)` is what must be saved to continue after `done`
frames came out, or None when that is not a point to continue from (a temporal model between
two windows is; per-frame models always are); `restore(state)` before `depths` continues there,
given the frames from `done` on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..engine.core import DepthEngine
from ..engine.transforms import upsample
from ..errors import reason
from ..io.video_decode import Frame
from .frame_items import FrameDepth, Item, preprocessed
from .scenecuts import SceneCuts

if TYPE_CHECKING:
    from ..engine.windows import TemporalWindows

class PerFrame:
    """Each frame on its own through the engine, `batch` frames per forward pass."""

    lowres = True

    def __init__(self, est: DepthEngine, size: tuple[int, int], *, batch: int, workers: int,
                 need_full: bool, cuts: SceneCuts | None = None) -> None:
        self.est, self.size, self.batch, self.workers = est, size, max(1, batch), workers
        self.need_full = need_full
        self.cuts = cuts

    def _flush(self, batch: list[tuple[Frame, np.ndarray]]) -> Iterator[Item]:
        try:
            out = self.est.forward_batch(np.stack([x for _, x in batch]))
        except Exception as exc:
            raise RuntimeError(f"inference failed at frame {batch[0][0].index}: "
                               f"{reason(exc)}") from exc
        for (fr, _), d in zip(batch, out, strict=True):
            if self.cuts is not None:  # as frames come out: the detector's state is theirs
                self.cuts.is_cut(fr.index, fr.bgr)
            yield fr, (self.est.postprocess(d, self.size) if self.need_full else None), d

    def depths(self, frames: Iterable[Frame]) -> Iterator[Item]:
        batch: list[tuple[Frame, np.ndarray]] = []
        for fr, x in preprocessed(self.est.preprocess, frames, self.workers,
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
        # frames are independent: any frame is a point to continue from
        return _cut_state(self.cuts)

    def restore(self, state: dict[str, np.ndarray]) -> None:
        _cut_restore(self.cuts, state)


class Windowed:
    """A temporal model's windows (Video Depth Anything), streamed; see `depthcli.engine.windows`."""

    lowres = False

    def __init__(self, est: DepthEngine, size: tuple[int, int], *, workers: int,
                 cuts: SceneCuts | None = None) -> None:
        from ..engine.windows import video_preprocess

        self.est, self.size, self.workers = est, size, workers
        self.preprocess = video_preprocess(est.preprocess.input_size, size, est.spec.mean,
                                           est.spec.std)
        self.cuts = cuts
        self.offset = 0  # frames of the shots before the current one (scene cuts)
        self.windows = self._fresh()

    def _fresh(self) -> TemporalWindows:
        from ..engine.windows import TemporalWindows

        return TemporalWindows(self._forward, self.size,
                               metric=self.est.spec.output == "metric")

    def _forward(self, window: np.ndarray) -> np.ndarray:
        return self.est.forward_batch(window).float().cpu().numpy()

    def state(self, done: int) -> dict[str, np.ndarray] | None:
        w = self.windows
        if not (w.resumable() and self.offset + w.emitted == done):
            return None
        return {**w.state(), **_cut_state(self.cuts), "offset": np.array([self.offset])}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self.windows.restore(state)
        self.offset = int(state["offset"][0]) if "offset" in state else 0
        _cut_restore(self.cuts, state)

    def depths(self, frames: Iterable[Frame]) -> Iterator[Item]:
        waiting: deque[Frame] = deque()  # frames whose depth is not final yet (one window)
        # a resumed run: frames before this are in the window state
        pushed = self.offset + self.windows.seen

        def pair(done: list[np.ndarray]) -> Iterator[Item]:
            for d in done:
                t = torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32))
                yield waiting.popleft(), t.numpy(), t

        for fr, x in preprocessed(self.preprocess, frames, self.workers, ahead=self.workers * 2):
            waiting.append(fr)
            if fr.index >= pushed:
                if self.cuts is not None and self.cuts.is_cut(fr.index, fr.bgr):
                    yield from pair(self.windows.finish())  # the shot ends as a clip would
                    self.offset = fr.index
                    self.windows = self._fresh()
                yield from pair(self.windows.push(x))
        yield from pair(self.windows.finish())

    def frame_tensor(self, compact: torch.Tensor) -> torch.Tensor:
        return compact

    def expand(self, compact: torch.Tensor) -> np.ndarray:
        return compact.numpy()


def _cut_state(cuts: SceneCuts | None) -> dict[str, np.ndarray]:
    return {} if cuts is None else {f"cut_{k}": v for k, v in cuts.state().items()}


def _cut_restore(cuts: SceneCuts | None, state: dict[str, np.ndarray]) -> None:
    if cuts is not None and "cut_prev" in state:
        cuts.restore({k[4:]: v for k, v in state.items() if k.startswith("cut_")})


def frame_depth(est: DepthEngine, size: tuple[int, int], *, batch: int, workers: int,
                need_full: bool, cuts: SceneCuts | None = None,
                temporal: str = "window") -> FrameDepth:
    """The strategy the estimator's model calls for; `cuts`: a scene-cut detector, or None;
    `temporal`: `window` or `stream`, how a temporal model runs (`runs.stream_depth`; the
    command line refuses --scene-cuts with stream)."""
    if getattr(est.spec, "temporal", False) and temporal == "stream":
        from .stream_depth import Streamed

        return Streamed(est, size, workers=workers, need_full=need_full)
    if getattr(est.spec, "temporal", False):
        return Windowed(est, size, workers=workers, cuts=cuts)
    return PerFrame(est, size, batch=batch, workers=workers, need_full=need_full, cuts=cuts)
