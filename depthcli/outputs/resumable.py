"""A video's output writers that can make their progress durable and continue after a kill.

Each writer takes `FrameOut` items in frame order into a partial output inside the video's
state folder (`runs.video_resume`): `sync()` makes the frames taken so far durable and says
how to find them again, `resume(state)` continues from such a state (returning the next frame
it needs: an H.264 writer without pending frames must be fed again from its open segment's
first frame), `finish()` completes the partial output, `publish(dst)` gives it its final name.
An item below `count` is one the writer already has (a pass fed again from earlier): ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..engine.threads import Sink
from ..io import video_decode as vio
from ..io.atomic import publish
from ..io.mp4_segments import SegmentedMp4
from .encode import encode_visual
from .formats import OutputOptions
from .frame_files import FrameFiles
from .sinks import FRAME_SUFFIX, FrameOut
from .stacks import RawStack


class Writer(Protocol):
    name: str

    @property
    def count(self) -> int: ...

    def take(self, it: Any) -> None: ...

    def sync(self) -> dict[str, Any]: ...

    def resume(self, state: dict[str, Any]) -> int: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...

    def publish(self, dst: Path) -> None: ...


class StackWriter:
    """A (T, H, W) `.npy` stack (the `npy` output, or the first pass's depth store)."""

    def __init__(self, name: str, path: Path, shape: tuple[int, int] | None, dtype: Any,
                 get: Callable[[Any], np.ndarray], *, first: int = 0) -> None:
        """`first`: the clip's frame number of the stack's first frame (a frame range)."""
        self.name, self.path, self.get = name, path, get
        self.shape, self.dtype, self.first = shape, dtype, first
        self.stack: RawStack | None = None

    @property
    def count(self) -> int:
        return self.first + (self.stack.count if self.stack is not None else 0)

    def _open(self, resume: tuple[int, tuple[int, int] | None] | None = None) -> RawStack:
        if self.stack is None:
            self.stack = RawStack(self.path, self.shape, self.dtype, resume)
        return self.stack

    def take(self, it: Any) -> None:
        self._open().append(self.get(it))

    def sync(self) -> dict[str, Any]:
        count, shape = self._open().sync()
        return {"count": count, "shape": list(shape) if shape else None}

    def resume(self, state: dict[str, Any]) -> int:
        shape = tuple(state["shape"]) if state.get("shape") else None
        return self.first + self._open((int(state["count"]), shape)).count

    def finish(self) -> None:
        self._open().close()

    def abort(self) -> None:
        if self.stack is not None:
            self.stack.abort()

    def publish(self, dst: Path) -> None:
        publish(self.path, dst)

    def reopen_closed(self) -> RawStack:
        """The finished stack, to read back in the second pass (also after a resume)."""
        if self.stack is None:
            self.stack = RawStack.existing(self.path, self.dtype)
        return self.stack


class FramesWriter(FrameFiles):
    """A folder of numbered frames (`000000.png`, ...) for png16, exr or pfm."""

    def file_name(self, it: FrameOut) -> str:
        return f"{it.index:06d}{FRAME_SUFFIX[self.name]}"  # the clip's frame numbers

    def stale(self, path: Path, state: dict[str, Any]) -> bool:
        return not path.stem.isdigit() or int(path.stem) >= int(state["count"])

    def publish(self, dst: Path) -> None:
        publish(self.folder, dst)


class Mp4Writer:
    """An H.264 depth video of a visual format, in deterministic segments (`io.mp4_segments`)."""

    def __init__(self, fmt: str, folder: Path, info: vio.VideoInfo, opts: OutputOptions,
                 vrange: tuple[float, float] | None, *, segment: int, pending: bool,
                 first: int = 0, join: bool = True) -> None:
        """`first`: the clip's frame number of the first frame (a frame range, starting on a
        segment boundary); `join=False` leaves the closed segments for a later join."""
        self.name, self.folder, self.opts, self.vrange = fmt, folder, opts, vrange
        self.first, self.joins = first, join
        width = info.width * 2 + 50 if fmt == "side" else info.width
        self.mp4 = SegmentedMp4(folder, width, info.height, info, segment=segment,
                                pending=pending)
        self.out = folder / "joined.mp4"

    @property
    def count(self) -> int:
        return self.first + self.mp4.count

    def take(self, it: FrameOut) -> None:
        self.mp4.write(encode_visual(self.name, it.depth, it.image, self.opts,
                                     it.vrange or self.vrange),
                       it.pts, it.duration)

    def sync(self) -> dict[str, Any]:
        return self.mp4.sync()

    def committed(self) -> None:
        self.mp4.committed()

    def resume(self, state: dict[str, Any]) -> int:
        return self.first + self.mp4.resume(state)

    def finish(self) -> None:
        self.mp4.close()
        if self.joins:
            self.mp4.join(self.out)

    def abort(self) -> None:
        self.mp4.abort()

    def publish(self, dst: Path) -> None:
        publish(self.out, dst)


def writer_sink(w: Writer, indexed: bool = True) -> Sink:
    """A writer behind its own thread; with `indexed`, items it already has are dropped."""
    def handle(it: Any) -> None:
        if indexed and it.index < w.count:
            return
        w.take(it)

    return Sink(w.name, handle, maxsize=8 if isinstance(w, StackWriter) else 4,
                finish=w.finish, abort=w.abort)
