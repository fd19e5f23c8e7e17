"""Atomic file writes: temporary file in the destination folder, fsync, then os.replace.

A killed run can leave a `.<name>.<random>.tmp` behind, never a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# mkstemp/mkdtemp create 0600/0700; finished outputs get the usual umask-based modes.
_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_path(dst: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `dst`; rename it onto `dst` only if the block succeeds.

    `suffix` keeps the real extension on the temporary name for writers that pick the format
    from it (cv2, PyAV).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    sfx = (suffix if suffix is not None else dst.suffix) + TMP_SUFFIX
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.{os.getpid()}.", suffix=sfx,
                                    dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _MODE)
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(dst: Path, data: bytes) -> None:
    with atomic_path(dst) as tmp:
        tmp.write_bytes(data)


def write_with(dst: Path, writer: Callable[[Path], None]) -> None:
    """Run `writer(tmp_path)` and atomically move the result to `dst`."""
    with atomic_path(dst) as tmp:
        writer(tmp)


_TEMP_RE = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]+\.[^.]*\.tmp$|^\..+\.(\d+)\.[A-Za-z0-9_]+\.tmp$")


def temp_owner(name: str) -> int | None:
    """The pid that created one of our temporary files, or None if `name` is not one."""
    m = _TEMP_RE.match(name)
    if not m:
        return None
    return int(m.group(1) or m.group(2))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(root: Path) -> int:
    """Delete temporary files left under `root` by killed depthcli runs (dead pids only)."""
    removed = 0
    if not root.is_dir():
        return 0
    for dirpath, dirs, files in os.walk(root):
        for name in files:
            pid = temp_owner(name)
            if pid is not None and not _alive(pid):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
        for name in list(dirs):  # frame-sequence folders of killed video runs
            pid = temp_owner(name)
            if pid is not None and not _alive(pid):
                shutil.rmtree(os.path.join(dirpath, name), ignore_errors=True)
                dirs.remove(name)
                removed += 1
    return removed


@contextlib.contextmanager
def atomic_dir(dst: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `dst`; it replaces `dst` only if the block succeeds."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.{os.getpid()}.", suffix=".tmp",
                                dir=dst.parent))
    try:
        yield tmp
        old: Path | None = None
        if dst.is_dir() and not dst.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.{os.getpid()}.", suffix=".old.tmp",
                                        dir=dst.parent))
            os.replace(dst, old / "x")
        elif dst.exists() or dst.is_symlink():
            dst.unlink()
        os.chmod(tmp, _DIR_MODE)
        os.replace(tmp, dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
