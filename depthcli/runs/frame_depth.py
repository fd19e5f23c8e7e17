"""How a video's frames become depth: one interface, two strategies.

- `PerFrame`: image models; the frames go through the engine's one batching path
  (`DepthEngine.run`: preprocessing in worker threads, `batch_size` frames a forward pass,
  upsampling to the frame size), in frame order.
- `Windowed`: temporal models (Video Depth Anything); frames go through 32-frame windows with
  key frames and scale/shift alignment (`DepthEngine.windows`), streamed with a lag of one window.

Both yield `(frame, full, compact)` in frame order, host arrays only: `full` is the (H, W)
float32 depth at the frame size, `compact` what a clip-wide second pass keeps on disk
(network-size depth for per-frame models; the full frame for windowed ones, whose alignment
happens at frame size), and `expand(compact)` turns it back into `full` exactly.

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
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..engine.core import DepthEngine
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
                 cuts: SceneCuts | None = None) -> None:
        self.est, self.size, self.batch, self.workers = est, size, max(1, batch), workers
        self.cuts = cuts

    def depths(self, frames: Iterable[Frame]) -> Iterator[Item]:
        jobs = ((fr, _image_of(fr)) for fr in frames)
        results = self.est.run(jobs, batch_size=self.batch, workers=self.workers, ordered=True,
                               extras=False, network=True)
        try:
            for res in results:
                fr = res.key
                assert isinstance(fr, Frame)
                if res.error is not None:
                    assert res.exc is not None
                    if res.during != "inference":
                        raise res.exc
                    raise RuntimeError(f"inference failed at frame {fr.index}: "
                                       f"{reason(res.exc)}") from res.exc
                if self.cuts is not None:  # as frames come out: the detector's state is theirs
                    self.cuts.is_cut(fr.index, fr.bgr)
                assert res.depth is not None and res.network is not None
                yield fr, res.depth, res.network
        finally:
            results.close()

    def expand(self, compact: np.ndarray) -> np.ndarray:
        return self.est.postprocess(compact, self.size)

    def state(self, done: int) -> dict[str, np.ndarray] | None:
        # frames are independent: any frame is a point to continue from
        return _cut_state(self.cuts)

    def restore(self, state: dict[str, np.ndarray]) -> None:
        _cut_restore(self.cuts, state)


def _image_of(fr: Frame) -> Callable[[], np.ndarray]:
    """The engine's job loader: the frame is decoded already."""
    return lambda: fr.bgr


class Windowed:
    """A temporal model's windows (Video Depth Anything), streamed; see `engine.windows`."""

    lowres = False

    def __init__(self, est: DepthEngine, size: tuple[int, int], *, workers: int,
                 cuts: SceneCuts | None = None) -> None:
        self.est, self.size, self.workers = est, size, workers
        self.preprocess = est.video_preprocess(size)
        self.cuts = cuts
        self.offset = 0  # frames of the shots before the current one (scene cuts)
        self.windows = self._fresh()

    def _fresh(self) -> TemporalWindows:
        return self.est.windows(self.size)

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
                a = np.ascontiguousarray(d, dtype=np.float32)
                yield waiting.popleft(), a, a

        for fr, x in preprocessed(self.preprocess, frames, self.workers, ahead=self.workers * 2):
            waiting.append(fr)
            if fr.index >= pushed:
                if self.cuts is not None and self.cuts.is_cut(fr.index, fr.bgr):
                    yield from pair(self.windows.finish())  # the shot ends as a clip would
                    self.offset = fr.index
                    self.windows = self._fresh()
                yield from pair(self.windows.push(x))
        yield from pair(self.windows.finish())

    def expand(self, compact: np.ndarray) -> np.ndarray:
        return compact


def _cut_state(cuts: SceneCuts | None) -> dict[str, np.ndarray]:
    return {} if cuts is None else {f"cut_{k}": v for k, v in cuts.state().items()}


def _cut_restore(cuts: SceneCuts | None, state: dict[str, np.ndarray]) -> None:
    if cuts is not None and "cut_prev" in state:
        cuts.restore({k[4:]: v for k, v in state.items() if k.startswith("cut_")})


def frame_depth(est: DepthEngine, size: tuple[int, int], *, batch: int, workers: int,
                cuts: SceneCuts | None = None,
                temporal: str = "window") -> FrameDepth:
    """The strategy the estimator's model calls for; `cuts`: a scene-cut detector, or None;
    `temporal`: `window` or `stream`, how a temporal model runs (`runs.stream_depth`; the
    command line refuses --scene-cuts with stream)."""
    if getattr(est.spec, "temporal", False) and temporal == "stream":
        from .stream_depth import Streamed

        return Streamed(est, size, workers=workers)
    if getattr(est.spec, "temporal", False):
        return Windowed(est, size, workers=workers, cuts=cuts)
    return PerFrame(est, size, batch=batch, workers=workers, cuts=cuts)
