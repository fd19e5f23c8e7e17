"""The accounting of one local `predict` run: its summary, error lines, progress and disk-full stop.

Shared by the image run (`runs.images`) and each video of it (`runs.video`), which report
through these methods only; a module of its own so that neither imports the other's internals.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from ..io.atomic import as_disk_full
from ..io.manifest import Manifest
from .summary import Summary
from .video_progress import FrameBars

Report = Callable[[str], None]
Progress = Callable[[int], None]


class RunState:
    """What every input of a run reports into: counts, failures, progress, the stop signal."""

    def __init__(self, report: Report, progress: Progress | None,
                 journal: Manifest | None = None, frame_bars: FrameBars | None = None) -> None:
        self.report = report  # one line each: the error lines (and the image run's others)
        self.progress: Progress = progress or (lambda n: None)
        self.summary = Summary()
        self.full = threading.Event()  # disk full / over quota: the run stops, one error line
        self._lock = threading.Lock()
        self.journal = journal  # what depthcli wrote in -o (io.manifest); None: not kept
        self.frame_bars = frame_bars  # a bar in frames per video pass; None: not shown

    def fail(self, path: str, reason: str) -> None:
        """`path` failed: counted once, and its `error: PATH: reason` line."""
        self.summary.fail(path, reason)
        self.report(f"error: {reason}" if reason.startswith(path) else f"error: {path}: {reason}")

    def error_line(self, path: str, reason: str) -> None:
        """One more line about an input already counted (e.g. a video's later decode errors)."""
        self.report(f"error: {path}: {reason}")

    def disk_full(self, exc: BaseException, where: object) -> None:
        """The first disk-full error is one line; later ones (writes in flight) are silent."""
        with self._lock:
            first = not self.full.is_set()
            self.full.set()
        if first:
            msg = str(as_disk_full(exc, str(where)))
            self.fail(msg.split(": ", 1)[0], msg)

    def skipped(self) -> None:
        """An input whose outputs all exist (--skip-existing)."""
        self.summary.add_skipped()

    def written(self, paths: list[Path] | None = None, src: Path | None = None,
                video: bool = False) -> None:
        """An input written (`paths`: its files, for --list-outputs and the journal)."""
        if self.journal is not None and paths and src is not None:
            self.journal.add(paths, src)
        self.summary.add_written(paths, video=video)

    def frames(self, n: int) -> None:
        """`n` more video frames processed."""
        self.summary.add_frames(n)
