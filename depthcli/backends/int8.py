"""int8 post-training quantisation of the converted OpenVINO model with NNCF.

Why NNCF: it is OpenVINO's own quantiser and writes an IR with FakeQuantize nodes that the CPU
plugin turns into int8 kernels, with no retraining. The fp32 IR (checked against torch when it
was converted) is quantised on the calibration set (depthcli/backends/calibration.py) run through the
model's own preprocessing: weights per output channel, activations per tensor, with the default
(performance) preset and bias correction off (it moved the deviation by < 0.1 % of the range
and doubles the quantisation time).

What stays in float (`FLOAT_PATTERNS`, `FLOAT_TYPES`): the DPT head, the encoder's residual
additions and its LayerNorms. Quantising the inputs of a residual addition or of a LayerNorm
puts int8 rounding into the residual stream itself, which every later block carries forward;
the head is a small part of the work (ViT-S at 518: 376 ms/img with this scope, 329 all int8,
644 fp32) but about half the deviation. Measured on da2-small with the golden recipe weights
over the 10 sample photos (2-core AVX-512 EPYC; `python -m tools.int8_variants`): mean
deviation from fp32 2.32 % of the range all int8, 0.84 % with this scope; the README has the
table. NNCF's transformer model type (SmoothQuant, its own float scope) was worse on these
networks (12.2 % with the golden weights).

The result is checked against the fp32 IR on the first calibration inputs: a mean deviation
beyond `MAX_MEAN_DEVIATION` of the depth range means the quantisation broke the model, and it
is refused rather than cached.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .base import BackendError

_logger = logging.getLogger(__name__)

INSTALL = "pip install 'depthcli[int8]'"
MAX_MEAN_DEVIATION = 0.2  # of the range: a sanity bound, far above what works (README)
# Bump when the settings below change: the int8 cache entries and warm records carry it
# (`scheme_id`), so an entry quantised otherwise is never reused.
SCHEME = 2
# Left in float (module docstring). Node names are OpenVINO's from the traced module paths of
# models.DepthAnything (`encoder`, `head`): a pattern that matches nothing quantises more, and
# tests/test_int8.py checks on the IR that these stay free of FakeQuantize.
FLOAT_PATTERNS = (r".*__module\.head[./].*", r".*__module\.encoder[./].*aten::add/Add.*")
FLOAT_TYPES = ("MVN",)


@contextlib.contextmanager
def _quiet_rich() -> Iterator[None]:
    """NNCF draws rich progress bars on rich's global console (stdout, which may carry a
    stream or --json): silenced while it works; depthcli's own lines say what happens."""
    try:
        from rich import get_console
    except ImportError:
        yield
        return
    console = get_console()
    old = console.quiet
    console.quiet = True
    try:
        yield
    finally:
        console.quiet = old


def available() -> bool:
    return importlib.util.find_spec("nncf") is not None


def require_nncf() -> None:
    if not available():
        raise BackendError(f"--precision int8 needs NNCF: {INSTALL}")


def nncf_version() -> str:
    """NNCF's version without importing it (the warm start's key needs it, not NNCF)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nncf")
    except PackageNotFoundError:
        return "none"


def scheme_id() -> str:
    """What an int8 IR depended on beyond the checkpoint and its calibration: NNCF's version
    and these settings (cache keys and warm records)."""
    return f"{nncf_version()}+s{SCHEME}"


def quantize(ir: Any, inputs: list[np.ndarray], fp32_run: Callable[[np.ndarray], np.ndarray],
             int8_run: Callable[[Any], Callable[[np.ndarray], np.ndarray]]) -> tuple[Any, dict]:
    """(int8 IR, report) for an fp32 OpenVINO model `ir` calibrated on `inputs`.

    `fp32_run(x)` runs the fp32 model; `int8_run(ir)` compiles the quantised one into a runner.
    """
    require_nncf()
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    nncf_logger = logging.getLogger("nncf")
    nncf_logger.setLevel(max(nncf_logger.level, logging.WARNING))
    t = time.perf_counter()
    with _quiet_rich():
        q = nncf.quantize(ir, nncf.Dataset(inputs), subset_size=len(inputs),
                          preset=nncf.QuantizationPreset.PERFORMANCE,
                          ignored_scope=nncf.IgnoredScope(patterns=list(FLOAT_PATTERNS),
                                                          types=list(FLOAT_TYPES),
                                                          validate=False),
                          advanced_parameters=AdvancedQuantizationParameters(
                              disable_bias_correction=True))
    seconds = time.perf_counter() - t
    run = int8_run(q)
    means, maxes = [], []
    for x in inputs[:2]:
        a, b = fp32_run(x), run(x)
        span = float(a.max() - a.min()) or 1.0
        means.append(float(np.abs(a - b).mean()) / span)
        maxes.append(float(np.abs(a - b).max()) / span)
    report = {"quantize_s": round(seconds, 1), "calibration_inputs": len(inputs),
              "check_mean_dev": max(means), "check_max_dev": max(maxes),
              "nncf": nncf_version(), "scheme": SCHEME}
    if not max(means) <= MAX_MEAN_DEVIATION:
        raise BackendError(f"int8 quantisation broke the model (mean deviation {max(means):.1%} "
                           "of the range on the calibration set); use --precision fp32")
    _logger.info("int8: quantised in %.1f s on %d inputs; mean deviation from fp32 %.2e, max "
                 "%.2e of the range (calibration set)", seconds, len(inputs), max(means),
                 max(maxes))
    return q, report
