"""Numbered image sequences as clips: pattern parsing, gap detection, frame reading. No torch.

A sequence is named by a pattern (`plate.####.exr`: four digits, `plate.%04d.png`: printf
style, `%d`: any width) or found in a folder given with `--sequence` (each run of files
`<prefix><digits><suffix>` in one folder is one sequence). It then goes through the video
pipeline (`runners.video`) like a decoded video: `probe` gives a `SequenceInfo` (a `VideoInfo`
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
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError, reason
from .images import decode_image, read_bytes
from .kinds import IMAGE_EXTS
from .video import MAX_ERROR_DETAIL, DecodeLog, Frame, VideoInfo

_logger = logging.getLogger(__name__)

DEFAULT_FPS = Fraction(24)
FRAME_EXTS = IMAGE_EXTS | {".exr"}
_HASHES = re.compile(r"#+")
_PRINTF = re.compile(r"%(0?)(\d*)d")
_NUMBERED = re.compile(r"^(.*?)(\d+)([^\d]*)$")  # prefix, the last run of digits, suffix


@dataclass(frozen=True)
class Pattern:
    """A parsed pattern: `folder/prefix<number>suffix`, `width` digits (0: any width)."""

    folder: Path
    prefix: str
    suffix: str
    width: int  # padded width; 0 for %d (no padding)

    def name(self, number: int) -> str:
        return f"{self.prefix}{number:0{self.width}d}{self.suffix}"

    def text(self) -> str:
        """The pattern in `####` form, as shown to the user."""
        return str(self.folder / f"{self.prefix}{'#' * max(1, self.width)}{self.suffix}")

    def number_of(self, file_name: str) -> int | None:
        if not (file_name.startswith(self.prefix) and file_name.endswith(self.suffix)):
            return None
        digits = file_name[len(self.prefix):len(file_name) - len(self.suffix)]
        if not digits.isdigit():
            return None
        if self.width and len(digits) != self.width and (len(digits) < self.width
                                                         or digits[0] == "0"):
            return None  # #### takes 1001 and 10000, not 001 nor 01001
        if not self.width and len(digits) > 1 and digits[0] == "0":
            return None
        return int(digits)


def parse_pattern(text: str) -> Pattern | None:
    """`plate.####.exr` / `plate.%04d.png` / `plate.%d.png` → Pattern; None if not a pattern."""
    p = Path(text)
    name = p.name
    if Path(name).suffix.lower() not in FRAME_EXTS:
        return None
    hashes = list(_HASHES.finditer(name))
    printf = list(_PRINTF.finditer(name))
    if len(hashes) + len(printf) != 1:
        return None
    if hashes:
        m = hashes[0]
        width = len(m.group(0))
    else:
        m = printf[0]
        width = int(m.group(2) or 0)
        if m.group(1) == "" and width:  # %4d: space padding, not a file-name convention
            return None
    return Pattern(p.parent, name[:m.start()], name[m.end():], width)


def is_pattern(text: str | Path) -> bool:
    return parse_pattern(str(text)) is not None


def folder_patterns(folder: Path) -> list[Pattern]:
    """The sequences in one folder (`--sequence`): files `<prefix><digits><suffix>` of a frame
    extension grouped by prefix and suffix, in name order. Width: the digits' count when every
    file of the group has the same count, else 0 (any)."""
    groups: dict[tuple[str, str], set[int]] = {}
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file())
    except OSError as exc:
        raise InputError(f"{folder}: cannot list folder ({exc.strerror or exc})") from None
    for n in names:
        if n.startswith(".") or Path(n).suffix.lower() not in FRAME_EXTS:
            continue
        stem, ext = n[: -len(Path(n).suffix)], Path(n).suffix
        m = _NUMBERED.match(stem)
        if m is None:
            continue
        groups.setdefault((m.group(1), m.group(3) + ext), set()).add(len(m.group(2)))
    out = []
    for (prefix, suffix), widths in groups.items():
        width = widths.pop() if len(widths) == 1 else 0
        out.append(Pattern(folder, prefix, suffix, width))
    return out


def frames_of(pat: Pattern) -> list[tuple[int, Path]]:
    """(number, path) of every file the pattern matches, by number."""
    try:
        names = [e.name for e in os.scandir(pat.folder) if e.is_file()]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InputError(f"{pat.text()}: cannot list {pat.folder} ({exc.strerror or exc})") \
            from None
    found: dict[int, Path] = {}
    for n in names:
        num = pat.number_of(n)
        if num is not None and (num not in found or n < found[num].name):
            found[num] = pat.folder / n
    return sorted(found.items())


def missing_ranges(numbers: list[int] | tuple[int, ...]) -> list[tuple[int, int]]:
    """The gaps in a sorted numbering, as inclusive (first, last) ranges."""
    return [(a + 1, b - 1) for a, b in zip(numbers, numbers[1:], strict=False) if b - a > 1]


def ranges_text(ranges: list[tuple[int, int]], limit: int = 5) -> str:
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in ranges[:limit]]
    return ", ".join(parts) + (", ..." if len(ranges) > limit else "")


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


def is_sequence(info: VideoInfo) -> bool:
    return isinstance(info, SequenceInfo)


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


def stem_and_sep(pat: Pattern) -> tuple[str, str]:
    """`plate.` → ('plate', '.'); `shot_` → ('shot', '_'); `` → (folder name, '.')."""
    stem = pat.prefix.rstrip("._- ")
    sep = pat.prefix[len(stem):] or "."
    return (stem or pat.folder.name or "frames"), sep


def item_rel(pat: Pattern, rel_folder: Path) -> Path:
    """The path an output mapper takes for a sequence (its stem, under the folder's mirror)."""
    return rel_folder / f"{stem_and_sep(pat)[0]}.seq"


def folder_sequences(root: Path, skip_dir: Callable[[Path], bool] = lambda p: False
                     ) -> Iterator[tuple[Pattern, Path]]:
    """(pattern, folder relative to root) of every sequence under `root` (`--sequence`):
    depth first, sorted, symbolic links to folders not followed, hidden folders and those
    `skip_dir` names (the run's output folder) left out."""
    stack = [root]
    while stack:
        d = stack.pop()
        for pat in folder_patterns(d):
            yield pat, d.relative_to(root)
        try:
            subs = sorted(e.path for e in os.scandir(d)
                          if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
                          and not skip_dir(Path(e.path)))
        except OSError:
            subs = []
        stack.extend(Path(s) for s in reversed(subs))
