"""Depth videos out: H.264 mp4 through PyAV, frame for frame with the source's timing.

- Output is H.264 (libx264, yuv420p, crf 18, `+faststart`) in mp4: it plays in browsers. 4:2:0
  needs even width and height (libx264 refuses odd ones and H.264 cannot crop by one pixel), so
  a source with an odd width or height is encoded as H.264 High 4:4:4 (yuv444p) at its exact
  size instead: the depth video keeps the source's size (what editors and frame-by-frame
  pipelines need), at the cost that some browsers do not play 4:4:4. Raw exports (npy, png16,
  exr, pfm) always keep the exact source size.
- The output stream gets the input stream's time base and average frame rate, and each frame
  keeps its input pts, so the output lines up frame for frame (variable frame rate included).
  A frame without pts gets the previous pts + one nominal frame; a pts that does not increase is
  bumped by one tick (H.264 needs strictly increasing pts); both are logged at DEBUG.
- The source's audio comes along (`io.audio`).
- On CPUs with AVX-512, x264's assembly is capped at AVX2 (`x264_deterministic`): with its AVX-512
  routines the same frames and settings encoded to different bytes from run to run (2-core
  AMD EPYC with AVX-512: 3 different streams in 40 encodes of 8 gray 48x32 frames, also at
  320x240; capped: one stream in 40, the one AVX2 CPUs write), so resumed and segmented depth
  videos were not the bytes of an uninterrupted run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import av
import av.error
import numpy as np

from ..cpu import has_avx512
from .audio import AudioFeed
from .video_decode import VideoInfo, error_reason

_logger = logging.getLogger(__name__)


def x264_deterministic() -> dict[str, str]:
    """The libx264 option that keeps its output a function of its input on this CPU."""
    # every AVX-512 CPU has AVX2 (x264 takes the named set unchecked, so only there)
    return {"x264-params": "asm=AVX2"} if has_avx512() else {}


def x264_options(crf: int, preset: str) -> dict[str, str]:
    """libx264's options: rate and speed, and the assembly cap that keeps it deterministic."""
    return {"crf": str(crf), "preset": preset, **x264_deterministic()}


class VideoWriter:
    """H.264 mp4 writer fed BGR (H, W, 3) or gray (H, W) uint8 frames with source pts.

    `path` may have any extension (the format is forced to mp4), which lets callers write to
    an atomic temporary name.
    """

    def __init__(self, path: Path, width: int, height: int, info: VideoInfo, *,
                 audio: bool = True, crf: int = 18, preset: str = "fast",
                 packets: Callable[[av.Packet], None] | None = None) -> None:
        """`packets`: encoded packets go there instead of into the file (segments, see
        `io.mp4_segments`); the file then holds only the header."""
        self.path = path
        self.packets = packets
        self.size = (height, width)
        self.time_base = info.time_base
        self.container = av.open(str(path), "w", format="mp4",
                                 options={"movflags": "+faststart"})
        try:
            vs = self.container.add_stream("libx264", rate=info.rate,
                                           options=x264_options(crf, preset))
            vs.width, vs.height = width, height
            vs.pix_fmt = "yuv420p" if not (width & 1 or height & 1) else "yuv444p"
            vs.time_base = info.time_base
            vs.codec_context.time_base = info.time_base
            # swscale converts BGR with the BT.601 matrix, limited range: say so, so that
            # players (browsers guess BT.709 for untagged HD) decode the colours back right.
            vs.codec_context.colorspace = 6  # AVCOL_SPC_SMPTE170M
            vs.codec_context.color_range = 1  # AVCOL_RANGE_MPEG
            if info.sample_aspect_ratio is not None:
                vs.codec_context.sample_aspect_ratio = info.sample_aspect_ratio
            self.stream = vs
            self.audio: AudioFeed | None = None
            if audio and info.audio_codec is not None:
                try:
                    self.audio = AudioFeed(info.path, self.container)
                except (av.error.FFmpegError, ValueError, OSError) as exc:
                    _logger.warning("%s: audio not copied (%s)", info.path, error_reason(exc))
        except BaseException:
            self.container.close()
            raise
        self.frames = 0

    def write(self, img: np.ndarray, pts: int, duration: int = 0) -> None:
        if img.shape[:2] != self.size:
            raise ValueError(f"frame is {img.shape[1]}x{img.shape[0]}, writer expects "
                             f"{self.size[1]}x{self.size[0]}")
        fmt = "gray" if img.ndim == 2 else "bgr24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=fmt)
        frame.pts = pts
        frame.time_base = self.time_base
        if duration > 0:
            frame.duration = duration
        if self.audio is not None:
            self.audio.feed(float(pts * self.time_base))
        for packet in self.stream.encode(frame):
            self._out(packet)
        self.frames += 1

    def _out(self, packet: av.Packet) -> None:
        if self.packets is not None:
            self.packets(packet)
        else:
            self.container.mux(packet)

    def mux_encoded(self, packet: av.Packet) -> None:
        """A packet this writer's settings encoded elsewhere (a segment), with the audio up to
        its time; the stream's codec parameters are this writer's own, which are the same."""
        if self.audio is not None and packet.pts is not None:
            self.audio.feed(float(packet.pts * self.time_base))
        packet.stream = self.stream
        self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and the rest of the audio, and finish the file."""
        for packet in self.stream.encode(None):
            self._out(packet)
        if self.audio is not None:
            self.audio.feed(None)
        self.container.close()

    def abort(self) -> None:
        """Release the files without finishing (the caller deletes the temporary output)."""
        try:
            if self.audio is not None:
                self.audio.close()
        finally:
            try:
                self.container.close()
            except Exception:  # noqa: BLE001 - the file is discarded anyway
                pass
