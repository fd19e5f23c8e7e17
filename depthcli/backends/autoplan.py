"""`--backend auto` on a checkpoint not yet converted: convert now only when the job earns it back.

Converting to OpenVINO (trace, convert, check against torch, compile) costs about as much as
`CONVERT_FORWARDS` torch forward passes of a ViT-S at 518 px, whatever the input size (the
graph is traced small), and then saves `SAVING` of the torch time of every forward. So a job of
`units` forward passes at 518 px (images, or video frames: each costs about the same per pixel)
gains from converting first when `units * SAVING > CONVERT_FORWARDS`: about 60 photos at the
default size on an AVX2 CPU, 11 on one with AVX-512 (where OpenVINO halves the time), four
times that at `--input-size 266`; a landscape photo counts its aspect ratio (518x770 is 1.5
forwards). Below that the job runs on torch (it finishes sooner) and, when the checkpoint is a
file, a background process converts it for the next run. That process starts converting only
once the run has exited, so it never slows the job that chose torch for being quick (started
beside it, it took 7 s of a 23 s run of 10 photos, 2-core AVX-512 EPYC). A run that starts
while it converts waits for it and then runs from the cache: side by side both were slower
(3 photos right after a 3-photo run: 18.2 s on torch beside it, 13.6 s waiting). A run that
starts while it still waits for its run to exit runs torch and starts no second one. One line
says which.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import cpu
from . import locks
from .cache import RuntimeCache

_logger = logging.getLogger(__name__)

# Measured (ViT-S, fp32, `CONVERT_FORWARDS` = conversion time / one torch forward at 518x518,
# `SAVING` = 1 - OpenVINO's model time / torch's); larger encoders: both grow alike.
# - 2-core AVX2 EPYC (load 4-6): conversion 20-24 s, a torch forward 1.4-3 s; OpenVINO fp32 at
#   0.84x torch's model time (README, Runtimes).
# - 2-core AVX-512 EPYC (quiet): conversion 3.2-4.0 s, a torch forward 0.83-0.88 s; OpenVINO
#   0.40-0.42 s (oneDNN uses the 512-bit units, torch's BLAS does not): about 5 forwards, 0.5.
CONVERT_FORWARDS = 10.0
SAVING = 0.16
AVX512_CONVERT_FORWARDS = 5.0
AVX512_SAVING = 0.5
REFERENCE_SIZE = 518
# A conversion takes 3-40 s (ViT-S..L, AVX-512..AVX2); a run waits this long for another's.
WAIT_LIMIT_S = 600.0


def costs() -> tuple[float, float]:
    """(conversion in 518-px torch forwards, fraction of each forward saved) on this CPU."""
    return (AVX512_CONVERT_FORWARDS, AVX512_SAVING) if cpu.has_avx512() else (CONVERT_FORWARDS,
                                                                          SAVING)


@dataclass(frozen=True)
class AutoPlan:
    """What `auto` does for this job: the backend that runs it, and whether to convert in the
    background for the next run."""

    backend: str
    background: bool
    line: str | None


def work_units(inputs: int, input_size: int, aspect: float = 1.0) -> float:
    """Forward passes of `inputs` images or frames at `input_size` (the short side) whose long
    side is `aspect` times the short one, in 518x518 forwards."""
    return inputs * (input_size / REFERENCE_SIZE) ** 2 * max(aspect, 1.0)


def breakeven(input_size: int, aspect: float = 1.0) -> int:
    """Inputs from which converting first finishes sooner than torch alone."""
    convert, saving = costs()
    return int(convert / saving / work_units(1, input_size, aspect)) + 1


def plan(runtime: str, model: str, *, cached: bool, inputs: int | None, input_size: int,
         can_background: bool, aspect: float = 1.0, pending: bool = False) -> AutoPlan:
    """The decision rule (module docstring). `inputs` None: the job's size is unknown (the
    Python API, a stream): convert, as before, since the estimator may live long. `pending`:
    a background conversion of this checkpoint is under way (`pending_lock`)."""
    if cached or inputs is None:
        return AutoPlan(runtime, False, None)
    need = breakeven(input_size, aspect)
    convert, saving = costs()
    if work_units(inputs, input_size, aspect) * saving > convert:
        return AutoPlan(runtime, False, f"auto: converting {model} to {runtime} first (once, "
                        f"cached; it pays off from ~{need} inputs, this job has {inputs})")
    if pending:
        later, background = "another process is converting it for the next run", False
    elif can_background:
        later, background = "converting it in the background for the next run", True
    else:
        later, background = f"run with --backend {runtime} once to convert and cache it", False
    return AutoPlan("torch", background,
                    f"auto: torch for this job ({inputs} inputs; converting {model} to {runtime} "
                    f"pays off from ~{need}); {later}")


def pending_lock(runtime: str, model: str, weights: str | os.PathLike[str]) -> Path:
    """The lock a background conversion of this checkpoint file holds from its start to its
    end: named by the file's path, size and mtime, which a run can tell without reading it."""
    path = Path(weights).resolve()
    try:
        st = path.stat()
        ident = f"{runtime}|{model}|{path}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        ident = f"{runtime}|{model}|{path}"
    name = hashlib.sha256(ident.encode()).hexdigest()[:20]
    return RuntimeCache().lock_dir / f"pending-{name}.lock"


def pending(runtime: str, model: str, weights: str | os.PathLike[str]) -> str | None:
    """The state of a background conversion of this checkpoint: None (there is none),
    "queued" (waiting for the run that started it to exit) or "converting"."""
    lock = pending_lock(runtime, model, weights)
    if not locks.held_elsewhere(lock):
        return None
    try:
        state = lock.read_text().strip()
    except OSError:
        state = ""  # not marked yet: it has only just started
    return "converting" if state == "converting" else "queued"


def mark_pending(lock: Path, state: str) -> None:
    """What the background conversion holding `lock` is doing, for `pending`."""
    lock.write_text(state)


def wait_pending(runtime: str, model: str, weights: str | os.PathLike[str],
                 limit: float = WAIT_LIMIT_S) -> bool:
    """Wait until the background conversion of this checkpoint has ended; False when `limit`
    seconds passed first (a hung converter does not hang the run: it then converts itself)."""
    lock = pending_lock(runtime, model, weights)
    return locks.wait_until(lambda: not locks.held_elsewhere(lock), limit)


def convert_in_background(runtime: str, model: str, weights: str | os.PathLike[str]) -> None:
    """Start `python -m depthcli.backends.prebuild` detached (its own session: the terminal's
    Ctrl-C does not reach it), output discarded; it converts once this process has exited.

    Its cache write is atomic (backends/cache.py) and under the key's build lock, so a run
    that starts meanwhile finds the entry complete, waits for it, or runs torch.
    """
    cmd = [sys.executable, "-m", "depthcli.backends.prebuild", runtime, model, str(weights),
           str(os.getpid())]
    try:
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        _logger.warning("could not start the background conversion (%s)", exc)
