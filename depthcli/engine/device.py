"""Device, precision and thread-count policy, decided once for every runtime."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "fp16", "bf16", "int8"]  # int8: OpenVINO (CPU) only
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' → cuda, then mps, then cpu; an explicit device that is absent is an error."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine")
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("--device mps: MPS is not available on this machine")
    return dev


def resolve_precision(precision: Precision | str, device: torch.device) -> torch.dtype:
    """'auto' = bf16 on CUDA where the GPU has it (else fp16), fp32 elsewhere."""
    import torch

    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in dtypes:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return dtypes[precision]


def is_half(precision: str, device_type: str) -> bool:
    """Whether `precision` on a `device_type` ("cpu", "cuda", ...) computes in 16 bits: the
    one rule behind both the engine's dtype (`resolve_precision`) and the preprocessing a
    model gets before it is loaded (`engine.spec.EngineSpec.preprocess`)."""
    return precision in ("fp16", "bf16") or (precision == "auto" and device_type == "cuda")


def precision_name(dtype: torch.dtype) -> str:
    import torch

    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def default_workers(device_type: str) -> int:
    """Host threads for decode/preprocess (and as many writers).

    A CPU model already keeps every core busy, so more host threads only steal from it; a GPU
    model leaves the cores to host work, which then is what limits images/s.
    """
    if device_type == "cpu":
        return 2
    return max(2, min(8, os.cpu_count() or 2))


def run_threads() -> int | None:
    """The intra-op thread count of this run, for the runtimes (OpenVINO, ONNX Runtime) too:
    torch's, which `--threads` sets and OMP_NUM_THREADS presets; left to each runtime's own
    default (every core) only where torch is not loaded. One setting then governs every
    backend: a runtime taking every core beside a process limited to one oversubscribes it."""
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def current_threads() -> int:
    """torch's intra-op thread count (what `--threads` set): a setting a result depends on."""
    import torch

    return int(torch.get_num_threads())


def set_threads(n: int) -> None:
    """Set torch's intra-op thread count for the rest of the process (`--threads`): the one
    place that changes it, so every runtime reads the same figure (`run_threads`)."""
    import torch

    torch.set_num_threads(int(n))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None = leave as is)."""
    if not n:
        yield
        return
    old = current_threads()
    set_threads(n)
    try:
        yield
    finally:
        set_threads(old)
