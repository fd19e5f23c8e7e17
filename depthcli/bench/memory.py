"""Peak memory of a video run, in a fresh process: the check that memory does not grow with length."""

from __future__ import annotations

import os
import tempfile


def measure_memory(weights: str | os.PathLike[str], frames: int, *,
                   size: tuple[int, int] = (320, 240), input_size: int = 70,
                   formats: tuple[str, ...] = ("color",), model: str | None = None,
                   workdir: str | os.PathLike[str] | None = None,
                   temporal: str | None = None) -> dict[str, float]:
    """Peak RSS of `depthcli predict` on a synthetic `frames`-frame clip, in a fresh process.

    Returns {"frames", "seconds", "peak_rss_mb"}; compare a short and a long clip to check that
    memory does not grow with length. `temporal`: `window` or `stream` (a VDA model's mode).
    """
    import json
    import subprocess
    import sys

    code = f"""
import json, resource, sys, time
from fractions import Fraction
from pathlib import Path
import av, numpy as np
from click.testing import CliRunner
from depthcli.cli import main
w, h, n = {size[0]}, {size[1]}, {frames}
wd = Path(sys.argv[1])
src = wd / "synthetic.mp4"
with av.open(str(src), "w") as c:
    s = c.add_stream("libx264", rate=Fraction(30000, 1001)); s.width, s.height = w, h
    s.pix_fmt = "yuv420p"
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.stack([(np.sin(xx / 9 + i / 7) * 100 + 128), (yy + 2 * i) % 256,
                        np.full_like(xx, i % 256)], -1).astype(np.uint8)
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
args = ["predict", str(src), "-o", str(wd / "out"), "--weights", sys.argv[2], "-q",
        "--input-size", "{input_size}", "--device", "cpu"] + {(["--model", model] if model else [])!r}
args += {(["--temporal", temporal] if temporal else [])!r}
for f in {list(formats)!r}:
    args += ["-f", f]
r = CliRunner().invoke(main, args)
assert r.exit_code == 0, r.output
print(json.dumps({{"frames": n, "seconds": round(time.perf_counter() - t0, 2),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_run_mb": base / 1024}}))
"""
    with tempfile.TemporaryDirectory(dir=workdir) as wd:
        out = subprocess.run([sys.executable, "-c", code, wd, str(weights)], check=True,
                             capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """`python -m depthcli.bench.memory WEIGHTS FRAMES [--model M] [--input-size N]
    [--temporal stream]`."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m depthcli.bench.memory",
                                 description="Peak RSS of depthcli predict on a synthetic clip.")
    ap.add_argument("weights")
    ap.add_argument("frames", type=int)
    ap.add_argument("--model", default=None, help="e.g. vda-small [default: da2-small]")
    ap.add_argument("--input-size", type=int, default=70)
    ap.add_argument("--temporal", choices=("window", "stream"), default=None,
                    help="a VDA model's mode [default: window]")
    a = ap.parse_args()
    result = measure_memory(a.weights, a.frames, input_size=a.input_size, model=a.model,
                            temporal=a.temporal)
    print(json.dumps({"model": a.model or "da2-small", "input_size": a.input_size,
                      "temporal": a.temporal, **result}))


if __name__ == "__main__":
    main()
