"""The one tally of a `predict` run: its summary, error lines, progress, journal, disk-full stop.

Both engines report into it through these methods only: the planner (`runs.plan`), the local
image and video strategies (`runs.local`) and the Ray driver's result rows (`runs.ray`). What
an image or a video outcome means for the counts and the lines is decided here, once, so the
engines' summaries and error lines are equal by construction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import DepthCliError, strip_path
from ..io.atomic import as_disk_full
from ..io.manifest import Manifest
from .summary import Summary
from .video_progress import FrameBars

Report = Callable[[str], None]
Progress = Callable[[int], None]


def video_reason(exc: BaseException, src: Path | str) -> str:
    """The one-line reason a video could not be processed (either engine, same words)."""
    if isinstance(exc, DepthCliError):
        text = str(exc) or type(exc).__name__
    else:  # a damaged file must cost one line, not the run
        text = f"cannot process video ({type(exc).__name__}: {exc})"
    return strip_path(text, str(src))


class Tally:
    """What every input of a run reports into: counts, failures, progress, the stop signal."""

    def __init__(self, report: Report, progress: Progress | None,
                 journal: Manifest | None = None, frame_bars: FrameBars | None = None) -> None:
        self.report = report  # one line each: the error lines (and the image run's others)
        self.progress: Progress = progress or (lambda n: None)
        self.summary = Summary()
        self.full = threading.Event()  # disk full / over quota: the run stops, one error line
        self.stop = threading.Event()  # Ctrl-C: no new input starts (runs.predict)
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

    def clip(self, src: Path | str, row: dict[str, object]) -> None:
        """What a clip has to say (a sequence's numbering, its scene cuts), for the summary."""
        self.summary.add_clip({"path": str(src), **row})

    def input_failed(self, src: Path | str, reason: str) -> None:
        """An image or video that failed as a whole: one line (a reason that starts with the
        path does not repeat it), one more input done."""
        self.fail(str(src), strip_path(reason, str(src)))
        self.progress(1)

    def image_written(self, src: Path | str, paths: list[Path],
                      extras: dict[str, object] | None = None) -> None:
        """An image's outputs written; `extras`: Depth Anything 3's camera facts for --json."""
        self.summary.add_camera(str(src), extras)
        self.written(paths, Path(src))
        self.progress(1)

    def video_done(self, src: Path | str, *, frames: int = 0, written: bool = False,
                   skipped: bool = False, errors: Sequence[str] = (),
                   paths: list[Path] | None = None, clip: dict[str, object] | None = None,
                   ) -> None:
        """A video's report (`runs.video.VideoReport`'s fields): one failed input however many
        lines its `errors` take, its frames, its files."""
        self.progress(1)
        if skipped:
            self.skipped()
            return
        self.frames(frames)
        if clip:
            self.clip(src, clip)
        if written:
            self.written(paths, Path(src), video=True)
        for i, reason in enumerate(errors):
            if i == 0:
                self.fail(str(src), reason)
            else:
                self.error_line(str(src), reason)

    def interrupted(self) -> None:
        """Ctrl-C: the run stopped early (the summary says so, exit code 130)."""
        self.summary.interrupted = True

    def not_inputs(self, n: int) -> None:
        """`n` files inside the folders walked that are neither images nor videos."""
        self.summary.not_images = n

    def split_video(self) -> None:
        """A video the Ray engine ran as frame ranges over its actors (--json `split_videos`)."""
        self.summary.add_split()

    def close(self, models: dict[str, str], load_seconds: float, started: float) -> Summary:
        """The summary, finished: models used, loading time, wall time since `started`."""
        if self.journal is not None:
            self.journal.close()
        s = self.summary
        s.models = models
        s.load_seconds = load_seconds
        s.seconds = time.perf_counter() - started
        return s
