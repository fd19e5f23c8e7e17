"""The benchmark's orchestration: set up ours and the peer, measure run by run, assemble results.

Each run measures, back to back: the matmul peak, our stages, our end-to-end pass, then the
peer's model and end-to-end pass, so that ours and the peer's see the same machine load;
ratios are medians of per-run ratios.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
import numpy as np
import torch

from ..device import precision_name, resolve_device, resolve_precision
from ..engine import DepthEstimator
from ..io.images import read_image
from ..layouts import official_state_dict
from ..models import create_model, get_spec
from ..synthetic import load_recipe_weights
from .measure import STAGES, PeakMemory, Series, count_flops, deviation, matmul_peak
from .passes import e2e_pass, find_inputs, stage_pass
from .peer import Peer
from .report import device_name, loadavg, print_report

if TYPE_CHECKING:
    from ..models import DepthAnything


@dataclass
class BenchOptions:
    model: str
    weights: Path | None = None
    device: str = "auto"
    precision: str = "fp32"
    peer_precision: str | None = None
    batch_size: int = 1
    runs: int = 3
    warmup: int = 1
    n_images: int | None = None
    source: Path | None = None
    input_size: int | None = None
    workers: int = 2
    threads: int | None = None
    compile: bool = False
    channels_last: bool = False
    backend: str = "torch"
    peer: bool = True
    as_json: bool = False


class Bench:
    """One benchmark: the estimator under test, the optional peer, and what they measured."""

    def __init__(self, o: BenchOptions) -> None:
        self.o = o
        self.log = (lambda m: click.echo(m, err=True)) if o.as_json else click.echo
        self.spec = get_spec(o.model)
        try:
            self.dev = resolve_device(o.device)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        self.dtype = resolve_precision(o.precision, self.dev)
        self.prec = precision_name(self.dtype)
        net = cast("DepthAnything", create_model(self.spec.name, weights=o.weights,
                                                 pretrained=o.weights is not None))
        if o.weights is None:
            load_recipe_weights(net)
        self.ref_net = None
        if self.dtype != torch.float32:  # an fp32 twin to state the deviation of half precision
            self.ref_net = create_model(self.spec.name, pretrained=False)
            self.ref_net.load_state_dict(net.state_dict())
        self.peer: Peer | None = None
        self.peer_prec = o.peer_precision or self.prec
        if o.peer:
            peer_dtype = resolve_precision(self.peer_prec, self.dev)
            self.peer = Peer(self.spec, official_state_dict(net), net.max_depth,
                             o.input_size or self.spec.input_size, self.dev, peer_dtype,
                             self.peer_prec)
        self.net = net  # the fp32 module: FLOPs are counted on it whatever runs the model
        self.est = DepthEstimator(net, device=self.dev, precision=self.prec,  # type: ignore[arg-type]
                                  input_size=o.input_size, compile=o.compile,
                                  channels_last=o.channels_last, backend=o.backend,
                                  owns_model=True)
        self.mem = PeakMemory(self.dev)
        self.flops: dict[tuple[int, int], int] = {}
        self.stage = {s: Series() for s in STAGES}
        self.e2e, self.peak, self.peer_model, self.peer_e2e = Series(), Series(), Series(), Series()
        self.mem_max: dict[str, dict[str, float | None]] = {}

    def header(self) -> dict[str, object]:
        o = self.o
        return {
            "model": self.spec.name,
            "weights": str(o.weights) if o.weights else "synthetic recipe (in memory)",
            "device": device_name(self.dev), "precision": self.prec, "backend": self.est.backend.name,
            "batch_size": o.batch_size, "runs": o.runs, "input_size": self.est.preprocess.input_size,
            "compile": o.compile, "channels_last": o.channels_last,
            "torch_threads": torch.get_num_threads() if self.dev.type == "cpu" else None,
            "workers": o.workers, "torch": torch.__version__,
        }

    def flops_of(self, shape: tuple[int, int]) -> int:
        """FLOPs once per network input shape (the peer's shapes too: its resize rule differs)."""
        if shape not in self.flops:
            self.flops[shape] = count_flops(self.net, (1, 3, *shape), self.dev)
        return self.flops[shape]

    def track(self, name: str) -> None:
        got = self.mem.read()
        old = self.mem_max.setdefault(name, got)
        for k, v in got.items():
            if v is not None and (old[k] is None or v > old[k]):  # type: ignore[operator]
                old[k] = v

    def one_run(self, r: int, work: Path, folder: Path, files: list[Path]) -> None:
        o, n = self.o, len(files)
        self.peak.add(matmul_peak(self.dev, self.dtype))
        self.mem.reset()
        acc = stage_pass(self.est, files, work / "stages", o.batch_size)
        self.track("stages")
        for s in STAGES:
            self.stage[s].add(acc.get(s, 0.0) / n)
        shutil.rmtree(work / "e2e", ignore_errors=True)  # fresh outputs, bounded disk use
        self.mem.reset()
        self.e2e.add(e2e_pass(self.est, folder, work / "e2e", o.batch_size, o.workers) / n)
        self.track("end_to_end")
        line = (f"  run {r + 1}/{o.runs}: model {self.stage['model'].values[-1] * 1e3:.0f} ms/img, "
                f"end-to-end {self.e2e.values[-1] * 1e3:.0f} ms/img")
        if self.peer is not None:
            self.peer_model.add(self.peer.model_pass(o.batch_size))
            self.mem.reset()
            self.peer_e2e.add(self.peer.e2e_pass(files, work / "peer", o.batch_size))
            self.track("peer_end_to_end")
            line += (f"; peer model {self.peer_model.values[-1] * 1e3:.0f}, end-to-end "
                     f"{self.peer_e2e.values[-1] * 1e3:.0f} ms/img")
        self.log(line)

    def measure(self, work: Path, result: dict[str, Any]) -> None:
        o = self.o
        folder, files, desc = find_inputs(o.n_images, o.source, work)
        uniq = list(dict.fromkeys(files))
        shapes: dict[Path, tuple[int, int]] = {}
        mps = []
        for p in uniq:
            h, w = read_image(p).shape[:2]
            mps.append(h * w / 1e6)
            shapes[p] = self.est.preprocess.target_size(h, w)
        result["inputs"] = {
            "source": desc, "images": len(files),
            "megapixels": [round(min(mps), 2), round(max(mps), 2)],
            "network_shapes": sorted({f"{h}x{w}" for h, w in shapes.values()}),
        }
        self.log(f"depthcli bench: {self.spec.name} on {result['device']}, {self.prec}, "
                 f"{self.est.backend.name} backend, batch {o.batch_size}, {len(files)} images "
                 f"({desc}; {min(mps):.2f}-{max(mps):.2f} MP), {o.runs} runs")
        model_flops = sum(self.flops_of(shapes[p]) for p in files) / len(files)
        if self.peer is not None:
            self.peer.prepare(files)
            self.peer.flops = sum(self.flops_of(s) for s in self.peer.shapes) / len(files)
        firsts = list({shapes[p]: p for p in reversed(files)}.values())
        for name in ("warm", "stages", "dev", "peer"):
            (work / name).mkdir()
        for _ in range(o.warmup):  # one image per network shape through every stage
            stage_pass(self.est, firsts * o.batch_size, work / "warm", o.batch_size)
            if self.peer is not None:
                self.peer.warm(work / "warm")
        resident = self.mem.current_mb()
        for r in range(o.runs):
            self.one_run(r, work, folder, files)
        result.update(self.ours(model_flops))
        result["memory"] = {"resident_before_runs_mb": resident, "stages": self.mem_max["stages"],
                            "end_to_end": self.mem_max["end_to_end"]}
        if self.ref_net is not None:  # half precision: how far from fp32, on each distinct image
            ref_est = DepthEstimator(self.ref_net, device=self.dev, precision="fp32",
                                     input_size=o.input_size)
            ref = [ref_est.infer(read_image(p)) for p in uniq]
            got: list[np.ndarray] = []
            stage_pass(self.est, uniq, work / "dev", 1, keep=got)
            result["deviation_vs_fp32"] = deviation(ref, got)
        if self.peer is not None:
            result.update(self.versus_peer())

    def ours(self, model_flops: float) -> dict[str, object]:
        stage, e2e, peak = self.stage, self.e2e, self.peak
        gflops = model_flops / stage["model"].median / 1e9
        # Paired with the peak measured in the same run: robust to the machine's speed drifting
        # between runs (seen here: the fp32 peak moved 99-194 GFLOP/s over an afternoon).
        paired = Series([model_flops / m / 1e9 / p
                         for m, p in zip(stage["model"].values, peak.values, strict=True)])
        return {
            "stages_ms": {s: stage[s].as_dict(1e3, 1) for s in STAGES},
            "sum_of_stages_ms": round(sum(stage[s].median for s in STAGES) * 1e3, 1),
            "end_to_end": {
                "ms_per_image": e2e.as_dict(1e3, 1), "images_per_s": round(1 / e2e.median, 3),
                "vs_model_only_pct": round(100 * (e2e.median / stage["model"].median - 1), 1),
            },
            "compute": {
                "gflop_per_image": round(model_flops / 1e9, 1),
                "gflop_by_shape": {f"{h}x{w}": round(f / 1e9, 1)
                                   for (h, w), f in sorted(self.flops.items())},
                "model_gflop_s": round(gflops, 1),
                "matmul_peak_gflop_s": round(max(peak.values), 1),
                "matmul_gflop_s_runs": [round(v, 1) for v in peak.values],
                "pct_of_peak": round(100 * gflops / max(peak.values), 1),
                "matmul_dtype": self.prec,
                "pct_of_same_run_peak": round(100 * paired.median, 1),
                "pct_of_same_run_peak_runs": [round(100 * v, 1) for v in paired.values],
            },
        }

    def versus_peer(self) -> dict[str, object]:
        peer = self.peer
        assert peer is not None
        pm = Series([a / b for a, b in zip(self.peer_model.values, self.stage["model"].values,
                                           strict=True)])
        pe = Series([a / b for a, b in zip(self.peer_e2e.values, self.e2e.values, strict=True)])
        prec = self.peer_prec
        return {
            "peer": {
                "what": "transformers pipeline('depth-estimation'): "
                        "DepthAnythingForDepthEstimation "
                        f"(SDPA attention) + DPTImageProcessor, same weights, {prec}"
                        + (" (whole model cast; output hooked back to fp32 for the pipeline's "
                           "postprocess)" if prec != "fp32" else ""),
                "transformers": __import__("transformers").__version__,
                "precision": prec,
                "network_shapes": sorted({f"{h}x{w}" for h, w in peer.shapes}),
                "model_ms": self.peer_model.as_dict(1e3, 1),
                "model_gflop_s": round(peer.flops / self.peer_model.median / 1e9, 1),
                "end_to_end": {"ms_per_image": self.peer_e2e.as_dict(1e3, 1),
                               "images_per_s": round(1 / self.peer_e2e.median, 3)},
                "memory": {"end_to_end": self.mem_max["peer_end_to_end"]},
            },
            "ratio": {  # ours / peer throughput, median of the per-run ratios
                "end_to_end": round(pe.median, 2),
                "end_to_end_runs": [round(v, 2) for v in pe.values],
                "model": round(pm.median, 2), "model_runs": [round(v, 2) for v in pm.values],
            },
        }


def run_bench(o: BenchOptions) -> dict[str, object]:
    """Run the benchmark, print its report (text, or JSON with `as_json`), return the results."""
    import json

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if o.threads:
        torch.set_num_threads(o.threads)
    bench = Bench(o)
    result: dict[str, Any] = bench.header()
    with tempfile.TemporaryDirectory(prefix="depthcli-bench-") as tmp:
        bench.measure(Path(tmp), result)
    result["load_average"] = loadavg()
    if o.as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        print_report(result)
    return result
