"""Checks that send signals to their own process, run by `conftest.in_own_process`.

Not collected by pytest (no `test_` prefix): each function runs in a new interpreter, where
Python's own SIGINT handler is in place and no thread of an earlier test is alive. Run in an
xdist worker, a signal these checks send and catch twice ended the worker instead. They import
only what they check and pytest (no torch): a child costs about a second of start-up.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest


def lost_ctrl_c(work: str) -> None:
    """A KeyboardInterrupt swallowed where it landed (Python's "Exception ignored" in a
    finaliser) must not let the run go on as if Ctrl-C had not been pressed."""
    from depthcli.runs.options import PredictOptions
    from depthcli.runs.predict import PredictRun

    assert threading.current_thread() is threading.main_thread()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    root = Path(work)
    (root / "in").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(root / "in" / f"f{i}.png"), rng.integers(0, 255, (8, 8, 3), np.uint8))
    seen: list[str] = []

    class Swallowing:
        def execute(self, jobs, run) -> None:  # type: ignore[no-untyped-def]
            for job in jobs:
                seen.append(job.src.name)
                if len(seen) == 2:
                    try:
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(5)  # the handler runs here; its exception is lost
                    except KeyboardInterrupt:
                        pass

        def models_used(self):  # type: ignore[no-untyped-def]
            return {}, 0.0

    opts = PredictOptions(inputs=(str(root / "in"),), out_dir=root / "out")
    summary = PredictRun(opts, report=lambda line: None).execute(Swallowing())
    assert summary.interrupted and seen == ["f0.png", "f1.png"], (summary, seen)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def _handled(sig: object) -> None:
    """Until Python has run the handler of the signal just sent (it runs between bytecodes,
    when the interpreter gets to it; two signals pending at once run in signal-number order,
    SIGINT first, whatever order they were sent in)."""
    deadline = time.monotonic() + 10
    while sig._pending is None and time.monotonic() < deadline:  # type: ignore[attr-defined]
        pass


def held_signals() -> None:
    """Ctrl-C or SIGTERM while a frame goes to the writers is raised once the frame is written
    and counted, and at once outside; the handlers are put back afterwards."""
    from depthcli.runs.live import Terminated, _Signals

    before = signal.getsignal(signal.SIGINT)
    sig = _Signals()
    sig.install()
    done: list[str] = []
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            with sig.held():
                os.kill(os.getpid(), signal.SIGINT)
                _handled(sig)
                done.append("written")
                done.append("counted")
        assert done == ["written", "counted"] and not isinstance(info.value, Terminated), done
        with pytest.raises(Terminated):
            with sig.held():
                os.kill(os.getpid(), signal.SIGTERM)
                _handled(sig)
                os.kill(os.getpid(), signal.SIGINT)  # the first signal is the one raised
                time.sleep(0.05)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # raised in here, as soon as Python runs it
                pass
            done.append("not reached")
        assert done == ["written", "counted"], done
    finally:
        sig.restore()
    assert signal.getsignal(signal.SIGINT) is before
