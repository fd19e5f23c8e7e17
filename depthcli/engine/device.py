"""Device, precision and thread-count policy, decided once for every runtime."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "fp16", "bf16", "int8"]  # int8: OpenVINO (CPU) only
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")


def gpu_driver_loaded() -> bool:
    """Whether this machine may have a GPU torch could use, known without importing torch
    (~5 s): an NVIDIA driver or a ROCm device on Linux; elsewhere (MPS, CUDA on Windows) only
    torch can tell, so True."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl",
                                            "/dev/kfd"))


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' → cuda, then mps, then cpu; an explicit device that is absent is an error."""
    torch = import_torch()  # the first torch step of a run: a pending --threads applies

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


# --threads of the runs in progress that started before torch was loaded (innermost last): a
# run on a cached runtime model may never load it (engine/warm.py).
_PENDING: list[int] = []


def run_threads() -> int | None:
    """The intra-op thread count of this run, for the runtimes (OpenVINO, ONNX Runtime) too:
    torch's, which `--threads` sets and OMP_NUM_THREADS presets; where torch is not loaded,
    `--threads` if given, else None (each runtime's own default). One setting then governs
    every backend: a runtime taking every core beside a process limited to one oversubscribes
    it."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    return _PENDING[-1] if _PENDING else None


def current_threads() -> int:
    """torch's intra-op thread count (what `--threads` set): a setting a result depends on.
    Without importing torch where it is not loaded: the figure torch would have."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    return _PENDING[-1] if _PENDING else default_threads()


def default_threads() -> int:
    """torch's default intra-op thread count, without torch: OMP_NUM_THREADS (MKL_NUM_THREADS)
    if set, else the physical cores (what torch counts), else the logical CPUs."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        try:
            n = int(os.environ.get(var, ""))
        except ValueError:
            continue
        if n > 0:
            return n
    cores = set()
    for topo in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(),
                       (topo / "core_id").read_text().strip()))
        except OSError:
            continue
    return len(cores) or os.cpu_count() or 1


def import_torch() -> Any:
    """torch, with a `--threads` given before it was loaded applied to it."""
    import torch

    if _PENDING:
        torch.set_num_threads(_PENDING[-1])
    return torch


def set_threads(n: int) -> None:
    """Set torch's intra-op thread count for the rest of the process (`--threads`): the one
    place that changes it, so every runtime reads the same figure (`run_threads`)."""
    import torch

    torch.set_num_threads(int(n))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None = leave as is). Where torch is not
    loaded it is not imported for this: the count waits for it (`import_torch`) and reaches
    the runtimes meanwhile (`run_threads`)."""
    if not n:
        yield
        return
    if sys.modules.get("torch") is None:
        _PENDING.append(int(n))
        try:
            yield
        finally:
            _PENDING.pop()
        return
    old = current_threads()
    set_threads(n)
    try:
        yield
    finally:
        set_threads(old)
