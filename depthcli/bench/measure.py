"""Measuring: device sync, peak memory, FLOPs, the matmul peak, per-run series, deviations."""

from __future__ import annotations

import math
import re
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class PeakMemory:
    """Peak host RSS (Linux VmHWM, resettable; ru_maxrss elsewhere) and peak CUDA memory."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @staticmethod
    def _status_kb(field: str = "VmHWM") -> int | None:
        try:
            with open("/proc/self/status") as f:
                m = re.search(field + r":\s+(\d+)\s*kB", f.read())
            return int(m.group(1)) if m else None
        except OSError:
            return None

    def current_mb(self) -> float | None:
        """Resident memory now (Linux), e.g. with the models loaded, before a phase."""
        kb = self._status_kb("VmRSS")
        return round(kb / 1024, 1) if kb is not None else None

    def reset(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict[str, float | None]:
        kb = self._status_kb()
        if kb is None:
            import resource

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            if sys.platform == "darwin":
                kb //= 1024
        out: dict[str, float | None] = {"host_mb": round(kb / 1024, 1), "device_mb": None}
        if self.device.type == "cuda":
            import torch

            out["device_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        return out


def count_flops(model: torch.nn.Module, shape: tuple[int, ...], device: torch.device) -> int:
    """FLOPs of one forward at `shape` (batch 1), attention included (CPU SDPA is not counted by
    torch's default table, so its formula is registered for the CPU kernel too)."""
    import torch
    from torch.utils import flop_counter as fcm

    def cpu_sdpa(q, k, v, *args, out_shape=None, **kwargs) -> int:
        return int(fcm.sdpa_flop_count(q, k, v))

    mapping = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None and cpu_flash not in fcm.flop_registry:
        mapping[cpu_flash] = cpu_sdpa
    x = torch.zeros((1, *shape[1:]), device=device)
    param = next(model.parameters())
    x = x.to(param.dtype)
    with fcm.FlopCounterMode(display=False, custom_mapping=mapping) as counter, \
            torch.inference_mode():
        model(x)
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype, reps: int = 5) -> float:
    """GFLOP/s of a large square matmul (best of `reps` after a warm-up): torch's, and on a CPU
    in fp32 also OpenVINO's (oneDNN) when it is installed, whichever is faster.

    Why both: the BLAS behind torch's CPU matmul does not use every CPU's widest units (on a
    2-core AVX-512 AMD EPYC, 2048^2 fp32: torch 156 GFLOP/s, OpenVINO 287), so torch's figure
    alone is not the machine's peak and the OpenVINO backend read as 177 % of it.
    """
    import torch

    n = 4096 if device.type != "cpu" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = math.inf
    with torch.inference_mode():
        torch.matmul(a, b)
        sync(device)
        for _ in range(reps):
            t = time.perf_counter()
            torch.matmul(a, b)
            sync(device)
            best = min(best, time.perf_counter() - t)
    if device.type == "cpu" and dtype == torch.float32:
        best = min(best, _openvino_matmul_s(a.numpy(), b.numpy(), reps, torch.get_num_threads()))
    return 2 * n**3 / best / 1e9


def _openvino_matmul_s(a: np.ndarray, b: np.ndarray, reps: int, threads: int) -> float:
    """Best seconds of `a @ b` in OpenVINO's CPU plugin (f32, `threads`); inf without it."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return math.inf
    x = ops.parameter(list(a.shape), np.float32)
    model = ov.Model([ops.matmul(x, ops.constant(b), False, False)], [x])
    request = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                     "INFERENCE_NUM_THREADS": threads}
                                      ).create_infer_request()
    request.infer([a])
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        request.infer([a])
        best = min(best, time.perf_counter() - t)
    return best


@dataclass
class Series:
    """Per-run values of one metric; reported as median and relative spread."""

    values: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(v)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def spread(self) -> float:
        if len(self.values) < 2 or not self.median:
            return 0.0
        return (max(self.values) - min(self.values)) / self.median

    def as_dict(self, scale: float = 1.0, nd: int = 2) -> dict[str, object]:
        return {"median": round(self.median * scale, nd), "spread_pct": round(100 * self.spread, 1),
                "runs": [round(v * scale, nd) for v in self.values]}


STAGES = ("decode", "preprocess", "model", "postprocess", "write")


@contextmanager
def timer(acc: dict[str, float], name: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    acc[name] = acc.get(name, 0.0) + time.perf_counter() - t


def deviation(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    """|got - ref| as a fraction of each reference's range: max, 99th percentile and mean
    (the worst image for each), and the mean over all images (`mean_of_range_avg`)."""
    mx = p99 = mean = 0.0
    means = []
    for r, g in zip(ref, got, strict=True):
        rng = float(r.max() - r.min()) or 1.0
        d = np.abs(g.astype(np.float64) - r) / rng
        mx = max(mx, float(d.max()))
        p99 = max(p99, float(np.percentile(d, 99)))
        means.append(float(d.mean()))
        mean = max(mean, means[-1])
    return {"max_of_range": mx, "p99_of_range": p99, "mean_of_range": mean,
            "mean_of_range_avg": float(np.mean(means)) if means else 0.0}
