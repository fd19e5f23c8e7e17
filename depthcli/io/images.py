"""Input discovery (files, folders, .txt lists, globs), decoding, and output path mapping.

Discovery is a generator: a 100k-file tree starts producing work at once and memory stays flat
(one directory listing at a time, plus the set of claimed output paths and of inputs seen).
Each input file is yielded once, however many arguments name it (`confine.identity`).
"""

from __future__ import annotations

import glob
import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from . import confine
from .atomic import PARTIAL_DIR
from .kinds import IMAGE_EXTS, VIDEO_EXTS, has_magic, kind_of  # noqa: F401 - re-exported
from .manifest import MARKER, OutputFolders

_logger = logging.getLogger(__name__)

# Pillow's own hard "decompression bomb" threshold (2 x 89,478,485 px, ~13.4k x 13.4k): up to it
# the header check below always knows the size; a larger --max-pixels falls back on the decoder.
DEFAULT_MAX_PIXELS = 178_956_970
_OVER_PIL_LIMIT = (-1, -1)


@dataclass(frozen=True)
class InputItem:
    """One file to process; `rel` is its path relative to the input root (mirrored under -o)."""

    src: Path
    rel: Path
    kind: str  # "image" | "video"


@dataclass
class Discovery:
    """Counters that discovery fills in as it streams (skipped non-images, bad arguments).

    `exclude` says which folders and files are depthcli outputs (`io.manifest`): folder walks
    and globs leave them out; files named one by one (arguments, list lines) are taken as given.
    """

    skipped_other: int = 0
    errors: list[tuple[str, str]] | None = None
    exclude: OutputFolders | None = None
    outputs_left_out: int = 0  # depthcli outputs met by walks and globs (never inputs)
    quiet: bool = False  # a second walk (counting, peeking): the run's own walk logs
    sequence: bool = False  # --sequence: a folder's numbered frames are clips (io.sequence)

    def __post_init__(self) -> None:
        self.errors = []
        if self.exclude is None:
            self.exclude = OutputFolders()

    def left_out(self, path: Path) -> bool:
        """True for a file a walk or glob must not take: a recorded depthcli output."""
        assert self.exclude is not None
        if path.name == MARKER or self.exclude.is_output(path):
            self.outputs_left_out += 1
            _logger.debug("%s: a depthcli output; not an input", path)
            return True
        return False

    def other(self, path: Path) -> None:
        """A file that is neither an image nor a video: counted, and named with -v."""
        self.skipped_other += 1
        if not self.quiet:
            _logger.info("%s: not an image or video file; skipped", path)


def _walk(root: Path, state: Discovery) -> Iterator[InputItem]:
    """Depth-first, sorted, one listing at a time; symlinked dirs are not followed (no loops).

    The run's own `-o` is not entered; outputs recorded in a journal (`io.manifest`) of the
    folder walked or of one above are left out.
    """
    assert state.exclude is not None
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            assert state.errors is not None
            state.errors.append((str(d), f"cannot list folder: {exc.strerror or exc}"))
            continue
        subdirs = []
        for e in entries:
            p = Path(e.path)
            if e.name.startswith(".") and e.name.endswith(".tmp") or e.name == PARTIAL_DIR:
                continue  # our own leftovers from a killed run, partial videos
            try:
                if e.is_dir(follow_symlinks=False):
                    if state.exclude.skip_dir(p):
                        _logger.debug("%s: the output folder; not walked", p)
                    else:
                        subdirs.append(p)
                    continue
            except OSError:
                pass
            if state.left_out(p):
                continue
            k = kind_of(p)
            if k is None:
                state.other(p)
                continue
            yield InputItem(p, p.relative_to(root), k)
        stack.extend(reversed(subdirs))


def glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def discover(args: Iterable[str | Path], state: Discovery) -> Iterator[InputItem]:
    """Expand CLI arguments into input items, streaming, each real file once (see `_expand`)."""
    seen: set[str] = set()
    for item in _expand(args, state):
        key = confine.identity(item.src)
        if key in seen:
            if not state.quiet:
                _logger.info("%s: named more than once; processed once", item.src)
            continue
        seen.add(key)
        yield item


def _expand(args: Iterable[str | Path], state: Discovery) -> Iterator[InputItem]:
    """Expand CLI arguments into input items, streaming.

    - a directory: recursive, extension allow-list (case-insensitive), others counted and skipped;
    - a `.txt` file: one path per line relative to the list file; blank lines and `#` ignored;
    - a pattern with * ? [: glob (recursive `**` allowed), mirrored from its fixed prefix;
    - any other path: taken as given (a missing one is reported as an error).
    """
    for arg in args:
        s = str(arg)
        p = Path(s)
        if (state.sequence and p.is_dir()) or (not p.exists() and _is_pattern(s)):
            yield from _sequences(s, state)
        elif p.is_dir():
            n = 0
            for item in _walk(p, state):
                n += 1
                yield item
            if n == 0:
                assert state.errors is not None
                state.errors.append((s, "folder holds no image or video files"))
        elif p.suffix.lower() == ".txt" and p.is_file():
            yield from _from_list(p, state)
        elif not p.exists() and not p.is_symlink() and has_magic(s):
            root = glob_root(s)
            hits = 0
            for hit in sorted(glob.iglob(s, recursive=True)):
                hp = Path(hit)
                if hp.is_dir() or state.left_out(hp):
                    continue
                k = kind_of(hp)
                if k is None:
                    state.other(hp)
                    continue
                hits += 1
                yield InputItem(hp, _rel(hp, root), k)
            if hits == 0:
                assert state.errors is not None
                state.errors.append((s, "pattern matched no image or video files"))
        else:
            yield InputItem(p, Path(p.name), kind_of(p) or "image")


def _is_pattern(s: str) -> bool:
    from .seqnames import is_pattern

    return is_pattern(s)


def _sequences(arg: str, state: Discovery) -> Iterator[InputItem]:
    """A sequence pattern, or (`--sequence`) every numbered frame run under a folder, as clips
    (kind "video": they go through the video pipeline; `io.sequence`)."""
    from .seqnames import folder_sequences, item_rel, parse_pattern

    assert state.errors is not None and state.exclude is not None
    p = Path(arg)
    if not p.is_dir():
        pat = parse_pattern(arg)
        assert pat is not None
        yield InputItem(Path(pat.text()), item_rel(pat, Path()), "video")
        return
    n = 0
    for pat, rel in folder_sequences(p, state.exclude.skip_dir):
        first = next((f for f in sorted(pat.folder.iterdir()) if pat.number_of(f.name) is not None),
                     None)
        if first is not None and state.left_out(first):
            continue  # depthcli's own outputs (e.g. an earlier run's plate_depth.####.exr)
        n += 1
        yield InputItem(Path(pat.text()), item_rel(pat, rel), "video")
    if n == 0:
        state.errors.append((arg, "folder holds no numbered frame files (--sequence)"))


def _rel(p: Path, root: Path) -> Path:
    try:
        return p.relative_to(root)
    except ValueError:
        return Path(p.name)


def _from_list(list_file: Path, state: Discovery) -> Iterator[InputItem]:
    base = list_file.parent
    try:
        f = open(list_file, encoding="utf-8")
    except OSError as exc:
        assert state.errors is not None
        state.errors.append((str(list_file), f"cannot read list: {exc.strerror or exc}"))
        return
    with f:
        for line in f:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            p = Path(entry).expanduser()
            if not p.is_absolute():
                p = base / p
            if p.is_dir():
                yield from _walk(p, state)
                continue
            yield InputItem(p, _rel(p, base), kind_of(p) or "image")


# ---------------------------------------------------------------- decoding


def _describe_os_error(exc: OSError) -> str:
    return exc.strerror or str(exc)


def is_uri(path: str | Path) -> bool:
    """True for `scheme://...` inputs (read through fsspec); only a `str` can be one, since a
    `Path` folds the `//`."""
    text = str(path)
    return isinstance(path, str) and "://" in text and not text.startswith("file:///dev/")


def read_bytes(path: str | Path) -> bytes:
    """Read a file (or an fsspec URI), turning failures into one-line InputErrors.

    The one reader of input files for both engines: the local run's loader threads and the
    Ray read tasks (`runs.ray_stages.read_stage`) give the same error lines by construction.
    """
    uri = is_uri(path)
    if not uri:
        path = Path(path)
        if path.is_symlink() and not path.exists():
            raise InputError(f"{path}: dangling symbolic link")
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a directory")
    try:
        data = _read_uri(str(path)) if uri else Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({_describe_os_error(exc)})") from None
    if not data:
        raise InputError(f"{path}: empty file")
    return data


def _read_uri(uri: str) -> bytes:
    import fsspec

    with fsspec.open(uri, "rb") as f:
        return bytes(f.read())


# JPEG puts its frame header after the EXIF block (up to 64 KB) and other app segments
HEADER_BYTES = 1 << 18


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of a local image file from its first bytes, without decoding it; None
    when they do not tell (unknown format, unreadable, a URI)."""
    if is_uri(path):
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(HEADER_BYTES)
    except OSError:
        return None
    size = _header_size(data, DEFAULT_MAX_PIXELS)
    return None if size is None or size == _OVER_PIL_LIMIT or min(size) <= 0 else size


def _header_size(data: bytes, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) from the header alone (PIL opens lazily), or None if PIL can't tell."""
    import io
    import struct

    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])  # readable even when the rest is cut off
        return int(w), int(h)

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb and corrupt-EXIF warnings: we decide below
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError:
        return _OVER_PIL_LIMIT if max_pixels <= DEFAULT_MAX_PIXELS else None
    except Exception:  # noqa: BLE001 - unknown header: let the decoder judge
        return None


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand one input byte to more than ~1032 bytes


def _png_chunk_overrun(data: bytes) -> bool:
    """True if a PNG chunk claims more bytes than the file has left.

    OpenCV's PNG reader allocates a chunk's declared length before reading it: one flipped bit
    in a length field of a 1 kB file costs 2 GB and seconds. Such a file is truncated or
    corrupt whatever the decoder would make of it, so it is refused up front.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    at, n = 8, len(data)
    while at + 8 <= n:
        length = int.from_bytes(data[at:at + 4], "big")
        if at + 12 + length > n:
            return True
        if data[at + 4:at + 8] == b"IEND":
            return False
        at += 12 + length
    return False


def _min_bytes(data: bytes, w: int, h: int) -> int:
    """A lower bound on the file size a complete image of w x h needs (0: no bound known).

    A few hundred bytes claiming 10000 x 10000 pixels are certainly truncated or forged; the
    bound refuses them before the decoder allocates (and touches) gigabytes for them. Exact
    bounds only: PNG (deflate's maximal ratio over the raw rows) and baseline JPEG (at least
    two Huffman bits per 8x8 luma block).
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 26:
        depth, ctype = data[24], data[25]
        bits = max(1, depth) * _PNG_CHANNELS.get(ctype, 1)
        raw = h * (1 + (w * bits + 7) // 8)
        return raw // _DEFLATE_MAX_RATIO
    if data[:2] == b"\xff\xd8":
        i = data.find(b"\xff\xc0")
        j = data.find(b"\xff\xc1")
        if i < 0 and j < 0:
            return 0  # progressive / arithmetic: EOB runs make tiny files possible
        blocks = ((w + 7) // 8) * ((h + 7) // 8)
        return blocks * 2 // 8
    return 0


def decode_image(data: bytes, path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode to BGR uint8 (H, W, 3) as cv2.imread does (EXIF orientation applied, alpha dropped).

    The pixel count is checked from the header first, so a 100000x100000 PNG is refused
    before anything is allocated.
    """
    size = _header_size(data, max_pixels)
    if size == _OVER_PIL_LIMIT:
        raise InputError(f"{path}: image is over the limit of {max_pixels} pixels "
                         "(raise it with --max-pixels)")
    if size is not None and size[0] * size[1] > max_pixels:
        raise InputError(
            f"{path}: image is {size[0]}x{size[1]} pixels, over the limit of {max_pixels} "
            "(raise it with --max-pixels)"
        )
    if _png_chunk_overrun(data):
        raise InputError(f"{path}: truncated or corrupt image (a PNG chunk runs past the end "
                         "of the file)")
    if size is not None and len(data) < _min_bytes(data, size[0], size[1]):
        raise InputError(f"{path}: truncated or corrupt image (the header says {size[0]}x"
                         f"{size[1]} pixels, far more than {len(data)} bytes can hold)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        reason = "truncated or corrupt image" if size is not None else "not a decodable image"
        raise InputError(f"{path}: {reason}")
    if img.ndim != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise InputError(f"{path}: decoded to an unusable shape {img.shape}")
    return img


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and decode one image file (or URI) to BGR uint8, or raise InputError naming it."""
    return decode_image(read_bytes(path), path, max_pixels)
