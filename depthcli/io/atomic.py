"""Atomic file writes: temporary file in the destination folder, fsync, then os.replace.

A killed run can leave a `.<name>.<random>.tmp` behind, never a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"


def _file_mode() -> int:
    old = os.umask(0)
    os.umask(old)
    return 0o666 & ~old


_MODE = _file_mode()  # mkstemp creates 0600; finished outputs get the usual umask-based mode


@contextlib.contextmanager
def atomic_path(dst: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `dst`; rename it onto `dst` only if the block succeeds.

    `suffix` keeps the real extension on the temporary name for writers that pick the format
    from it (cv2, PyAV).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    sfx = (suffix if suffix is not None else dst.suffix) + TMP_SUFFIX
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=sfx, dir=dst.parent)
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


def is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)
