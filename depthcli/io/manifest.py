"""What depthcli wrote in an output folder, so that reruns never take their outputs as inputs.

Every `predict` run records its outputs in a hidden journal at the root of `-o`,
`.depthcli-outputs` (one JSON line per output: its path and its input's path, both relative to
that folder). The journal is also the marker of a depthcli output folder:

- discovery (folders and globs) never enters the run's own `-o`, and never takes a file that
  the journal of its folder or of a folder above records as an output (a folder can hold
  inputs and outputs: `-o` equal to an input folder), so
  `depthcli predict .` with `-o` inside (or equal to) the input folder does the same on every
  rerun, with no `depth_out/depth_out/...` and no `x_depth_depth.png`;
- before an output replaces an existing file, the run asks the journal whether that file is
  depthcli's output of the same input; anything else (a user's own `out/x.png`) is named in a
  warning, or refused with `--no-clobber`.

Lines are appended with one `os.write` on an O_APPEND descriptor as each output is complete, so
a killed run loses at most the lines of outputs in flight (a torn last line is ignored). A
journal that has grown to more than twice its distinct entries is rewritten atomically when a
run ends. The journal is never written through a symbolic link.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from ..version import __version__
from . import confine

_logger = logging.getLogger(__name__)

MARKER = ".depthcli-outputs"
_COMPACT_MIN_LINES = 256


def _real(path: Path | str) -> str:
    return os.path.normcase(os.path.realpath(path))


class Manifest:
    """The journal of one output folder: output path → the input it was made from."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.real = _real(root)
        self.entries: dict[str, str] = {}
        self._lines = 0
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._broken = False
        self._read()

    @property
    def path(self) -> Path:
        return self.root / MARKER

    def _read(self) -> None:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    self._lines += 1
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a torn last line from a killed run
                    if isinstance(rec, dict) and isinstance(rec.get("o"), str):
                        self.entries[rec["o"]] = str(rec.get("s", ""))
        except OSError:
            pass

    def rel(self, path: Path | str) -> str | None:
        """`path` relative to this folder (links in its folders resolved), or None if outside."""
        p = Path(path)
        full = os.path.join(_real(p.parent), os.path.normcase(p.name))
        rel = os.path.relpath(full, self.real)
        if rel == os.curdir or rel.startswith(os.pardir + os.sep) or rel == os.pardir:
            return None
        return rel.replace(os.sep, "/")

    def _src(self, src: Path | str) -> str:
        return os.path.relpath(_real(src), self.real).replace(os.sep, "/")

    def records(self, path: Path | str) -> bool:
        """True if the journal names `path` as an output (of any input)."""
        rel = self.rel(path)
        return rel is not None and rel in self.entries

    def is_output_of(self, path: Path | str, src: Path | str) -> bool:
        rel = self.rel(path)
        return rel is not None and self.entries.get(rel) == self._src(src)

    def add(self, paths: Iterable[Path | str], src: Path | str) -> None:
        """Record finished outputs of `src` (called by writer threads)."""
        s = self._src(src)
        lines = []
        with self._lock:
            for p in paths:
                rel = self.rel(p)
                if rel is None:
                    continue
                self.entries[rel] = s
                lines.append(json.dumps({"o": rel, "s": s}, ensure_ascii=False) + "\n")
            if lines and not self._broken:
                self._append("".join(lines))

    def _append(self, text: str) -> None:
        try:
            if self._fd is None:
                if confine.occupied(self.path):
                    raise OSError(f"{self.path} is not a regular file")
                new = not self.path.exists()
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                self._fd = os.open(self.path, flags, 0o644)
                if new:
                    text = json.dumps({"depthcli": __version__, "journal": "outputs"}) + "\n" + text
            os.write(self._fd, text.encode("utf-8"))
            self._lines += text.count("\n")
        except OSError as exc:
            self._broken = True
            _logger.warning("cannot record outputs in %s (%s); a rerun may warn about them",
                            self.path, exc.strerror or exc)

    def close(self) -> None:
        """Close the journal; rewrite it when mostly repeated lines (many reruns)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._broken or self._lines < max(_COMPACT_MIN_LINES, 2 * len(self.entries) + 2):
                return
            from .atomic import write_bytes

            head = json.dumps({"depthcli": __version__, "journal": "outputs"}) + "\n"
            body = "".join(json.dumps({"o": o, "s": s}, ensure_ascii=False) + "\n"
                           for o, s in self.entries.items())
            try:
                write_bytes(self.path, (head + body).encode("utf-8"))
                self._lines = len(self.entries) + 1
            except OSError as exc:
                _logger.info("journal %s not compacted: %s", self.path, exc)


class OutputFolders:
    """What discovery must leave out: the run's own `-o` and every depthcli output folder.

    Manifests are looked up once per folder (one `stat` for the marker) and cached.
    """

    def __init__(self, out_dir: Path | None = None, own: Manifest | None = None) -> None:
        self.out_real = _real(out_dir) if out_dir is not None else None
        self._cache: dict[str, Manifest | None] = {}
        self._chains: dict[str, list[Manifest]] = {}
        if own is not None:
            self._cache[own.real] = own

    def manifest(self, real_dir: str) -> Manifest | None:
        if real_dir not in self._cache:
            has = os.path.isfile(os.path.join(real_dir, MARKER))
            self._cache[real_dir] = Manifest(Path(real_dir)) if has else None
        return self._cache[real_dir]

    def skip_dir(self, folder: Path) -> bool:
        """A folder below a walked root that is the run's own `-o` (not entered).

        Other output folders are walked: their journals leave out what depthcli wrote, and
        keep what else is there (with `-o` equal to an input folder, the inputs).
        """
        return self.out_real is not None and _real(folder) == self.out_real

    def is_output(self, path: Path) -> bool:
        """True if the journal of `path`'s folder or of a folder above records it."""
        return any(m.records(path) for m in self._chain(str(path.parent)))

    def _chain(self, folder: str) -> list[Manifest]:
        """The manifests of `folder` and of every folder above it (cached per folder)."""
        if folder not in self._chains:
            found, d = [], _real(folder)
            while True:
                m = self.manifest(d)
                if m is not None:
                    found.append(m)
                up = os.path.dirname(d)
                if up == d:
                    break
                d = up
            self._chains[folder] = found
        return self._chains[folder]
