"""`--backend auto` on a checkpoint not yet converted: convert now only when the job earns it back.

Converting to OpenVINO (trace, convert, check against torch, compile) costs about as much as
`CONVERT_FORWARDS` torch forward passes of a ViT-S at 518 px, whatever the input size (the
graph is traced small), and then saves `SAVING` of the torch time of every forward. So a job of
`units` forward passes at 518 px (images, or video frames: each costs about the same per pixel)
gains from converting first when `units * SAVING > CONVERT_FORWARDS`: about 60 photos at the
default size on an AVX2 CPU, 11 on one with AVX-512 (where OpenVINO halves the time), four
times that at `--input-size 266`. Below that the job runs on torch (it
finishes sooner) and, when the checkpoint is a file, the conversion runs in a background process
at the lowest priority so that the next run starts from the cache. One line says which.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass

from .. import cpu

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


def work_units(inputs: int, input_size: int) -> float:
    """Forward passes of `inputs` images or frames at `input_size`, in 518-px forwards."""
    return inputs * (input_size / REFERENCE_SIZE) ** 2


def breakeven(input_size: int) -> int:
    """Inputs from which converting first finishes sooner than torch alone."""
    convert, saving = costs()
    return int(convert / saving / (input_size / REFERENCE_SIZE) ** 2) + 1


def plan(runtime: str, model: str, *, cached: bool, inputs: int | None, input_size: int,
         can_background: bool) -> AutoPlan:
    """The decision rule (module docstring). `inputs` None: the job's size is unknown (the
    Python API, a stream): convert, as before, since the estimator may live long."""
    if cached or inputs is None:
        return AutoPlan(runtime, False, None)
    need = breakeven(input_size)
    convert, saving = costs()
    if work_units(inputs, input_size) * saving > convert:
        return AutoPlan(runtime, False, f"auto: converting {model} to {runtime} first (once, "
                        f"cached; it pays off from ~{need} inputs, this job has {inputs})")
    later = ("converting it in the background for the next run" if can_background else
             f"run with --backend {runtime} once to convert and cache it")
    return AutoPlan("torch", can_background,
                    f"auto: torch for this job ({inputs} inputs; converting {model} to {runtime} "
                    f"pays off from ~{need}); {later}")


def convert_in_background(runtime: str, model: str, weights: str | os.PathLike[str]) -> None:
    """Start `python -m depthcli.backends.prebuild` detached, at nice 19, output discarded.

    Its cache write is atomic (backends/cache.py), so a run that starts meanwhile either finds
    the entry complete or converts on its own; two processes building one key is harmless.
    """
    cmd = [sys.executable, "-m", "depthcli.backends.prebuild", runtime, model, str(weights)]
    try:
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True,
                         preexec_fn=lambda: os.nice(19))
    except OSError as exc:
        _logger.warning("could not start the background conversion (%s)", exc)
