"""`.npy` stacks written one frame at a time: a video's (T, H, W) depth in flat memory."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class RawStack:
    """A (T, H, W) array written one frame at a time to a `.npy` file, T unknown in advance.

    The header is reserved up front and written with the real T at `close()`; frames go through
    plain file writes/reads (not a memory map), so resident memory stays flat however long the
    clip.
    """

    HEADER = 128  # bytes reserved for the .npy header (64-byte aligned)

    def __init__(self, path: Path, shape: tuple[int, int] | None,
                 dtype: np.dtype[Any] | type, resume: tuple[int, tuple[int, int] | None]
                 | None = None) -> None:
        """`resume=(count, shape)` continues a file whose first `count` frames are durable
        (`sync()`), dropping whatever was written after them."""
        self.path = path
        self.shape = shape  # None: taken from the first frame
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.count = 0
        if resume is not None and path.exists():
            self.count, shape0 = resume
            self.shape = shape0 if shape0 is not None else self.shape
            self._f = open(path, "r+b")
            self._f.truncate(self.HEADER + self.count * self.frame_bytes)
            self._f.seek(0, os.SEEK_END)
            return
        self._f = open(path, "w+b")
        self._f.write(b"\0" * self.HEADER)

    def sync(self) -> tuple[int, tuple[int, int] | None]:
        """Make the frames appended so far durable; what `resume` takes."""
        self._f.flush()
        os.fsync(self._f.fileno())
        return self.count, self.shape

    @classmethod
    def existing(cls, path: Path, dtype: np.dtype[Any] | type) -> RawStack:
        """A finished stack (`close()` done), to read its frames back."""
        obj = cls.__new__(cls)
        obj.path, obj.dtype = path, np.dtype(dtype).newbyteorder("<")
        with open(path, "rb") as f:
            np.lib.format.read_magic(f)
            shape, _, _ = np.lib.format.read_array_header_1_0(f)
        obj.count, obj.shape = int(shape[0]), (int(shape[1]), int(shape[2]))
        obj._f = open(path, "r+b")
        obj._f.close()
        return obj

    @property
    def frame_bytes(self) -> int:
        return int(np.prod(self.shape or (0,))) * self.dtype.itemsize

    def append(self, arr: np.ndarray) -> None:
        if self.shape is None:
            self.shape = (int(arr.shape[0]), int(arr.shape[1]))
        if arr.shape != self.shape:
            raise ValueError(f"depth frame {arr.shape} does not match {self.shape}")
        self._f.write(np.ascontiguousarray(arr, dtype=self.dtype).tobytes())
        self.count += 1

    def _header(self) -> bytes:
        d = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
             "shape": (self.count, *(self.shape or (0, 0)))}
        body = repr(d).encode("latin1")
        pad = self.HEADER - 10 - len(body) - 1
        if pad < 0:
            raise ValueError("npy header does not fit")
        return b"\x93NUMPY\x01\x00" + (self.HEADER - 10).to_bytes(2, "little") + body + \
            b" " * pad + b"\n"

    def close(self) -> None:
        """Write the header with the final frame count; the file stays readable."""
        if self._f.closed:
            return
        self._f.flush()
        self._f.seek(0)
        self._f.write(self._header())
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def abort(self) -> None:
        self._f.close()

    def reader(self) -> Callable[[int], np.ndarray]:
        """Frame i as a fresh array (pread: nothing stays mapped)."""
        fd = os.open(self.path, os.O_RDONLY)
        n, dt, shape, fb = self.count, self.dtype, self.shape, self.frame_bytes

        def read(i: int) -> np.ndarray:
            if not 0 <= i < n:
                raise IndexError(i)
            buf = os.pread(fd, fb, self.HEADER + i * fb)
            if len(buf) != fb:
                raise OSError(f"short read at frame {i}")
            return np.frombuffer(buf, dtype=dt).reshape(shape).copy()

        read.close = lambda: os.close(fd)  # type: ignore[attr-defined]
        return read


def concat_stacks(dst: Path, parts: list[Path], dtype: np.dtype[Any] | type) -> None:
    """One stack `dst` of the finished stacks `parts`, in order (the frame ranges of a split
    video): the bytes one stack written frame by frame would have."""
    out = RawStack(dst, None, dtype)
    try:
        for p in parts:
            part = RawStack.existing(p, dtype)
            if part.count == 0:
                continue
            if out.shape is None:
                out.shape = part.shape
            if part.shape != out.shape:
                raise ValueError(f"{p}: frames {part.shape} do not match {out.shape}")
            with open(p, "rb") as f:
                f.seek(RawStack.HEADER)
                shutil.copyfileobj(f, out._f, 1 << 22)
            out.count += part.count
    except BaseException:
        out.abort()
        raise
    out.close()
