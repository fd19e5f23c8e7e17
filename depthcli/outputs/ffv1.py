"""`-f ffv1`: a lossless 16-bit depth video, `<stem>.mkv` (FFV1, gray16le, Matroska).

The values are `png16`'s, bit for bit: relative models the clip's normalised range x 65535
(near = bright), metric models millimetres (65535 = 65.535 m and beyond). The video keeps the
source's timing (its time base as Matroska stores it, milliseconds; every frame's pts) and its
first audio stream (copied when Matroska takes the codec, else AAC). Reading it back with PyAV
(`frame.to_ndarray()`) or `ffmpeg -i x.mkv -f rawvideo -pix_fmt gray16le` gives the uint16
frames exactly.

Resume: the frames are kept in a raw file in the clip's partial-state folder while the clip
runs (frames x pixels x 2 bytes; `sync` makes them durable, `resume` truncates to the durable
count); `finish` encodes them in one go. FFV1's encoder state cannot be saved, and an encode
of raw 16-bit frames costs little next to the depth network.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from ..io import video_decode as vio
from ..io.atomic import publish
from ..io.audio import AudioFeed
from .encode import encode_visual
from .formats import OutputOptions
from .sinks import FrameOut

_logger = logging.getLogger(__name__)
_REC = 16  # pts, duration (int64 little-endian) before each frame


class Ffv1Writer:
    """The `ffv1` output of one clip (see the module docstring)."""

    def __init__(self, folder: Path, info: vio.VideoInfo, opts: OutputOptions,
                 vrange: tuple[float, float] | None) -> None:
        self.name = "ffv1"
        self.folder, self.info, self.opts, self.vrange = folder, info, opts, vrange
        folder.mkdir(parents=True, exist_ok=True)
        self.raw = folder / "frames.raw"
        self.out = folder / "out.mkv"
        self.frame_bytes = info.width * info.height * 2
        self.count = 0
        self._f = open(self.raw, "ab")

    def take(self, it: FrameOut) -> None:
        v = encode_visual("png16", it.depth, None, self.opts, it.vrange or self.vrange)
        head = np.array([it.pts, it.duration], "<i8").tobytes()
        self._f.write(head + np.ascontiguousarray(v, "<u2").tobytes())
        self.count = it.index + 1

    def sync(self) -> dict[str, Any]:
        self._f.flush()
        os.fsync(self._f.fileno())
        return {"count": self.count}

    def resume(self, state: dict[str, Any]) -> int:
        self.count = int(state["count"])
        self._f.close()
        with open(self.raw, "r+b") as f:
            f.truncate(self.count * (_REC + self.frame_bytes))
        self._f = open(self.raw, "ab")
        return self.count

    def finish(self) -> None:
        self._f.close()
        encode_ffv1(self.raw, self.out, self.info, self.count)
        self.raw.unlink()

    def abort(self) -> None:
        self._f.close()

    def publish(self, dst: Path) -> None:
        publish(self.out, dst)


def encode_ffv1(raw: Path, out: Path, info: vio.VideoInfo, count: int) -> None:
    """The raw records of `Ffv1Writer` → an FFV1 gray16le Matroska file with the source's audio."""
    h, w = info.height, info.width
    fb = w * h * 2
    # as they are: an AAC source's priming starts before 0, and the muxer's default shift would
    # move every frame later by it (Matroska stores the negative time); bitexact: no random
    # UIDs, so a resumed run writes the same bytes
    container = av.open(str(out), "w", format="matroska",
                        options={"avoid_negative_ts": "disabled", "fflags": "+bitexact"})
    try:
        vs = container.add_stream("ffv1", rate=info.rate)
        vs.width, vs.height, vs.pix_fmt = w, h, "gray16le"
        vs.time_base = info.time_base
        vs.codec_context.time_base = info.time_base
        if info.sample_aspect_ratio is not None:
            vs.codec_context.sample_aspect_ratio = info.sample_aspect_ratio
        audio = None
        if info.audio_codec is not None:
            try:
                audio = AudioFeed(info.path, container)
            except (av.error.FFmpegError, ValueError, OSError) as exc:
                _logger.warning("%s: audio not copied (%s)", info.path, vio.error_reason(exc))
        with open(raw, "rb") as f:
            for _ in range(count):
                head = f.read(_REC)
                pts, dur = (int(v) for v in np.frombuffer(head, "<i8"))
                img = np.frombuffer(f.read(fb), "<u2").reshape(h, w)
                frame = av.VideoFrame.from_ndarray(img, format="gray16le")
                frame.pts = pts
                frame.time_base = info.time_base
                if dur > 0:
                    frame.duration = dur
                if audio is not None:
                    audio.feed(float(pts * info.time_base))
                for p in vs.encode(frame):
                    container.mux(p)
        for p in vs.encode(None):
            container.mux(p)
        if audio is not None:
            audio.feed(None)
    finally:
        container.close()


def read_ffv1(path: Path) -> tuple[np.ndarray, list[int]]:
    """(T, H, W) uint16 frames and their pts: the inverse of the writer (tests, round trips)."""
    with av.open(str(path)) as c:
        frames, pts = [], []
        for fr in c.decode(video=0):
            frames.append(fr.to_ndarray(format="gray16le"))
            pts.append(int(fr.pts or 0))
    return np.stack(frames), pts
