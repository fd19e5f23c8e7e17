"""Runtimes that execute a depth network: normalised (B, 3, H, W) float32 in, (B, H, W) out.

The engine (batching, prefetch, retries, postprocessing) calls a `Backend` and knows nothing of
the runtime behind it; torch is the first backend, OpenVINO and ONNX Runtime sit beside it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from ..cpu import has_avx512
from .base import Backend, BackendError, host_array

if TYPE_CHECKING:
    import torch

    from ..models import DepthAnything
    from ..models.registry import ModelSpec
    from .calibration import Calibration

__all__ = [
    "BACKEND_NAMES", "RUNTIME_BACKENDS", "Backend", "BackendError", "Job", "available",
    "check_int8", "create_backend",
    "create_runtime_backend", "host_array", "resolve_backend",
]

_logger = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "torch", "openvino", "onnxruntime")


RUNTIME_BACKENDS = ("openvino", "onnxruntime")
_INSTALL = {"openvino": "pip install 'depthcli[openvino]'",
            "onnxruntime": "pip install 'depthcli[onnx]'"}
_MODULES = {"openvino": ("openvino",), "onnxruntime": ("onnxruntime", "onnx", "onnxscript")}


def available(name: str) -> bool:
    """Whether a runtime backend's packages are installed (found, not imported: instant)."""
    return all(importlib.util.find_spec(m) is not None for m in _MODULES.get(name, ()))


def resolve_backend(name: str, device_type: str, *, temporal: bool = False,
                    precision: str | None = None, onnx: bool = True) -> str:
    """The concrete backend for `--backend name` on a device of type `device_type`.

    `auto` picks the fastest backend that keeps the official numbers: OpenVINO on CPUs where it
    is installed (and, for bf16/fp16, where the CPU runs that precision natively), torch on GPUs
    and MPS. Temporal (video) models run on the runtime backends (their graph has the window
    length fixed, backends/graph.py, and keeps the official numbers); `auto` picks OpenVINO
    for them on CPUs with AVX-512 and keeps torch elsewhere, by measurement: `predict` of a
    70-frame 720p clip at input 266 ran at 2.50 frames/s on OpenVINO (warm cache; 2.03 while
    converting) against 1.76 on torch on a 2-core AVX-512 EPYC, while on a 2-core AVX2 EPYC a
    32-frame window at 266x476 took as long on OpenVINO as on torch (46-49 s) and a 720p
    clip ran slower (0.17 vs 0.32 frames/s). `onnx=False` (Depth Anything 3
    any-view models: torch.export cannot trace their RoPE position tables with dynamic sizes)
    does the same for ONNX Runtime only; OpenVINO converts them and matches torch (1e-6 of the
    range), so `auto` keeps it. Explicit choices that cannot work here fail with a one-line
    reason instead of silently running something else.
    """
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; choose from {', '.join(BACKEND_NAMES)}")
    if name == "onnxruntime" and not onnx:
        _logger.warning("--backend onnxruntime does not export Depth Anything 3 any-view models "
                        "(RoPE) yet; using torch")
        return "torch"
    if name == "auto":
        if device_type == "cpu" and available("openvino") and (not temporal or has_avx512()):
            if precision in (None, "fp32") or _openvino_supports(precision):
                return "openvino"
        return "torch"
    if name == "openvino":
        if not available("openvino"):
            raise BackendError(f"--backend openvino: OpenVINO is not installed ({_INSTALL[name]})")
        if device_type != "cpu":
            raise BackendError(f"--backend openvino runs on the CPU here, not {device_type}; "
                               "use --device cpu or --backend torch")
    if name == "onnxruntime":
        if not available("onnxruntime"):
            raise BackendError(f"--backend onnxruntime: ONNX Runtime/onnx/onnxscript are not "
                               f"installed ({_INSTALL[name]})")
        if device_type not in ("cpu", "cuda"):
            raise BackendError(f"--backend onnxruntime runs on cpu or cuda, not {device_type}")
    return name


def check_int8(name: str, device_type: str, *, temporal: bool = False) -> str:
    """The backend that runs `--precision int8` for `--backend name`: OpenVINO on the CPU only
    (post-training quantisation of its IR, backends/int8.py); anything else is a one-line
    error. `auto` never picks int8 itself; asked for it, `auto` means OpenVINO."""
    from .int8 import require_nncf

    if name not in ("auto", "openvino"):
        raise BackendError(f"--precision int8 runs on --backend openvino (CPU) only, not "
                           f"--backend {name}")
    if device_type != "cpu":
        raise BackendError(f"--precision int8 runs on the CPU (OpenVINO), not {device_type}; "
                           "use --device cpu, or fp16/bf16 on a GPU")
    if temporal:
        raise BackendError("--precision int8: temporal video models (vda-*) are not "
                           "quantised; use --precision fp32")
    if not available("openvino"):
        raise BackendError(f"--precision int8 needs OpenVINO ({_INSTALL['openvino']})")
    require_nncf()
    return "openvino"


@dataclass(frozen=True)
class Job:
    """The work ahead of an estimator: `inputs` images or frames at `input_size` (None: unknown)
    whose long side is `aspect` times the short one, and the checkpoint file (for a background
    conversion)."""

    inputs: int | None
    input_size: int
    weights: str | os.PathLike[str] | None = None
    aspect: float = 1.0


def _auto_first_run(model: DepthAnything, job: Job) -> str:
    """`auto` on a CPU with OpenVINO: the backend for this job, per backends/autoplan.py."""
    from .autoplan import convert_in_background, pending, plan, wait_pending
    from .openvino import is_cached

    name, weights = model.spec.name, job.weights
    cached = is_cached(model)
    state = None if cached or weights is None else pending("openvino", name, weights)
    if state == "converting" and weights is not None:
        _logger.warning("auto: another depthcli process is converting %s to openvino; waiting "
                        "for it", name)
        wait_pending("openvino", name, weights)
        cached, state = is_cached(model), None
    p = plan("openvino", name, cached=cached, inputs=job.inputs, input_size=job.input_size,
             aspect=job.aspect, can_background=weights is not None, pending=state is not None)
    if p.line:
        _logger.warning("%s", p.line)
    if p.background and weights is not None:
        convert_in_background("openvino", name, weights)
    return p.backend


def _openvino_supports(precision: str) -> bool:
    from .openvino import cpu_supports

    try:
        return cpu_supports(precision)
    except Exception:  # noqa: BLE001 - a broken install means: not this backend
        return False


def create_runtime_backend(name: str, model: DepthAnything, spec: ModelSpec | None = None, *,
                           precision: str, cache_dir: str | os.PathLike[str] | None = None,
                           device: str = "cpu", threads: int | None = None,
                           calibration: Calibration | None = None) -> Backend:
    """An OpenVINO or ONNX Runtime backend for a loaded fp32 DepthAnything `model`.

    The caller's module is never modified. Conversion happens once per checkpoint/model/runtime
    version and is cached (backends/cache.py). torch backends come from backends/torch.py.
    """
    if name == "openvino":
        from .openvino import OpenVINOBackend

        return OpenVINOBackend(model, spec, precision=precision, cache_dir=cache_dir,
                               threads=threads, calibration=calibration)
    if name == "onnxruntime":
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, spec, precision=precision, device=device,
                                  cache_dir=cache_dir, threads=threads)
    raise BackendError(f"{name!r} is not a runtime backend ({', '.join(RUNTIME_BACKENDS)})")


def create_backend(name: str | Backend, model: torch.nn.Module, device: torch.device,
                   dtype: torch.dtype, *, job: Job | None = None,
                   calibration: Calibration | None = None,
                   **torch_options: object) -> Backend:
    """A ready backend for `model`: `name` is a backend name or an already built Backend.

    `auto` and explicit names resolve through `resolve_backend` (OpenVINO on CPUs where
    installed, torch on GPUs); the runtime backends convert the fp32
    model once (cached on disk) and never change the caller's module. `job`: what `auto` knows
    of the work ahead, for the first run on a checkpoint (backends/autoplan.py). `calibration`
    given: int8, quantised on it (OpenVINO on the CPU only, `check_int8`).
    """
    if not isinstance(name, str):
        return name
    if calibration is not None:
        check_int8(name, device.type, temporal=bool(getattr(model, "temporal", False)))
        return create_runtime_backend("openvino", cast("DepthAnything", model),
                                      getattr(model, "spec", None), precision="int8",
                                      calibration=calibration)
    from ..engine.device import precision_name

    precision = precision_name(dtype)
    spec = getattr(model, "spec", None)
    any_view = getattr(getattr(spec, "da3", None), "any_view", False)
    chosen = resolve_backend(name, device.type, temporal=bool(getattr(model, "temporal", False)),
                             precision=precision, onnx=not any_view)
    if name == "auto" and chosen == "openvino" and job is not None and job.inputs is not None:
        chosen = _auto_first_run(cast("DepthAnything", model), job)
    from .torch import TorchBackend

    if chosen == "torch":
        return TorchBackend(model, device, dtype, **torch_options)  # type: ignore[arg-type]
    try:
        return create_runtime_backend(chosen, cast("DepthAnything", model),
                                      getattr(model, "spec", None), precision=precision,
                                      device=device.type)
    except BackendError as exc:
        if name != "auto":  # asked for by name: the run says why it cannot
            raise
        # auto promises the official numbers: a conversion that does not reproduce torch (or a
        # runtime that fails to build) means torch, with one line
        _logger.warning("auto: %s; running on torch instead", str(exc).split("; use --")[0])
        return TorchBackend(model, device, dtype, **torch_options)  # type: ignore[arg-type]
