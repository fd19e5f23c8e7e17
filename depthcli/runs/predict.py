"""One `predict` run: its plan, its tally, and the strategy that executes it.

The run is the same object for every engine: it plans the work (`runs.plan.Planner`: inputs
-> jobs with their output paths, skip-existing, confinement), hands the jobs to a strategy
(the local engine's images then videos, `runs.local`; the Ray cluster's, `runs.ray`) and
keeps one tally (`runs.tally.Tally`: written, skipped, failed, frames, timings, error
lines, the output journal) that the strategy reports into. Names, decisions, lines and
summaries are then the same on both engines by construction.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

from ..io.atomic import remove_stale_temps
from ..io.manifest import Manifest
from .options import PredictOptions
from .plan import Job, Planner
from .summary import Summary
from .tally import Progress, Report, Tally
from .video_progress import FrameBars

_logger = logging.getLogger(__name__)


class Strategy(Protocol):
    """How the jobs of a run are executed (on this machine, on a cluster)."""

    def execute(self, jobs: Iterator[Job], run: Tally) -> None:
        """Process `jobs` (in planning order), reporting every outcome into `run`."""

    def models_used(self) -> tuple[dict[str, str], float]:
        """The models that ran, by kind of input ("images", "videos"), and the seconds spent
        loading them here."""


class PredictRun:
    """One `predict` run: plan + tally, executed once by a strategy (`execute`)."""

    def __init__(self, opts: PredictOptions, *, report: Report, progress: Progress | None = None,
                 frame_bars: FrameBars | None = None, started: float | None = None) -> None:
        """`started` (a `time.perf_counter()` value) lets the summary's seconds include what
        the caller did before (start-up, argument checks)."""
        self.opts = opts
        self.started = started if started is not None else time.perf_counter()
        stale = remove_stale_temps(opts.out_dir)
        if stale:
            _logger.info("removed %d temporary files left by an interrupted run", stale)
        self.tally = Tally(report, progress, Manifest(opts.out_dir), frame_bars)
        self.plan = Planner(opts, self.tally)

    def execute(self, strategy: Strategy) -> Summary:
        """Every job through `strategy`; the finished summary (Ctrl-C: marked interrupted)."""
        try:
            with _ctrl_c_sets(self.tally.stop):
                strategy.execute(_until(self.plan.jobs(), self.tally.stop), self.tally)
            if self.tally.stop.is_set():  # the KeyboardInterrupt was lost on its way (below)
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.tally.interrupted()
        finally:
            self.plan.finish()
            models, load_seconds = strategy.models_used()
            summary = self.tally.close(models, load_seconds, self.started)
        return summary


def _until(jobs: Iterator[Job], stop: threading.Event) -> Iterator[Job]:
    """`jobs`, ending early once Ctrl-C was pressed."""
    for job in jobs:
        if stop.is_set():
            return
        yield job


@contextlib.contextmanager
def _ctrl_c_sets(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as always, and also sets `stop`.

    Python raises the KeyboardInterrupt wherever the main thread happens to be; when that is a
    finaliser or a generator being closed by the garbage collector, Python prints "Exception
    ignored" and goes on, and the run would finish as if the user had not pressed Ctrl-C. The
    flag outlives the exception: no new job starts, and the run ends interrupted (exit 130).
    Only where Python's default handler is installed (the main thread of a normal program).
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
