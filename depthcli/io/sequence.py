"""Numbered image sequences as clips: pattern parsing, gap detection, frame reading. No torch.

A sequence is named by a pattern (`plate.####.exr`: four digits, `plate.%04d.png`: printf
style, `%d`: any width) or found in a folder given with `--sequence` (each run of files
`<prefix><digits><suffix>` in one folder is one sequence). It then goes through the video
pipeline (`runs.video`) like a decoded video: `probe` gives a `SequenceInfo` (a `VideoInfo`
with the frame files) and `iter_frames` the frames in numbering order, as BGR uint8.

Decisions:
- Rate: `--fps` (default 24); the time base is 1/fps and a frame's pts is its number minus the
  first number, so a gap in the numbering is a gap in time (a video output holds the frame
  before the gap for the gap's duration).
- Gaps: missing numbers are reported (a warning naming them, the `--json` clip entry); the clip
  runs over the frames that exist, in order, as consecutive frames for a temporal model, and
  the outputs keep the input's numbers, so the gap stays a gap. A frame file that cannot be read
  is an error line of the clip (exit 1) and becomes a gap too.
- Pixels: the network takes 8-bit sRGB. 8-bit PNG/TIFF/JPEG are used as they are; 16-bit PNG/TIFF
  are reduced to their top 8 bits as cv2.imread does (what the official scripts read; the low 8
  bits are lost). Float EXR (and float TIFF) is taken as linear light: alpha dropped, clipped to
  0..1 (highlights above 1.0 and negative values are lost), encoded with the sRGB transfer
  curve and rounded to 8 bits (finer gradations than 1/255 after the curve are lost).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError, reason
from .exr import enable_exr
from .images import decode_image, read_bytes
from .seqnames import (  # noqa: F401 - re-exported
    FRAME_EXTS,
    Pattern,
    folder_patterns,
    frames_of,
    is_pattern,
    missing_ranges,
    parse_pattern,
    ranges_text,
    stem_and_sep,
)
from .video_decode import MAX_ERROR_DETAIL, DecodeLog, Frame, VideoInfo

_logger = logging.getLogger(__name__)

DEFAULT_FPS = Fraction(24)


@dataclass(frozen=True)
class SequenceInfo(VideoInfo):
    """A numbered image sequence, as the video pipeline sees a video (`path` is the pattern)."""

    pattern: Pattern | None = None
    numbers: tuple[int, ...] = ()
    files: tuple[Path, ...] = ()

    @property
    def missing(self) -> list[tuple[int, int]]:
        return missing_ranges(self.numbers)

    @property
    def first(self) -> int:
        return self.numbers[0]

    def number(self, pts: int) -> int:
        """The frame number of a frame of this clip, from its pts."""
        return self.first + int(pts)

    def describe(self) -> dict[str, object]:
        """The clip's entry of the --json summary."""
        return {"pattern": self.pattern.text() if self.pattern else str(self.path),
                "first": self.first, "last": self.numbers[-1], "frames": len(self.numbers),
                "fps": str(self.rate), "missing": [list(r) for r in self.missing]}


def _srgb8(linear: np.ndarray) -> np.ndarray:
    """Linear light → sRGB-encoded uint8 (IEC 61966-2-1 transfer curve), clipped to 0..1."""
    x = np.clip(np.nan_to_num(linear.astype(np.float32), nan=0.0), 0.0, 1.0)
    enc = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.round(enc * 255.0).astype(np.uint8)


def read_frame(path: Path, max_pixels: int) -> np.ndarray:
    """One frame file → BGR uint8 (H, W, 3), by the rules in the module docstring."""
    if path.suffix.lower() not in (".exr", ".tif", ".tiff"):
        return decode_image(read_bytes(path), path, max_pixels)
    data = read_bytes(path)
    enable_exr()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: not a decodable image")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise InputError(f"{path}: image is {img.shape[1]}x{img.shape[0]} pixels, over the limit "
                         f"of {max_pixels} (raise it with --max-pixels)")
    if img.dtype.kind != "f":  # an integer TIFF: as any image
        return decode_image(data, path, max_pixels)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 4:
        img = img[..., :3]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] != 3:
        raise InputError(f"{path}: {img.shape[2]} channels; 1, 3 or 4 expected")
    return np.ascontiguousarray(_srgb8(img))


def probe(src: Path, max_pixels: int | None, fps: Fraction | None = None) -> SequenceInfo:
    """The sequence a pattern names: its frame files, numbers, gaps and frame size."""
    pat = parse_pattern(str(src))
    if pat is None:
        raise InputError(f"{src}: not a sequence pattern (use name.####.ext or name.%04d.ext)")
    frames = frames_of(pat)
    if not frames:
        raise InputError(f"{src}: the pattern matches no frame files")
    limit = max_pixels if max_pixels is not None else 1 << 62
    size = None
    for _, p in frames:
        try:
            img = read_frame(p, limit)
        except InputError:
            continue  # reported when the frames are read
        size = img.shape[:2]
        break
    if size is None:
        raise InputError(f"{src}: no readable frame among {len(frames)} file(s)")
    rate = fps if fps is not None else DEFAULT_FPS
    numbers = tuple(n for n, _ in frames)
    info = SequenceInfo(path=Path(src), width=size[1], height=size[0], rate=rate,
                        time_base=1 / rate, frames=len(frames), rotation=0,
                        sample_aspect_ratio=None, audio_codec=None, end_time=None,
                        max_pixels=max_pixels, pattern=pat, numbers=numbers,
                        files=tuple(p for _, p in frames))
    gaps = info.missing
    _logger.info("%s: sequence of %d frame(s), %d-%d, at %s fps", pat.text(), len(numbers),
                 numbers[0], numbers[-1], rate)
    if gaps:
        n = sum(b - a + 1 for a, b in gaps)
        _logger.warning("%s: %d frame(s) missing from the numbering (%s); the frames on each side "
                        "are processed as neighbours and the outputs keep the gap", pat.text(),
                        n, ranges_text(gaps))
    return info


def iter_frames(info: SequenceInfo, log: DecodeLog | None = None,
                skip: int = 0) -> Iterator[Frame]:
    """The sequence's readable frames in order (index: readable frames counted from 0, pts: the
    frame number minus the first), skipping the first `skip` readable ones. An unreadable file
    is an error line in `log` and left out."""
    log = log if log is not None else DecodeLog(info.path)
    size = (info.height, info.width)
    limit = info.max_pixels if info.max_pixels is not None else 1 << 62
    index = 0
    for k, (num, path) in enumerate(zip(info.numbers, info.files, strict=True)):
        try:
            img = read_frame(path, limit)
        except InputError as exc:
            log.error_count += 1
            if len(log.errors) < MAX_ERROR_DETAIL:
                log.errors.append(f"frame {num}: {reason(exc).removeprefix(f'{path}: ')}; "
                                  "left out (a gap)")
            continue
        if img.shape[:2] != size:
            log.resized += 1
            if log.resized == 1:
                _logger.warning("%s: frame %d is %dx%d, not %dx%d; resized", info.path, num,
                                img.shape[1], img.shape[0], size[1], size[0])
            img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        nxt = info.numbers[k + 1] if k + 1 < len(info.numbers) else num + 1
        if index >= skip:
            yield Frame(index, num - info.first, nxt - num, img)
        index += 1
        log.decoded = index
