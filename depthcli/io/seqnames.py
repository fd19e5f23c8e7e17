"""Image-sequence names: patterns (`plate.####.exr`, `plate.%04d.png`), the numbered files a
pattern or a folder holds, gaps. File names only: no decoding (`io.sequence` reads the frames),
so that discovery and the command line's checks can use it cheaply.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .kinds import IMAGE_EXTS

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


def stem_and_sep(pat: Pattern) -> tuple[str, str]:
    """`plate.` → ('plate', '.'); `shot_` → ('shot', '_'); `` → (folder name, '.')."""
    stem = pat.prefix.rstrip("._- ")
    sep = pat.prefix[len(stem):] or "."
    return (stem or pat.folder.name or "frames"), sep


def item_rel(pat: Pattern, rel_folder: Path) -> Path:
    """The path an output mapper takes for a sequence: its stem with the frames' extension,
    under the folder's mirror (a second `plate` sequence mapped to the same folder gets
    `plate.exr`, as a second image `x` does)."""
    return rel_folder / f"{stem_and_sep(pat)[0]}{Path('x' + pat.suffix).suffix or '.seq'}"


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
