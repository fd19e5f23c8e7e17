"""Keep the C libraries' own stderr lines out of the command's messages.

libpng, libjpeg and libtiff (inside OpenCV) and other native code write straight to file
descriptor 2 from the decoding threads, name no file, and libpng writes its message and its
newline in two separate writes. A `error: PATH: reason` line written by another thread between
the two ends up glued to `libpng error: IHDR: CRC error` and no longer starts a line: the user
(and any tool reading stderr) loses the name of a bad file. So, for a real process, fd 2 becomes
a pipe drained by a thread that logs each native line at DEBUG (shown with `-vv`), and the
command's own stream (`sys.stderr`: logging, click, tqdm) writes to a duplicate of the original
descriptor, which no native code knows about.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading

log = logging.getLogger("depthcli.native")

_installed = False


def capture_native_stderr() -> bool:
    """Route fd 2 through a line filter once per process; False where stderr is no real fd.

    Under click's CliRunner or pytest's capture `sys.stderr` is not fd 2 and nothing changes.
    """
    global _installed
    if _installed:
        return True
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if fd != 2:
        return False
    sys.stderr.flush()
    own = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr = open(own, "w", buffering=1, encoding=encoding,
                      errors="backslashreplace", closefd=True)
    if faulthandler.is_enabled():  # a crash report must still reach the user
        faulthandler.enable(file=sys.stderr)
    threading.Thread(target=_drain, args=(read_end,), name="native-stderr", daemon=True).start()
    _installed = True
    return True


def _drain(fd: int) -> None:
    """Log whole native lines; a line split over several writes is joined here."""
    pending = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                log.debug("native: %s", text)
