"""Video files in, through PyAV: probe, tolerant frame decoding, rotation. No torch.

Decisions:
- Frames are decoded to BGR uint8 (`bgr24`), the order cv2 and the model preprocessing expect;
  10/12-bit and HDR sources are converted by swscale with no tone mapping.
- Rotation metadata (a display matrix, as phones write) is applied to the decoded frames, in
  steps of 90 degrees, as ffmpeg's autorotate does: frames are processed and written upright, at
  the *display* size, and the output carries no rotation. Flips and non-right angles are ignored.
- A damaged packet is skipped and named (`DecodeLog`); a demuxer error ends the video there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.error
import cv2
import numpy as np

from ..errors import InputError, reason

_logger = logging.getLogger(__name__)

DEFAULT_RATE = Fraction(25)
MAX_ERROR_DETAIL = 3  # decode errors reported individually; the rest are counted


def error_reason(exc: BaseException) -> str:
    """A short one-line reason; FFmpeg errors lose their errno and call-site noise."""
    if isinstance(exc, av.error.FFmpegError) and getattr(exc, "strerror", None):
        return str(exc.strerror)
    return reason(exc)


def _decode(container: av.container.InputContainer, vs: av.video.stream.VideoStream,
            on_error: Callable[[str], None], on_stop: Callable[[str], None]
            ) -> Iterator[av.VideoFrame]:
    """Every decodable frame of `vs`; damaged packets are skipped, a demuxer error ends it."""
    try:
        for packet in container.demux(vs):
            try:
                frames = packet.decode()
            except av.error.EOFError:
                continue
            except av.error.FFmpegError as exc:
                on_error(error_reason(exc))
                continue
            yield from frames
    except av.error.FFmpegError as exc:
        on_stop(error_reason(exc))
        try:  # frames still buffered in the decoder
            yield from vs.codec_context.decode(None)
        except av.error.FFmpegError:
            pass


@dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know about a source before decoding it."""

    path: Path
    width: int  # display size, after rotation
    height: int
    rate: Fraction  # average frame rate (a guess of 25 when the container has none)
    time_base: Fraction
    frames: int  # frame count the container declares; 0 = unknown
    rotation: int  # degrees counter-clockwise applied to decoded frames (0, 90, 180, 270)
    sample_aspect_ratio: Fraction | None
    audio_codec: str | None  # first audio stream's codec, None without audio
    end_time: float | None = None  # where the video stream should end (s), when known
    max_pixels: int | None = None  # frames over this are skipped as damaged (None: no limit)

    @property
    def nominal_step(self) -> int:
        """One frame at the nominal rate, in time-base ticks (at least 1)."""
        return max(1, round(1 / (self.rate * self.time_base)))


def _open_input(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), "r")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable video ({error_reason(exc)})") from None


def _rotation_of(frame: av.VideoFrame) -> int:
    """Counter-clockwise degrees to turn a decoded frame upright (0/90/180/270)."""
    try:
        rot = getattr(frame, "rotation", 0) or 0
    except Exception:  # noqa: BLE001 - malformed side data: treat as unrotated
        return 0
    r = int(round(rot)) % 360
    if r % 90:
        _logger.warning("rotation of %d degrees is not a multiple of 90; ignored", r)
        return 0
    return r


def _check_size(path: Path, w: int, h: int, max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and w * h > max_pixels:
        raise InputError(f"{path}: {what} is {w}x{h} pixels, over the limit of {max_pixels} "
                         "(raise it with --max-pixels)")


def probe(path: Path, max_pixels: int | None = None) -> VideoInfo:
    """See `_probe`; anything unexpected a damaged file makes PyAV do is one InputError too."""
    try:
        return _probe(path, max_pixels)
    except InputError:
        raise
    except (av.error.FFmpegError, AttributeError, TypeError, ValueError, ArithmeticError,
            OSError) as exc:  # e.g. a stream whose codec PyAV does not know (no codec context)
        _logger.debug("probe failure on %s", path, exc_info=True)
        raise InputError(f"{path}: not a readable video ({error_reason(exc)})") from None


def _probe(path: Path, max_pixels: int | None = None) -> VideoInfo:
    """Open `path`, check it has a decodable video stream and at least one frame.

    A frame size over `max_pixels` declared by the stream header is refused before any frame is
    decoded (as `--max-pixels` does for images); frames that turn out larger later are skipped
    by `iter_frames`. Raises InputError (one line, starting with the path) for anything that is
    not a video.
    """
    with _open_input(path) as c:
        if not c.streams.video:
            raise InputError(f"{path}: no video stream")
        vs = c.streams.video[0]
        cc = vs.codec_context
        if cc is None:
            raise InputError(f"{path}: video stream has an unknown codec")
        if not cc.width or not cc.height:
            raise InputError(f"{path}: video stream has no frame size")
        _check_size(path, cc.width, cc.height, max_pixels, "the video's frame size")
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        rate = Fraction(rate) if rate and rate > 0 else DEFAULT_RATE
        tb = Fraction(vs.time_base) if vs.time_base else 1 / rate
        vs.thread_type = "AUTO"
        first = next(_decode(c, vs, lambda r: None, lambda r: None), None)
        if first is None:
            raise InputError(f"{path}: no decodable video frames")
        _check_size(path, first.width, first.height, max_pixels, "the first frame")
        rot = _rotation_of(first)
        w, h = first.width, first.height
        if rot in (90, 270):
            w, h = h, w
        sar = vs.sample_aspect_ratio
        sar = Fraction(sar) if sar and sar > 0 and sar != 1 else None
        if sar is not None and rot in (90, 270):
            sar = 1 / sar
        acc = c.streams.audio[0].codec_context if c.streams.audio else None
        audio = acc.name if acc is not None else None
        end: float | None = None
        if vs.duration:
            end = float(((vs.start_time or 0) + vs.duration) * tb)
        elif c.duration and len(c.streams) == 1:  # the container's length is the video's
            end = ((c.start_time or 0) + c.duration) / av.time_base
        return VideoInfo(path, w, h, rate, tb, int(vs.frames or 0), rot, sar, audio, end,
                         max_pixels)


@dataclass
class Frame:
    """One decoded source frame. `index` counts decoded frames from 0."""

    index: int
    pts: int  # in the source video stream's time base
    duration: int  # ticks, 0 = unknown
    bgr: np.ndarray  # (H, W, 3) uint8, upright, display size


@dataclass
class DecodeLog:
    """Decode problems collected while frames stream out; `lines()` gives the report."""

    path: Path
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    corrupt: list[int] = field(default_factory=list)
    corrupt_count: int = 0
    resized: int = 0
    decoded: int = 0
    declared: int = 0
    expected_end: float | None = None  # seconds
    last_end: float = 0.0  # end of the last decoded frame, seconds
    frame_s: float = 0.0  # one nominal frame, seconds
    stopped: str | None = None

    def error(self, index: int, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERROR_DETAIL:
            self.errors.append(f"frame {index}: cannot decode ({reason})")

    def lines(self) -> list[str]:
        out = list(self.errors)
        if self.error_count > len(self.errors):
            out.append(f"{self.error_count - len(self.errors)} more decode error(s)")
        if self.corrupt_count:
            shown = ", ".join(str(i) for i in self.corrupt)
            more = ", ..." if self.corrupt_count > len(self.corrupt) else ""
            out.append(f"{self.corrupt_count} frame(s) decoded with errors (frame {shown}{more})")
        if self.stopped is not None:
            out.append(f"decoding stopped after {self.decoded} frame(s), at frame {self.decoded}: "
                       f"{self.stopped}")
        elif self.declared and self.decoded < self.declared:
            out.append(f"only {self.decoded} of {self.declared} frames could be decoded; "
                       f"frames {self.decoded}-{self.declared - 1} are missing "
                       "(truncated or damaged file)")
        elif (not self.declared and self.expected_end is not None
              and self.last_end < self.expected_end - max(2 * self.frame_s, 0.1)):
            out.append(f"decoding ended at frame {self.decoded}, {self.last_end:.2f} s into a "
                       f"{self.expected_end:.2f} s stream (truncated or damaged file)")
        return out


def iter_frames(info: VideoInfo, log: DecodeLog | None = None, skip: int = 0) -> Iterator[Frame]:
    """Decode every decodable frame of `info.path` in order, upright, as BGR uint8.

    The first `skip` frames are decoded (frame numbers and the log stay those of a whole run)
    but neither converted nor yielded: a resumed video continues there.

    Damaged packets are skipped (the decoder conceals what it can) and noted in `log`; a demuxer
    error ends the stream early but keeps the frames already in the decoder.
    """
    log = log if log is not None else DecodeLog(info.path)
    log.declared = info.frames
    log.expected_end = info.end_time
    log.frame_s = float(1 / info.rate)
    size = (info.height, info.width)
    step = info.nominal_step
    last_pts: int | None = None
    index = 0

    def convert(fr: av.VideoFrame) -> Frame | None:
        nonlocal last_pts, index
        pts = fr.pts
        if pts is None:
            pts = 0 if last_pts is None else last_pts + step
            _logger.debug("%s: frame %d has no pts; using %d", info.path, index, pts)
        elif last_pts is not None and pts <= last_pts:
            _logger.debug("%s: frame %d pts %d <= %d; bumped", info.path, index, pts, last_pts)
            pts = last_pts + 1
        last_pts = pts
        if getattr(fr, "is_corrupt", False):
            log.corrupt_count += 1
            if len(log.corrupt) < MAX_ERROR_DETAIL:
                log.corrupt.append(index)
        if index < skip:
            duration = int(getattr(fr, "duration", 0) or 0)
            log.last_end = float((pts + (duration or step)) * info.time_base)
            index += 1
            log.decoded = index
            return None
        img: np.ndarray = fr.to_ndarray(format="bgr24")
        if info.rotation:
            img = np.ascontiguousarray(np.rot90(img, k=info.rotation // 90))
        if img.shape[:2] != size:  # mid-stream resolution change: keep the first frame's size
            log.resized += 1
            if log.resized == 1:
                _logger.warning("%s: frame %d is %dx%d, not %dx%d; resized", info.path, index,
                                img.shape[1], img.shape[0], size[1], size[0])
            img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        out = Frame(index, int(pts), int(getattr(fr, "duration", 0) or 0), img)
        log.last_end = float((pts + (out.duration or step)) * info.time_base)
        index += 1
        log.decoded = index
        return out

    def stopped(reason: str) -> None:
        log.stopped = reason

    with _open_input(info.path) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        for fr in _decode(c, vs, lambda r: log.error(index, r), stopped):
            if info.max_pixels is not None and fr.width * fr.height > info.max_pixels:
                log.error(index, f"frame is {fr.width}x{fr.height} pixels, over --max-pixels")
                continue  # never converted: a damaged header must not allocate gigabytes
            out = convert(fr)
            if out is not None:
                yield out


