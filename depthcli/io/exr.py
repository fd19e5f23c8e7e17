"""OpenCV's EXR codec, which it keeps off unless asked (a past security stance of OpenCV's).

OpenCV reads `OPENCV_IO_ENABLE_OPENEXR` once, at its first EXR encode or decode, so the switch
is set right before depthcli's own EXR calls (EXR outputs, EXR frames of an image sequence)
rather than in the environment of every program that imports depthcli.
"""

from __future__ import annotations

import os


def enable_exr() -> None:
    """Let OpenCV encode and decode EXR from here on (a user's own setting is kept)."""
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
