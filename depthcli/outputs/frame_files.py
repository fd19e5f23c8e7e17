"""A video's output as one file per frame in a folder, durable in steps and resumable.

The numbered frames of a video (`outputs.resumable.FramesWriter`: `000000.png`, ...) and the
frame-numbered files of an image sequence (`outputs.sequence_out.NamedFramesWriter`:
`plate_depth.1001.exr`, ...) differ only in their names and where they are published; the
encoding, the fsyncs and the resume rule are this one class.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..io.mp4_segments import fsync_dir
from ..io.png import encode_png
from .encode import encode_visual, exr_bytes, npy_bytes, pfm_bytes
from .formats import FORMATS, OutputOptions
from .sinks import FrameOut


class FrameFiles:
    """Writes each frame's file as it comes; `sync()` makes them durable and returns the state
    from which `resume()` removes the files of frames written after it."""

    def __init__(self, fmt: str, folder: Path, opts: OutputOptions,
                 vrange: tuple[float, float] | None, *, first: int = 0) -> None:
        self.name, self.folder, self.opts, self.vrange = fmt, folder, opts, vrange
        self.count = first  # the next frame to come
        self.unsynced: list[Path] = []
        folder.mkdir(parents=True, exist_ok=True)

    def file_name(self, it: FrameOut) -> str:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """What a resume needs beyond the frame count (after the files are durable)."""
        return {}

    def stale(self, path: Path, state: dict[str, Any]) -> bool:
        """Whether `path`, found on resume, was written after `state` was made durable."""
        raise NotImplementedError

    def encode(self, it: FrameOut) -> bytes:
        if FORMATS[self.name].kind == "png":
            return encode_png(encode_visual(self.name, it.depth, it.image, self.opts,
                                            it.vrange or self.vrange))
        if self.name == "exr":
            return exr_bytes(it.depth)
        if self.name == "npy":
            return npy_bytes(it.depth)
        return pfm_bytes(it.depth)

    def take(self, it: FrameOut) -> None:
        p = self.folder / self.file_name(it)
        p.write_bytes(self.encode(it))
        self.unsynced.append(p)
        self.count = it.index + 1

    def sync(self) -> dict[str, Any]:
        for p in self.unsynced:
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
        self.unsynced = []
        fsync_dir(self.folder)
        return {"count": self.count, **self.state()}

    def resume(self, state: dict[str, Any]) -> int:
        self.count = int(state["count"])
        for p in self.folder.iterdir():
            if self.stale(p, state):
                p.unlink()
        return self.count

    def finish(self) -> None:
        self.sync()

    def abort(self) -> None:
        pass
