"""Where each input's outputs go under `-o`, and whether they are already there."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import UnsafeOutputError
from ..io import confine, images
from ..io.images import InputItem
from ..io.manifest import Manifest


class OutputMapper:
    """Map input items to output stem paths under -o; two inputs never get the same stem.

    The first claimant of `OUT/rel/stem` gets it; a later one (x.png beside x.jpg, or the same
    relative path from two roots) gets `stem.ext`, then `stem.ext~N`. Discovery order is
    deterministic, so reruns map the same way (which `--skip-existing` relies on). When the
    output folder overlaps an input folder, stems get a `_depth` tag so that outputs do not
    shadow inputs, and an output path equal to its own input is never used.
    Confinement (`depthcli.io.confine`): `rel` is made safe (`..` -> `_up/`), a folder that
    resolves outside -o is refused (UnsafeOutputError), and a name held by a link or special
    file is passed over like a claimed one.
    """

    def __init__(self, out_dir: Path, suffixes: tuple[str, ...], tag: str = "") -> None:
        self.out_dir = out_dir
        self.suffixes = suffixes
        self.tag = tag
        self._claimed: set[str] = set()
        self._root = confine.real_root(out_dir)

    def base(self, item: InputItem) -> Path:
        rel = confine.safe_rel(item.rel)
        why = confine.check_dir(self._root, self.out_dir / rel.parent)
        if why is not None:
            raise UnsafeOutputError(f"{item.src}: {why}")
        stem = rel.with_suffix("").name
        names = [stem + self.tag, rel.name + self.tag]
        n = 2
        while True:
            for name in names:
                base = self.out_dir / rel.parent / name
                key = str(base).casefold()
                if (key not in self._claimed and not self._is_input(base, item.src)
                        and not any(confine.occupied(base.parent / (base.name + s))
                                    for s in self.suffixes)):
                    self._claimed.add(key)
                    return base
            names = [f"{rel.name}~{n}{self.tag}"]
            n += 1

    def _is_input(self, base: Path, src: Path) -> bool:
        try:
            real = src.resolve()
            return any((base.parent / (base.name + s)).resolve() == real for s in self.suffixes)
        except OSError:
            return False


def overlaps(out_dir: Path, args: tuple[str, ...]) -> bool:
    """True if outputs could land among inputs: -o equal to the folder of an input file, or
    equal to / inside a folder or glob root that is walked."""
    try:
        out = out_dir.resolve()
        for a in args:
            p = Path(a)
            if p.is_dir() or (images.has_magic(a) and not p.exists()):
                root = (p if p.is_dir() else images.glob_root(a)).resolve()
                if out == root or root in out.parents:
                    return True
            elif out == p.resolve().parent:
                return True
    except OSError:
        return False
    return False


def foreign_files(paths: Iterable[Path], src: Path, journal: Manifest) -> list[Path]:
    """Existing files at `paths` that are not depthcli's recorded outputs of `src`.

    Such a file (a user's own `out/x.png`, an output of another input, or an output of a run
    from before the journal) is named in a warning before it is replaced, or, with
    `--no-clobber`, not replaced at all.
    """
    return [p for p in paths if os.path.lexists(p) and not journal.is_output_of(p, src)]


def output_exists(path: Path) -> bool:
    """A finished output is present: a non-empty file, or a frame folder.

    Every output is written under a temporary name and renamed when complete, so existence
    means complete.
    """
    try:
        return path.is_dir() or (path.is_file() and path.stat().st_size > 0)
    except OSError:
        return False
