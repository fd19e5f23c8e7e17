"""Atomic file writes: temporary file in the destination folder, fsync, then os.replace.

A killed run can leave a `.<name>.<random>.tmp` behind, never a partial file under the final name.

A full disk or an exhausted quota (ENOSPC, EDQUOT) while writing raises `DiskFullError` after
the temporary file is removed, so the caller can stop the whole run with one message instead
of failing every remaining input the same way. A symbolic link (or other non-regular file) at
the destination is never replaced: it is not one of our outputs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import DiskFullError, UnsafeOutputError

TMP_SUFFIX = ".tmp"
PARTIAL_DIR = ".depthcli-partial"  # under -o: resumable partial videos (runs.video_resume)
_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
_FULL_TEXT = ("no space left on device", "disk quota exceeded")


def is_disk_full(exc: BaseException | None) -> bool:
    """True if `exc` or anything in its cause/context chain is ENOSPC/EDQUOT.

    Writers that wrap OS errors (PyAV, our own InputError) keep the original as the cause;
    some keep only the message, hence the text check.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFullError):
            return True
        if getattr(exc, "errno", None) in _FULL_ERRNOS:
            return True
        if any(t in str(exc).lower() for t in _FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def as_disk_full(exc: BaseException, where: str | Path) -> DiskFullError:
    """The DiskFullError in `exc`'s chain, or one made for `where` (for wrapped errors)."""
    e: BaseException | None = exc
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return e
        e = e.__cause__ or e.__context__
    return disk_full_error(Path(where), exc)


def disk_full_error(dst: Path, exc: BaseException) -> DiskFullError:
    """The one-line error that stops a run (see `is_disk_full`)."""
    why = getattr(exc, "strerror", None) or "no space left on device or quota exceeded"
    return DiskFullError(
        f"{dst}: cannot write: {why}; stopping the run (finished outputs are kept: free some "
        "space and rerun with --skip-existing to finish)")


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
    refuse_non_regular(dst)
    sfx = (suffix if suffix is not None else dst.suffix) + TMP_SUFFIX
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.{os.getpid()}.", suffix=sfx,
                                        dir=dst.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(dst, exc) from exc
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _MODE)
        refuse_non_regular(dst)  # a link planted while we wrote is not replaced either
        os.replace(tmp, dst)
    except Exception as exc:
        if not isinstance(exc, DiskFullError) and is_disk_full(exc):
            raise disk_full_error(dst, exc) from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def refuse_non_regular(dst: Path) -> None:
    """Raise UnsafeOutputError if a link or special file sits at `dst` (never ours)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        st = os.lstat(dst)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise UnsafeOutputError(f"{dst}: a symbolic link or special file is there; "
                                    "it is not replaced")


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


def publish(tmp: Path, dst: Path) -> None:
    """Give a finished temporary file or folder (same filesystem) its final name `dst`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if tmp.is_dir():
        _replace_dir(tmp, dst)
        return
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, _MODE)
    refuse_non_regular(dst)
    os.replace(tmp, dst)


def _replace_dir(tmp: Path, dst: Path) -> None:
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


@contextlib.contextmanager
def atomic_dir(dst: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `dst`; it replaces `dst` only if the block succeeds."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.{os.getpid()}.", suffix=".tmp",
                                dir=dst.parent))
    try:
        yield tmp
        _replace_dir(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
