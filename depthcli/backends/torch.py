"""The eager PyTorch backend: the network on CPU, CUDA or MPS, in fp32, bf16 or fp16."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..engine.allocator import tune_malloc
from ..engine.device import precision_name
from .attention import ChunkedAttention

_logger = logging.getLogger(__name__)


class TorchBackend:
    """Runs a depth module; (B, 3, H, W) → (B, H, W) float32 on the device.

    Temporal models (`model.temporal`) take the batch as the frames of one window:
    (T, 3, H, W) → (T, H, W).

    `owns_model=False` (a module the caller built) copies the module before anything that
    changes it in place (LayerScale folding), so the caller's module keeps its weights and keys.
    """

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype, *,
                 channels_last: bool = False, compile: bool = False,
                 owns_model: bool = True) -> None:
        self.torch_device = device
        self.device = str(device)
        self.dtype = dtype
        self.precision = precision_name(dtype)
        self.temporal = bool(getattr(model, "temporal", False))
        tune_malloc()
        fold = dtype == torch.float32 and hasattr(model, "encoder")
        if fold and not owns_model:
            model = copy.deepcopy(model)
        self.model = model.eval().to(device)
        if fold:
            # fp32 only: folded into bf16/fp16 weights, gamma * W rounds worse than the separate
            # multiply (bf16 mean deviation from fp32 0.53 -> 0.59 % of range on a sample photo).
            encoder: Any = self.model.encoder  # a DinoV2Encoder (checked by hasattr above)
            encoder.fold_layerscale()
        # channels_last is always on for CPU: oneDNN runs the DPT head's convolutions in NHWC
        # without reordering to its blocked layout on every call (ViT-S 518x784 fp32 on 2 cores:
        # 1483 -> 1368 ms; same numbers within 2.5e-6 of the depth range).
        if channels_last or device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        # bf16 on CPU: run a copy of the whole model cast to bf16 instead of autocast, which
        # re-casts every weight on every call and keeps norms, GELU and residual adds in fp32.
        # The fp32 module stays for the non-finite retry. CUDA/MPS keep autocast.
        self._half: torch.nn.Module | None = None
        if dtype == torch.bfloat16 and device.type == "cpu":
            self._half = copy.deepcopy(self.model).to(dtype)
        net = self._half if self._half is not None else self.model
        self._forward: Callable[[torch.Tensor], torch.Tensor] = net
        if compile:
            self._forward = torch.compile(net, dynamic=False)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal:
            return self._forward(x[None])[0]
        return self._forward(x)

    def _run_model(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if dtype == torch.float32:
            if self._half is not None:
                return self.model(x[None])[0] if self.temporal else self.model(x)
            return self._call(x)
        if self._half is not None:
            with ChunkedAttention():
                return self._call(x.to(dtype))
        with torch.autocast(self.torch_device.type, dtype=dtype):
            return self._call(x)

    def run(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Half precision that yields NaN/inf is redone in fp32, with a warning."""
        x = torch.as_tensor(batch)
        if x.device != self.torch_device:
            x = x.pin_memory() if self.torch_device.type == "cuda" else x
            x = x.to(self.torch_device, non_blocking=True)
        with torch.inference_mode():
            out = self._run_model(x, self.dtype).float()
            if self.dtype != torch.float32 and not torch.isfinite(out).all():
                _logger.warning("non-finite output in %s; redoing the batch in fp32",
                                self.precision)
                out = self._run_model(x, torch.float32).float()
        return out
