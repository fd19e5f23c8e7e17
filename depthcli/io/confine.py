"""Keep every file a run writes inside its output folder, and name each input once.

Inputs come from folders, `.txt` lists and globs that other people wrote, so their paths can
say anything. The output tree mirrors each input's path *relative to its root* (the folder
walked, the list file's folder, the glob's fixed prefix). These pure functions make that
mirroring safe; the pipeline calls them when it maps inputs to outputs.

Placement (`safe_rel`, documented for the README):

- `.` and empty segments are dropped and `a/../b` is read as `b` (lexically: the path only
  names an output, it is never opened).
- A `..` that climbs above the input root becomes a folder named `_up`, one per level:
  `lists/l.txt` naming `../photos/p.jpg` writes `OUT/_up/photos/p.png`.
- An absolute relative path (only possible from callers other than discovery, which maps
  absolute list entries outside the list's folder to their file name) goes under `_abs/`,
  drive letters as a folder (`C:\\x\\y.jpg` -> `_abs/C/x/y.jpg`).
- To keep the mapping one-to-one, an input's own first folder literally named `_up`, `_abs`
  (or either followed only by underscores) gets one more `_`: `_up/p.jpg` -> `_up_/p.png`.
- A path with no name left (`..`, `/`) maps to `_`.

Guard rails at write time (`check_dir`, `occupied`):

- The folder an output goes into must resolve (symbolic links followed, `..` resolved) inside
  the real output folder; a subfolder of `-o` that is a link to elsewhere refuses that input
  with one error line instead of writing through it (nothing is created there either).
- An existing symbolic link (or fifo, device, socket) at an output's name is never replaced or
  written through: the input gets the next free name (`stem.ext`, `stem.ext~2`, ...), exactly as
  when two inputs want the same name. Regular files at an output's exact path are overwritten
  (a rerun replaces its own outputs, as before).

Identity (`identity`): an input's real path, links and `..` resolved (`os.path.realpath`,
case-folded where the platform folds case). `x.jpg x.jpg`, `./x.jpg` vs `x.jpg`, a folder plus a
file inside it, a list plus a glob naming the same file, and a symbolic link plus its target are
one input: the first one met (in argument order) is processed, under its own name; later ones
are counted as duplicates. Hard links stay separate inputs (separate names a user may want
mirrored). A path that does not exist is identified by its absolute normalised spelling, so a
missing file named twice is reported once.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePath

UP = "_up"
ABS = "_abs"
EMPTY = "_"
_RESERVED = re.compile(r"^_(?:up|abs)_*$", re.IGNORECASE)


def safe_rel(rel: PurePath | str) -> Path:
    """The relative place under -o for an input's mirrored path (see the module docstring).

    Deterministic, one-to-one on normalised paths, and never absolute nor containing `..`.
    """
    p = PurePath(rel)
    parts = list(p.parts)
    prefix: list[str] = []
    if p.anchor:
        parts = parts[1:]
        prefix.append(ABS)
        drive = p.drive.strip("\\/:").replace(":", "").replace("\\", "_").replace("/", "_")
        if drive:
            prefix.append(drive)
    out: list[str] = []
    ups = 0
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            elif not prefix:  # above the filesystem root `..` is the root itself
                ups += 1
            continue
        out.append(part)
    if out and _RESERVED.match(out[0]):
        out[0] += "_"
    if not out:
        out = [EMPTY]
    return Path(*prefix, *([UP] * ups), *out)


def real_root(out_dir: Path) -> Path:
    """The output folder with links and `..` resolved (it need not exist yet)."""
    return Path(os.path.realpath(out_dir))


def is_inside(root: Path, path: Path) -> bool:
    """True if `path`, resolved, is `root` (already real) or lies below it."""
    real = Path(os.path.realpath(path))
    return real == root or root in real.parents


def check_dir(root: Path, folder: Path) -> str | None:
    """None if outputs may go into `folder` (under the real -o `root`), else why not.

    `folder` may not exist yet; the deepest existing part is what links could redirect, and
    realpath resolves exactly that part.
    """
    if is_inside(root, folder):
        return None
    return (f"output folder {folder} leads outside the output folder (to "
            f"{os.path.realpath(folder)}) through a symbolic link; not written there")


def occupied(path: Path) -> bool:
    """True if something a run must not replace sits at `path`: a link or a special file."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode))


def identity(path: Path | str) -> str:
    """A canonical key for an input file: its real path (see the module docstring)."""
    return os.path.normcase(os.path.realpath(path))
