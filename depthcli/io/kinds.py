"""Which files are inputs, by name alone: cheap enough for the command line's first checks."""

from __future__ import annotations

import glob
from pathlib import Path

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_EXTS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm"})


def kind_of(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    return None


def has_magic(s: str) -> bool:
    return glob.has_magic(s)
