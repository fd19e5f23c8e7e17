"""What the host CPU can do, read once (stdlib only: the CLI, io and engine all ask)."""

from __future__ import annotations

import functools
import importlib
import platform


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo `flags` or Arm `Features`); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "this CPU"


# x86 int8 dot-product instructions: without them int8 kernels use 16-bit multiply-adds, which
# saturate and run no faster than fp32 (backends/openvino.py, README Precision: int8)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def has_int8_dot_products() -> bool:
    """VNNI or AMX int8 instructions on this CPU (/proc/cpuinfo)."""
    flags = cpu_flags()
    return any(f in flags for f in VNNI_FLAGS)


@functools.lru_cache(maxsize=1)
def has_avx512() -> bool:
    """AVX-512 (F) on this CPU: /proc/cpuinfo, else numpy's own dispatch probe (other OSes)."""
    flags = cpu_flags()
    if flags:
        return "avx512f" in flags
    try:  # numpy's private module: its name moved before (numpy.core -> numpy._core)
        features = importlib.import_module("numpy._core._multiarray_umath").__cpu_features__
    except (ImportError, AttributeError):
        return False
    return bool(features.get("AVX512F"))
