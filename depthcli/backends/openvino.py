"""OpenVINO backend: the torch model converted once (dynamic shapes), compiled for the CPU.

Why: on CPUs OpenVINO's fused kernels beat eager PyTorch (ViT-S 518x784 on this 2-core EPYC:
see the README/bench), and with `INFERENCE_PRECISION_HINT=bf16` it uses AVX512-BF16/AMX where
the CPU has them. The conversion traces the module with dynamic batch, height and width, so a
run with mixed image sizes converts once (the CPU plugin keeps its own per-shape kernels), and
the converted IR is cached on disk (backends/cache.py), so later runs start in about a second.

Numbers: the IR is stored in fp32 and checked against the torch model right after conversion
(two shapes, <= 1e-4 of the range, else a clear error: never silently different numbers). fp32
compiles with an explicit f32 precision hint (the CPU plugin would otherwise pick bf16 on AMX
machines); bf16/fp16 only where the CPU reports the capability, and a non-finite half-precision
output is redone with an fp32 compilation, as the torch engine does.

int8: the checked fp32 IR (from the cache, or converted first) is quantised by NNCF on a
calibration set (backends/int8.py, depthcli/backends/calibration.py) and cached as an entry of its own,
keyed also by the calibration set, its network size and NNCF's version; a later run loads it
without quantising again. Its non-quantised parts run in fp32. Temporal models are refused.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.device import run_threads
from .base import BackendError, host_array
from .cache import CacheKey, RuntimeCache, model_cache_key
from .export import fp32_cpu
from .graph import Graph, graph_for

if TYPE_CHECKING:
    import torch

    from ..models import DepthAnything
    from ..models.registry import ModelSpec
    from .calibration import Calibration

_logger = logging.getLogger(__name__)

_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
_CAPABILITY = {"bf16": "BF16", "fp16": "FP16"}


def cpu_supports(precision: str) -> bool:
    """Whether OpenVINO's CPU plugin can run `precision` natively on this machine."""
    if precision in ("fp32", "int8"):  # int8 runs on any x86-64 (VNNI/AMX make it faster)
        return True
    import openvino as ov

    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return _CAPABILITY.get(precision, "?") in caps


def _warn_without_vnni() -> None:
    """One line where int8 is measured slower than fp32 and further from it: x86 without
    VNNI/AMX int8 dot products (2-core AVX2 EPYC: 3383 vs 2844 ms/img for ViT-S at 518; their
    16-bit multiply-adds saturate: 1.31 % mean deviation instead of 0.84 %, README)."""
    import platform

    from ..cpu import VNNI_FLAGS, cpu_flags, has_int8_dot_products

    if (platform.machine().lower() in ("x86_64", "amd64") and cpu_flags()
            and not has_int8_dot_products()):
        _logger.warning("--precision int8: this CPU has no VNNI/AMX int8 instructions (%s); "
                        "int8 may run slower than fp32 and deviate more from it here",
                        " / ".join(VNNI_FLAGS))


def cache_key(graph: Graph, calibration: Calibration | None = None) -> CacheKey:
    """The cache key of the fp32 IR of `graph` (backends/graph.py), or of its int8 IR
    quantised on `calibration` (which images at which size; NNCF's version and the int8
    settings)."""
    import openvino as ov

    if calibration is None:
        return model_cache_key(graph.net, "openvino", "fp32", graph.shapes,
                               {"openvino": ov.__version__})
    from .int8 import scheme_id

    return model_cache_key(graph.net, "openvino", "int8", graph.shapes,
                           {"openvino": ov.__version__, "nncf": scheme_id()},
                           calibration=calibration.identity)


def is_cached(model: DepthAnything, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether an IR of `model` is in the cache (its entry exists; validated when loaded)."""
    return RuntimeCache(cache_dir).entry_path(cache_key(graph_for(fp32_cpu(model)))).exists()


class OpenVINOBackend:
    """`Backend` running a DepthAnything module through OpenVINO on the CPU."""

    name = "openvino"
    device = "cpu"
    entry: Path  # the cache entry in use (set when it is read)

    def __init__(self, model: DepthAnything, spec: ModelSpec | None = None, *,
                 precision: str = "fp32", cache_dir: str | os.PathLike[str] | None = None,
                 threads: int | None = None, calibration: Calibration | None = None) -> None:
        """`calibration`: the images int8 is calibrated on (required for precision int8)."""
        import openvino as ov

        if precision == "int8":
            from .int8 import require_nncf

            require_nncf()
            if calibration is None:
                raise BackendError("OpenVINO int8 needs a calibration set")
            if getattr(model, "temporal", False):
                raise BackendError(f"--precision int8: {model.spec.name} is a temporal video "
                                   "model, which is not quantised; use --precision fp32")
            _warn_without_vnni()
        if precision not in _HINTS:
            raise BackendError(f"OpenVINO backend: unknown precision {precision!r}")
        if not cpu_supports(precision):
            raise BackendError(f"OpenVINO: this CPU has no native {precision} support; "
                               "use --precision fp32 or --backend torch")
        self.precision = precision
        self.spec = spec or model.spec
        self._core = ov.Core()
        self._threads = threads
        t = time.perf_counter()
        self._graph = graph_for(fp32_cpu(model))
        self._net = self._graph.net
        self._calibration = calibration if precision == "int8" else None
        self.int8_report: dict[str, object] | None = None  # set when this run quantised
        key = cache_key(self._graph, self._calibration)
        self.cache = RuntimeCache(cache_dir)
        # Where start-up goes (`depthcli bench --startup`): seconds per step.
        self.timings: dict[str, float] = {"cache_key": time.perf_counter() - t}
        # OpenVINO keys its compiled blobs itself (model, config, device, version).
        self._blob_dir = self.cache.root / "openvino" / "compiled"
        self._window = self._graph.batch
        t = time.perf_counter()
        build = self._convert if self._calibration is None else self._quantize
        self._ir, self.built = self.cache.get(key, build, self._read)
        self.timings["convert" if self.built else "cache_load"] = time.perf_counter() - t
        self._start()

    @classmethod
    def from_entry(cls, entry: os.PathLike[str], spec: ModelSpec, *,
                   cache_dir: str | os.PathLike[str] | None = None,
                   threads: int | None = None, precision: str = "fp32") -> OpenVINOBackend:
        """The fp32 (or int8) IR of a per-frame model from its cache entry, checked when it was
        recorded (backends/warm.py), with no torch model and without importing torch."""
        import openvino as ov

        if precision not in ("fp32", "int8"):
            raise BackendError(f"OpenVINO cache entries are fp32 or int8, not {precision}")
        if precision == "int8":
            _warn_without_vnni()
        self = cls.__new__(cls)
        self.precision, self.spec, self._threads = precision, spec, threads
        self._core = ov.Core()
        self._calibration, self.int8_report, self.built = None, None, False
        self._window = None
        self.cache = RuntimeCache(cache_dir)
        self._blob_dir = self.cache.root / "openvino" / "compiled"
        t = time.perf_counter()
        self._ir = self._read(entry)
        self.timings = {"cache_key": 0.0, "cache_load": time.perf_counter() - t}
        self._start()
        return self

    @property
    def calibration(self) -> Calibration | None:
        """The images an int8 model was (or is to be) quantised on; None in fp32."""
        return self._calibration

    def _start(self) -> None:
        """Compile the IR read (`_ir`) and make its infer request."""
        t = time.perf_counter()
        self._compiled = self._compile(self.precision)
        self.timings["compile"] = time.perf_counter() - t
        self._request = self._compiled.create_infer_request()
        self._fp32_request: Any | None = None if self.precision != "fp32" else self._request
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ build

    def _convert(self, folder: os.PathLike[str]) -> None:
        """Trace + convert with dynamic H, W (and batch, per-frame models), check against
        torch, save the IR."""
        import openvino as ov
        import torch

        from .export import compare
        from .telemetry import usage_reports_off

        usage_reports_off()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape arithmetic: checked below
            # Traced here without torch's trace check (a second trace and forward: half the
            # conversion time of ViT-S VDA); the comparison below checks the graph instead.
            traced = torch.jit.trace(self._net, self._graph.example(), check_trace=False,
                                     strict=False)
            batch = self._graph.batch or -1
            ir = ov.convert_model(traced, input=[ov.PartialShape([batch, 3, -1, -1])])
        compiled = self._core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                         **self._thread_config()})
        request = compiled.create_infer_request()
        checks = compare(self._net, lambda x: request.infer([x])[0].copy(), self._graph.checks)
        bad = [c for c in checks if not c.max_dev <= 1e-4]
        if bad:
            raise BackendError(f"OpenVINO conversion of {self._net.spec.name} does not reproduce "
                               f"torch ({'; '.join(map(str, bad))}); use --backend torch")
        _logger.debug("OpenVINO conversion checked: %s", "; ".join(map(str, checks)))
        ov.save_model(ir, os.path.join(folder, "model.xml"), compress_to_fp16=False)

    def _quantize(self, folder: os.PathLike[str]) -> None:
        """The fp32 IR (cached, or converted now), quantised by NNCF on the calibration set."""
        import json

        import openvino as ov

        from .int8 import quantize
        from .telemetry import usage_reports_off

        usage_reports_off()  # NNCF reports through the same channel
        assert self._calibration is not None
        fp32_ir, _ = self.cache.get(cache_key(self._graph), self._convert, self._read)
        config = {"INFERENCE_PRECISION_HINT": "f32", **self._thread_config()}
        fp32 = self._core.compile_model(fp32_ir, "CPU", config).create_infer_request()

        def int8_run(ir: Any) -> Any:
            request = self._core.compile_model(ir, "CPU", config).create_infer_request()
            return lambda x: request.infer([x])[0].copy()

        _logger.warning("int8: quantising %s on the %s (once; cached)", self._net.spec.name,
                        self._calibration.images.description)
        inputs = self._calibration.tensors()
        ir, report = quantize(fp32_ir, inputs, lambda x: fp32.infer([x])[0].copy(), int8_run)
        report["calibration"] = self._calibration.images.description
        report["calibration_identity"] = self._calibration.identity
        self.int8_report = report
        ov.save_model(ir, os.path.join(folder, "model.xml"), compress_to_fp16=False)
        with open(os.path.join(folder, "int8.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, sort_keys=True)

    def _thread_config(self) -> dict[str, object]:
        threads = self._threads or run_threads()
        return {"INFERENCE_NUM_THREADS": int(threads)} if threads else {}

    def _read(self, entry: os.PathLike[str]) -> object:
        self.entry = Path(entry)  # the cache entry in use (backends/warm.py records it)
        report = os.path.join(entry, "int8.json")
        if self._calibration is not None and self.int8_report is None and os.path.exists(report):
            import json

            with open(report, encoding="utf-8") as f:
                self.int8_report = {**json.load(f), "cached": True}
        return self._core.read_model(os.path.join(entry, "model.xml"))

    def _compile(self, precision: str) -> Any:  # an openvino.CompiledModel (untyped)
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": _HINTS[precision],
                                     "PERFORMANCE_HINT": "LATENCY", **self._thread_config()}
        try:
            return self._core.compile_model(self._ir, "CPU",
                                            {**config, "CACHE_DIR": str(self._blob_dir)})
        except Exception as exc:  # noqa: BLE001 - a bad compiled-blob cache must not be fatal
            _logger.warning("OpenVINO compile with cache %s failed (%s); compiling without it",
                            self._blob_dir, exc)
            return self._core.compile_model(self._ir, "CPU", config)

    # -------------------------------------------------------------------- run

    def run(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) normalised float32 → (B, H, W) float32 depth (a fresh array)."""
        x = host_array(batch)
        if self._window is not None and len(x) != self._window:
            raise BackendError(f"this graph takes windows of {self._window} frames, got {len(x)}")
        with self._lock:  # one infer request: not re-entrant
            out = self._request.infer([x])[0].copy()
            if self.precision in ("bf16", "fp16") and not np.isfinite(out).all():
                _logger.warning("non-finite output in %s; redoing the batch in fp32",
                                self.precision)
                if self._fp32_request is None:
                    compiled = self._compile("fp32")
                    self._fp32_request = compiled.create_infer_request()
                out = self._fp32_request.infer([x])[0].copy()
        return out
