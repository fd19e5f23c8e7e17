"""The GPU benchmark: one script, a few minutes on one GPU, figures for the README.

    python -m tools.gpu_bench --device cuda --json gpu.json

Measures, with random recipe weights (the speed does not depend on the numbers):
- images/s of ViT-S/B/L (`da2-small/base/large`) at 518x518, batch 1, 8 and 64, in fp16 and
  bf16: eager torch, and ONNX Runtime with the CUDA and TensorRT execution providers where
  onnxruntime-gpu provides them (fp32 graph; TensorRT builds its fp16 engine itself);
- frames/s of `vda-small` on 1080p frames (input 518: 518x924 windows of 32 frames), torch.
Each figure is the median of `--reps` timed passes after two warm-up passes, synchronised.
Missing providers or out-of-memory batches are reported as such, never fatal.
`--device cpu --models da2-tiny-test --batches 1 --size 56 --precisions fp32 --vda-model
vda-tiny-test --vda-hw 28x42` is a seconds-long smoke run.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

_logger = logging.getLogger(__name__)


def _timed(fn: Callable[[], object], sync: Callable[[], None], reps: int) -> float:
    """Median seconds of `fn` after two warm-up calls."""
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _model(name: str) -> Any:
    from depthcli.checkpoints.synthetic import load_recipe_weights
    from depthcli.models import create_model

    net = create_model(name, pretrained=False)
    load_recipe_weights(net)
    return net.eval()


def torch_images(name: str, device: str, precision: str, batch: int, size: int,
                 reps: int) -> float:
    """Images/s of the torch backend (the engine's, as `predict` runs it)."""
    import torch

    from depthcli.backends.torch import TorchBackend

    dev = torch.device(device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    be = TorchBackend(_model(name), dev, dtype)
    x = torch.randn(batch, 3, size, size, device=dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    return batch / _timed(lambda: be.run(x), sync, reps)


def ort_images(name: str, provider: str, batch: int, size: int, reps: int,
               workdir: Path) -> float | str:
    """Images/s of ONNX Runtime with `provider` on the verified export, or why not."""
    import numpy as np
    import onnxruntime as ort

    from depthcli.backends.export import INPUT_NAME, OUTPUT_NAME, export_onnx

    if provider not in ort.get_available_providers():
        return f"{provider} not available"
    path = workdir / f"{name}.onnx"
    if not path.exists():
        export_onnx(_model(name), path)
    opts: dict[str, Any] = {"trt_fp16_enable": True} if provider.startswith("Tensorrt") else {}
    sess = ort.InferenceSession(str(path), providers=[(provider, opts), "CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    return batch / _timed(lambda: sess.run([OUTPUT_NAME], {INPUT_NAME: x}), lambda: None, reps)


def vda_frames(name: str, device: str, precision: str, hw: tuple[int, int], reps: int) -> float:
    """Frames/s of a temporal model on 32-frame windows of `hw` network frames (1080p:
    518x924), as the windowed video path runs it."""
    import torch

    from depthcli.backends.torch import TorchBackend

    dev = torch.device(device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    be = TorchBackend(_model(name), dev, dtype)
    x = torch.randn(32, 3, *hw, device=dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    return 32 / _timed(lambda: be.run(x), sync, reps)


def _guard(fn: Callable[[], float | str]) -> float | str:
    """A figure, or the one-line reason it could not be measured (OOM, missing provider)."""
    try:
        v = fn()
    except Exception as exc:  # noqa: BLE001 - reported in the table, the run goes on
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"failed: {first[:120]}"
    return round(v, 2) if isinstance(v, float) else v


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="da2-small,da2-base,da2-large")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--precisions", default="fp16,bf16")
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--vda-model", default="vda-small")
    ap.add_argument("--vda-hw", default="518x924", help="VDA network frame size (1080p: 518x924)")
    ap.add_argument("--providers", default="CUDAExecutionProvider,TensorrtExecutionProvider")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-vda", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="Write the results here too.")
    a = ap.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    batches = [int(b) for b in a.batches.split(",")]
    out: dict[str, Any] = {"device": a.device, "size": a.size, "torch": {}, "onnxruntime": {}}
    for m in models:
        for p in a.precisions.split(","):
            for b in batches:
                key = f"{m} {p} b{b}"
                out["torch"][key] = _guard(partial(torch_images, m, a.device, p, b, a.size,
                                                   a.reps))
                print(f"torch        {key:<28} {out['torch'][key]} img/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="depthcli-gpu-bench-") as tmp:
        for m in models:
            for prov in [p for p in a.providers.split(",") if p]:
                for b in batches:
                    key = f"{m} {prov} b{b}"
                    out["onnxruntime"][key] = _guard(partial(ort_images, m, prov, b, a.size,
                                                             a.reps, Path(tmp)))
                    print(f"onnxruntime  {key:<40} {out['onnxruntime'][key]}", flush=True)
    if not a.no_vda:
        h, w = (int(v) for v in a.vda_hw.split("x"))
        hw = (h, w)
        out["vda"] = {p: _guard(partial(vda_frames, a.vda_model, a.device, p, hw, a.reps))
                      for p in a.precisions.split(",")}
        print(f"{a.vda_model} {a.vda_hw} frames/s: {out['vda']}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
