"""Advisory locks between depthcli processes that share a runtime cache.

A conversion costs seconds to minutes; two processes converting the same checkpoint at once
(a run started while the background conversion of the previous one is still going) would
each pay it. `flock` locks are released by the kernel when their holder exits, however it
exits, so a crashed converter never leaves a stale lock behind. Where `fcntl` is missing
(Windows) the locks are no-ops: processes then build side by side, as the cache's atomic
publish already allows.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


@contextlib.contextmanager
def exclusive(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold the lock at `path` for the block: yields True once held; with `wait=False` yields
    False at once when another process holds it (the block then runs without it)."""
    if fcntl is None:
        yield True
        return
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def held_elsewhere(path: Path) -> bool:
    """Whether another process holds the lock at `path` right now."""
    if fcntl is None or not path.exists():
        return False
    with exclusive(path, wait=False) as got:
        return not got


def wait_until(done: Callable[[], bool], limit: float, every: float = 0.2) -> bool:
    """Poll `done()` every `every` seconds: True once it is, False when `limit` passed first
    (a hung peer must not hang this process)."""
    end = time.monotonic() + limit
    while not done():
        if time.monotonic() > end:
            return False
        time.sleep(every)
    return True
