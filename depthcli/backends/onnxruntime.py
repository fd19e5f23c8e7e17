"""ONNX Runtime backend: the verified ONNX export (backends/export.py), cached on disk.

Why: it is the runtime most deployment targets share (and the one a user of `depthcli export`
will run), so running predict through the very same file shows that the file keeps the numbers.
The export takes ~40 s for ViT-S on a 2-core CPU, so the file is cached (backends/cache.py) and
later runs only open a session (well under a second). fp32 only: ONNX Runtime's CPU provider has
no fast bf16 path, and an fp16 graph would be another file with other numbers.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np

from .base import BackendError, host_array
from .cache import RuntimeCache, model_cache_key
from .export import fp32_cpu
from .graph import graph_for

if TYPE_CHECKING:
    import torch

    from ..models import DepthAnything
    from ..models.registry import ModelSpec

_logger = logging.getLogger(__name__)



class OnnxRuntimeBackend:
    """`Backend` running a DepthAnything module exported to ONNX in ONNX Runtime."""

    name = "onnxruntime"

    def __init__(self, model: DepthAnything, spec: ModelSpec | None = None, *,
                 precision: str = "fp32", device: str = "cpu",
                 cache_dir: str | os.PathLike[str] | None = None, opset: int = 18,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        from .export import require_onnx

        require_onnx()
        if precision != "fp32":
            raise BackendError(f"ONNX Runtime backend runs fp32 only (got {precision}); use "
                               "--backend openvino for bf16 on CPUs, or --backend torch")
        kind = device.split(":")[0]
        providers = {"cpu": ["CPUExecutionProvider"],
                     "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}.get(kind)
        if providers is None or providers[0] not in ort.get_available_providers():
            raise BackendError(f"ONNX Runtime has no provider for device {device!r} here "
                               f"(available: {', '.join(ort.get_available_providers())})")
        self.precision = precision
        self.device = "cpu"  # outputs are host arrays whatever the provider
        self.spec = spec or model.spec
        self._providers = providers
        self._threads = threads
        self._opset = opset
        self._graph = graph_for(fp32_cpu(model))
        self._net = self._graph.net
        key = model_cache_key(self._net, "onnxruntime", "fp32", self._graph.shapes,
                        {"onnxruntime": ort.__version__, "onnxscript": _version("onnxscript"),
                         "onnx": _version("onnx")}, opset=str(opset))
        self.cache = RuntimeCache(cache_dir)
        self._session, self.built = self.cache.get(key, self._export, self._open)

    def _export(self, folder: os.PathLike[str]) -> None:
        from .export import export_onnx

        checks = export_onnx(self._net, os.path.join(folder, "model.onnx"), opset=self._opset,
                             check_shapes=self._graph.checks, window=self._graph.batch)
        _logger.debug("ONNX export checked: %s", "; ".join(map(str, checks)))

    def _open(self, entry: os.PathLike[str]) -> object:
        from .export import ort_session

        return ort_session(os.path.join(entry, "model.onnx"), self._providers, self._threads)

    def run(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) normalised float32 → (B, H, W) float32 depth (thread-safe)."""
        from .export import INPUT_NAME, OUTPUT_NAME

        feed = {INPUT_NAME: host_array(batch)}
        self._graph.check_batch(len(feed[INPUT_NAME]))
        return self._session.run([OUTPUT_NAME], feed)[0]  # type: ignore[attr-defined]


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "?"
