"""A warm start: the engine straight on the cached OpenVINO model of a checkpoint, no torch.

Once a checkpoint has been converted and checked (backends/openvino.py) and its warm record
written (backends/warm.py), a run that would pick that very model (`--backend auto` or
`openvino`, on the CPU, fp32 or int8 on the built-in calibration set, a V1/V2 per-frame model)
does not need the torch model: not
torch and timm (~2–5 s to import), not the checkpoint (~100 MB for ViT-S), not the hash of its
numbers. It reads the IR and compiles it (OpenVINO's compiled-blob cache), and preprocesses
and upsamples in numpy by the same rules (engine/transforms.py), so its depth maps are the
bytes the full path gives.

Anything else — no record, a changed file, another device or precision, options only torch
has, Depth Anything 3, the temporal models, a GPU driver on the machine (torch would pick the
GPU) — returns None, and the caller takes the full path, which records for the next run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, cast

from ..models.registry import get_spec

if TYPE_CHECKING:
    from .core import DepthEngine, OutputSize

_logger = logging.getLogger(__name__)


def warm_engine(model: str, weights: str | os.PathLike[str] | None, *, max_depth: float | None,
                device: str, precision: str, backend: str, input_size: int | None,
                output_size: str = "input") -> DepthEngine | None:
    """The engine on the recorded OpenVINO model of `weights` (a checkpoint file), or None.

    `device`/`precision`/`backend` are the run's settings as given (`auto` included); the
    caller has already ruled out options only the torch path has (compile, channels-last,
    `--calibrate`, camera settings)."""
    if os.environ.get("DEPTHCLI_WARM_START", "1") == "0":
        return None
    if backend not in ("auto", "openvino") or precision not in ("auto", "fp32", "int8"):
        return None
    if output_size not in ("input", "network"):  # the full path says why
        return None
    from .device import current_threads, gpu_driver_loaded

    if device not in ("auto", "cpu") or (device == "auto" and gpu_driver_loaded()):
        return None
    if weights is None or not Path(weights).is_file():
        return None
    try:
        spec = get_spec(model)
    except Exception:  # noqa: BLE001 - an unknown name fails on the full path, with its error
        return None
    from ..backends.warm import WarmKey, recall, serves

    if not serves(spec):
        return None
    try:
        import openvino as ov
    except ImportError:
        return None
    from ..backends.cache import RuntimeCache
    from ..backends.openvino import OpenVINOBackend

    calibration = None
    if precision == "int8":  # the built-in set at the run's network size (backends/calibration)
        from ..backends.calibration import Calibration, builtin
        from .transforms import engine_preprocess

        pre = engine_preprocess(spec, input_size, "fp32", "cpu")
        calibration = Calibration(builtin(), pre, pre.input_size).identity
    cache = RuntimeCache()
    key = WarmKey.of(spec.name, weights, spec.max_depth_for(max_depth), ov.__version__,
                     calibration=calibration)
    record = recall(key, cache) if key is not None else None
    if record is None:
        return None
    try:
        runtime = OpenVINOBackend.from_entry(record.entry, spec, threads=current_threads(),
                                             precision="int8" if calibration else "fp32")
    except Exception as exc:  # noqa: BLE001 - the full path revalidates (and rebuilds) it
        _logger.info("warm start of %s failed (%s); loading the checkpoint", spec.name, exc)
        return None
    from .core import DepthEngine

    _logger.info("warm start: %s from %s", spec.name, record.entry)
    return DepthEngine.from_runtime(spec, runtime, digest=record.digest, input_size=input_size,
                                    output_size=cast("OutputSize", output_size))

