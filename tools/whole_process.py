"""Whole processes, as a user runs them: `depthcli predict DIR` against a loop over the same
photos with transformers' `depth-estimation` pipeline on the same weights, alternating, best
of N (issue 24's whole-process target).

    python -m tools.whole_process DIR --weights FILE [--model da2-small] [--runs 2]
                                  [--json out.json] [-- extra predict options]

Each side runs in fresh processes, timed from start to exit: depthcli writes its default
colour PNGs, the pipeline loop saves the depth PNG the pipeline returns. One untimed run of
each comes first (depthcli's first run on a checkpoint converts and caches it; both fill the
page cache); the runs then alternate so that a change of load hits both. The pipeline's model
is our checkpoint in transformers' layout (`depthcli.bench.peer`: the -hf checkpoints' config
and preprocessor), saved once and loaded with `pipeline(model=FOLDER)` as a hub model would be.
Bytecode is cached for both (PYTHONDONTWRITEBYTECODE is dropped): a user's install has it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPELINE_LOOP = """
import sys
from pathlib import Path
from transformers import pipeline
model, out, *files = sys.argv[1:]
pipe = pipeline("depth-estimation", model=model, device="cpu")
for i, f in enumerate(files):
    pipe(f)["depth"].save(Path(out) / f"{i:05d}.png")
"""
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def save_peer(model: str, weights: Path, folder: Path) -> None:
    """Our checkpoint as a transformers model folder (config, weights, preprocessor)."""
    import torch

    from depthcli.bench.peer import build_peer
    from depthcli.checkpoints.weights import read_state_dict
    from depthcli.models.registry import get_spec

    spec = get_spec(model)
    net, proc, _ = build_peer(spec, read_state_dict(weights), spec.max_depth_for(None),
                              spec.input_size, torch.device("cpu"), torch.float32)
    net.save_pretrained(folder)
    proc.save_pretrained(folder)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, check=False)
    took = time.perf_counter() - t
    if r.returncode:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd[:6])} ...: {tail}")
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", type=Path)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--model", default="da2-small")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.epilog = "more `depthcli predict` options go after --, e.g. -- --precision int8"
    args = sys.argv[1:] if argv is None else argv
    cut = args.index("--") if "--" in args else len(args)
    a = ap.parse_args(args[:cut])
    a.extra = args[cut + 1:]
    from depthcli.cpu import cpu_name

    files = sorted(str(p) for p in a.inputs.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"{a.inputs}: no images")
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="whole-process-") as tmp:
        root = Path(tmp)
        save_peer(a.model, a.weights, root / "hf")

        def ours(out: Path) -> list[str]:
            return [sys.executable, "-m", "depthcli", "predict", str(a.inputs), "-o", str(out),
                    "--model", a.model, "--weights", str(a.weights), "-q", *a.extra]

        def theirs(out: Path) -> list[str]:
            out.mkdir()
            return [sys.executable, "-c", PIPELINE_LOOP, str(root / "hf"), str(out), *files]

        times: dict[str, list[float]] = {"depthcli": [], "pipeline": []}
        load = [os.getloadavg()[0]]
        for run in range(a.runs + 1):  # run 0: untimed warm-up of both
            for side, cmd in (("depthcli", ours), ("pipeline", theirs)):
                out = root / f"{side}{run}"
                took = timed(cmd(out), env)
                shutil.rmtree(out, ignore_errors=True)
                if run:
                    times[side].append(round(took, 2))
        load.append(os.getloadavg()[0])
    best = {k: min(v) for k, v in times.items()}
    result = {"cpu": cpu_name(), "model": a.model, "images": len(files), "runs": times,
              "best_s": best, "median_s": {k: statistics.median(v) for k, v in times.items()},
              "ratio_best": round(best["pipeline"] / best["depthcli"], 2),
              "load_average": [round(x, 2) for x in load], "predict_options": a.extra}
    print(f"{len(files)} images, {a.model}, {result['cpu']} (load {load[0]:.1f} -> "
          f"{load[1]:.1f})")
    for side, v in times.items():
        print(f"  {side:<9} best {best[side]:7.2f} s   runs {v}")
    print(f"  pipeline / depthcli (best of {a.runs}): {result['ratio_best']}x")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
