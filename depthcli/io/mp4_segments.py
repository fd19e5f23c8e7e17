"""H.264 depth videos encoded in fixed segments, so that a resumed run writes the same bytes.

An encoder's state cannot be saved, so a video that must survive a kill is encoded in segments
of `segment` frames, each by a fresh libx264 encoder (each starts with an IDR frame; x264 is
deterministic for the same frames and settings). A closed segment is a file of its encoded
packets with their exact timestamps (`seg<k>.pkt`; an intermediate container would round them);
`join` muxes them, in order, with the source's audio into the final mp4, whose stream header
comes from an encoder with the same settings (the same SPS/PPS). A run that is never interrupted goes the same way, so both write one and the same stream.

The frames of the segment being encoded are not durable in the encoder: with `pending=True` the
writer also appends each encoder input to `pending-<k>.raw` (pts, duration, the raw pixels), and
a resumed writer feeds them to a fresh encoder again; with `pending=False` the caller feeds the
frames again from the segment's first (`resume` says from where).

No torch here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .video_decode import VideoInfo
from .video_encode import VideoWriter

_REC = 16  # pts + duration, int64 little-endian, before each pending frame
_PKT = 29  # pts, dts, duration (int64), keyframe (int8), size (int32) before each packet
_NONE = -(1 << 63)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentedMp4:
    """Encoder of one depth video into `folder`, in segments of `segment` frames."""

    def __init__(self, folder: Path, width: int, height: int, info: VideoInfo, *,
                 segment: int, pending: bool) -> None:
        self.folder, self.width, self.height, self.info = folder, width, height, info
        self.segment, self.keep_pending = max(1, segment), pending
        folder.mkdir(parents=True, exist_ok=True)
        self.segments = 0  # closed segments
        self.count = 0  # frames taken (closed segments + the open one)
        self.writer: VideoWriter | None = None
        self.pend: object = None  # the open pending file (binary, append)
        self.frame_shape: tuple[int, ...] | None = None

    def _seg(self, k: int) -> Path:
        return self.folder / f"seg{k:06d}.pkt"

    def _pending(self, k: int) -> Path:
        return self.folder / f"pending-{k:06d}.raw"

    def _open(self) -> VideoWriter:
        if self.writer is None:
            pkt = open(self._seg(self.segments), "wb")
            self.pkt = pkt
            self.writer = VideoWriter(self.folder / "header.mp4", self.width, self.height,
                                      self.info, audio=False, packets=lambda p: _put(pkt, p))
            if self.keep_pending:
                self.pend = open(self._pending(self.segments), "ab")
        return self.writer

    def write(self, img: np.ndarray, pts: int, duration: int, *, replay: bool = False) -> None:
        """One encoder input (BGR or gray uint8) in frame order."""
        w = self._open()
        if self.keep_pending and not replay:
            self.pend.write(int(pts).to_bytes(8, "little", signed=True)  # type: ignore[attr-defined]
                            + int(duration).to_bytes(8, "little", signed=True)
                            + np.ascontiguousarray(img).tobytes())
        self.frame_shape = img.shape
        w.write(img, pts, duration)
        self.count += 1
        if self.count % self.segment == 0:
            self._close_segment()

    def _close_segment(self) -> None:
        assert self.writer is not None
        self.writer.close()
        self.pkt.flush()
        os.fsync(self.pkt.fileno())
        self.pkt.close()
        self.writer = None
        if self.pend is not None:
            self.pend.close()  # type: ignore[attr-defined]
            self.pend = None
        self.segments += 1

    def sync(self) -> dict[str, int]:
        """Make what was taken durable; the dict is what `resume` needs."""
        if self.pend is not None:
            self.pend.flush()  # type: ignore[attr-defined]
            os.fsync(self.pend.fileno())  # type: ignore[attr-defined]
        fsync_dir(self.folder)
        shape = list(self.frame_shape) if self.frame_shape is not None else []
        return {"segments": self.segments, "count": self.count, "shape_h": shape[0] if shape
                else 0, "channels": shape[2] if len(shape) == 3 else 1}

    def committed(self) -> None:
        """The state naming `sync()`'s segments is durable: older pending frames can go."""
        for k in range(self.segments):
            with contextlib.suppress(FileNotFoundError):
                self._pending(k).unlink()

    def resume(self, state: dict[str, int]) -> int:
        """Continue from a `sync()` state; returns the next frame index the caller feeds."""
        self.segments = int(state["segments"])
        for p in self.folder.iterdir():  # segments closed after that state was saved
            if p.name.startswith("seg") and int(p.stem[3:]) >= self.segments or \
                    p.name == "header.mp4":
                p.unlink()
            elif p.name.startswith("pending-") and int(p.stem[8:]) < self.segments:
                p.unlink()
        self.count = self.segments * self.segment
        durable = int(state["count"])
        if not self.keep_pending or durable == self.count:
            with contextlib.suppress(FileNotFoundError):
                self._pending(self.segments).unlink()
            return self.count
        path = self._pending(self.segments)
        shape = (int(state["shape_h"]), self.width) + \
            ((int(state["channels"]),) if int(state["channels"]) > 1 else ())
        size = _REC + int(np.prod(shape))
        n = durable - self.count
        with open(path, "rb+") as f:
            f.truncate(n * size)
        with open(path, "rb") as f:
            for _ in range(n):
                rec = f.read(size)
                if len(rec) != size:
                    raise OSError(f"{path}: short pending record")
                pts = int.from_bytes(rec[:8], "little", signed=True)
                dur = int.from_bytes(rec[8:16], "little", signed=True)
                img = np.frombuffer(rec[_REC:], np.uint8).reshape(shape)
                self.write(img, pts, dur, replay=True)
        return self.count

    def close(self) -> None:
        """Close the last (short) segment."""
        if self.writer is not None:
            self._close_segment()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
            self.pkt.close()
        if self.pend is not None:
            self.pend.close()  # type: ignore[attr-defined]
            self.pend = None

    def join(self, dst: Path) -> None:
        """Mux the segments, in order, with the source's audio, into the mp4 `dst`."""
        out = VideoWriter(dst, self.width, self.height, self.info)
        try:
            last_dts: int | None = None
            for k in range(self.segments):
                for pkt in _packets(self._seg(k), self.info.time_base):
                    if pkt.dts is not None and last_dts is not None and pkt.dts <= last_dts:
                        pkt.dts = last_dts + 1  # a seam between segments of a variable rate
                    last_dts = pkt.dts
                    out.mux_encoded(pkt)
            out.close()
        except BaseException:
            out.abort()
            raise
        with contextlib.suppress(FileNotFoundError):
            (self.folder / "header.mp4").unlink()


def _put(f: object, p: av.Packet) -> None:
    """One encoded packet, timestamps in the stream's time base (the source's)."""
    data = bytes(p)
    head = b"".join(int(_NONE if v is None else v).to_bytes(8, "little", signed=True)
                    for v in (p.pts, p.dts, p.duration))
    f.write(head + bytes([1 if p.is_keyframe else 0])  # type: ignore[attr-defined]
            + len(data).to_bytes(4, "little") + data)


def _packets(path: Path, time_base: Fraction) -> Iterator[av.Packet]:
    with open(path, "rb") as f:
        while True:
            head = f.read(_PKT)
            if not head:
                return
            if len(head) != _PKT:
                raise OSError(f"{path}: truncated packet")
            pts, dts, dur = (int.from_bytes(head[i:i + 8], "little", signed=True)
                             for i in (0, 8, 16))
            size = int.from_bytes(head[25:29], "little")
            pkt = av.Packet(f.read(size))
            pkt.time_base = time_base
            pkt.pts = None if pts == _NONE else pts
            pkt.dts = None if dts == _NONE else dts
            if dur != _NONE and dur > 0:
                pkt.duration = dur
            pkt.is_keyframe = bool(head[24])
            yield pkt
