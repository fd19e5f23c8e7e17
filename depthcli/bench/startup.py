"""Where the fixed cost of a run goes: a fresh process from its start to the first image
entering the network, step by step (`depthcli bench --startup`).

The steps are those of `depthcli predict` on one image: Python and depthcli's imports (torch,
timm, the runtime), reading the checkpoint into the torch model, the backend (cache key,
conversion or cache load, compile), decoding and preprocessing the first image. A warm start
(a checkpoint file whose OpenVINO model is cached and recorded: engine/warm.py) has no torch
and no checkpoint read; its `cache_key` is the record's lookup. Each run is a
new process, as a user's command is; untimed processes first (`--warmup`, default 1) fill the
runtime cache and the page cache.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

STEPS = ("process_start", "imports", "checkpoint_read", "cache_key", "convert", "cache_load",
         "compile", "backend_other", "first_image", "to_first_forward")


def measure(model: str, weights: Path | None, backend: str, image: Path, input_size: int | None,
            runs: int, warmup: int = 1) -> dict[str, object]:
    """Median seconds of each step over `runs` fresh processes after `warmup` untimed ones
    (the first converts, or brings the files into the page cache)."""
    per: list[dict[str, float]] = []
    for r in range(runs + warmup):
        cmd = [sys.executable, "-m", "depthcli.bench.startup", model, str(weights or ""),
               backend, str(image), str(input_size or 0), repr(time.time())]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode:
            tail = (out.stderr.strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"start-up measurement failed: {tail}")
        if r >= warmup:
            per.append(json.loads(out.stdout.strip().splitlines()[-1]))
    steps = {k: round(statistics.median(p.get(k, 0.0) for p in per), 3) for k in STEPS}
    return {"runs": runs, "warmup": warmup, "backend": per[-1].get("backend_name", backend), "seconds": steps,
            "total_runs": [round(p["to_first_forward"], 3) for p in per]}


def _child(argv: list[str]) -> dict[str, object]:
    """One process's steps; `argv[5]` is the parent's wall clock just before it started us.

    OpenVINO (or auto) with a checkpoint file starts warm where `depthcli predict` would
    (engine/warm.py: the recorded cached model, no torch), as column "openvino-warm"; else the
    full path: torch, the checkpoint, the cache key from its numbers."""
    model, weights, backend, image, size, spawned = argv
    t0 = float(spawned)
    got: dict[str, object] = {"process_start": time.time() - t0}
    t = time.perf_counter()
    from ..engine.warm import warm_engine
    from ..io.images import read_image

    est = None
    if weights and backend in ("auto", "openvino"):
        import openvino  # timed: what a warm run imports

        imports = time.perf_counter() - t
        t = time.perf_counter()
        est = warm_engine(model, weights, max_depth=None, device="cpu", precision="fp32",
                          backend=backend, input_size=int(size) or None)
        if est is not None:
            steps = dict(getattr(est.backend, "timings", {}))
            got.update(steps, imports=imports, checkpoint_read=0.0, convert=0.0,
                       backend_name="openvino-warm")
            got["cache_key"] = time.perf_counter() - t - sum(steps.values())  # the record
            got["backend_other"] = 0.0
        else:
            t -= imports  # the full path's imports include those
    if est is None:
        import timm  # noqa: F401
        import torch  # noqa: F401 - timed: what a run imports

        from ..engine.core import DepthEngine
        from ..models import create_model

        if backend in ("auto", "openvino"):
            import openvino  # noqa: F401
        got["imports"] = time.perf_counter() - t
        t = time.perf_counter()
        net = create_model(model, weights=weights or None, pretrained=bool(weights))
        if not weights:
            from ..checkpoints.synthetic import load_recipe_weights

            load_recipe_weights(net)
        got["checkpoint_read"] = time.perf_counter() - t
        t = time.perf_counter()
        est = DepthEngine(net, device="cpu", precision="fp32", backend=backend,
                          input_size=int(size) or None, owns_model=True,
                          weights_file=weights or None)
        took = time.perf_counter() - t
        steps = dict(getattr(est.backend, "timings", {}))
        got.update(steps)
        got["backend_other"] = took - sum(steps.values())
        got["backend_name"] = est.backend.name
    t = time.perf_counter()
    x = est.preprocess(read_image(Path(image)))
    got["first_image"] = time.perf_counter() - t
    got["to_first_forward"] = time.time() - t0
    est.forward_batch(x[None])
    return got


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1:])))
