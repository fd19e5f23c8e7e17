"""Which precisions are fast where, and what `predict` runs when half precision would be slow.

A user asks for half precision to go faster. On a CPU without native bf16 arithmetic (no
AVX512-BF16 nor AMX-BF16 on x86, no BF16 on Arm) torch emulates bf16 and a DA-V2 forward pass
is several times slower than fp32 (measured: README "Precision"); fp16 has no fast CPU path
in torch at all. So `predict --precision bf16|fp16` on such a CPU warns once and runs fp32.
GPUs are left as asked (bf16 where the GPU has it, fp16 everywhere), `auto` is fp32 on CPUs
and half on CUDA. The Python API (`DepthEngine(precision=...)`) runs exactly what it is
given: this policy is the command line's.
"""

from __future__ import annotations

import functools
import logging
import platform

from ..cpu import cpu_flags, cpu_name

_logger = logging.getLogger("depthcli")

BF16_X86_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_fast(precision: str) -> bool:
    """Whether torch runs `precision` on this CPU at least as fast as fp32."""
    if precision in ("fp32", "auto"):
        return True
    if precision == "bf16":
        flags = cpu_flags()
        return any(f in flags for f in BF16_X86_FLAGS) or (
            platform.machine().lower() in ("aarch64", "arm64") and "bf16" in flags)
    return False  # fp16: no fast CPU kernels in torch


def cli_precision(precision: str, device_type: str) -> str:
    """The precision `predict` runs: half precision with no fast path here becomes fp32
    (one warning line per process). int8 is left as asked: only OpenVINO runs it, and a device
    or backend that cannot is a one-line error (backends.check_int8)."""
    if precision == "int8" or device_type != "cpu" or cpu_fast(precision):
        return precision
    _warn_once(precision)
    return "fp32"


@functools.cache
def _warn_once(precision: str) -> None:
    if precision == "bf16":
        why = (f"{cpu_name()} has no native bf16 (no {' / '.join(BF16_X86_FLAGS)}), so torch "
               "emulates it, several times slower than fp32")
    else:
        why = "fp16 has no fast path on CPUs (several times slower than fp32)"
    _logger.warning("--precision %s: %s; running fp32 instead", precision, why)


def precision_note() -> str:
    """One line for `depthcli models`: which precisions are fast where, and on this CPU."""
    here = "yes" if cpu_fast("bf16") else "no, fp32 is used"
    return ("Precision: fp32 everywhere (auto on CPUs); bf16 is fast on CUDA GPUs from Ampere on "
            "(auto there) and on CPUs with AVX512-BF16/AMX (this CPU: " + here + "); fp16 is "
            "fast on CUDA and MPS, never on a CPU (fp32 is used).")
