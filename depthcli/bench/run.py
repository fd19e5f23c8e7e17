"""The benchmark's orchestration: set up ours and the peer, measure run by run, assemble results.

Each run measures, back to back: the matmul peak, our stages, our end-to-end pass, then the
peer's model and end-to-end pass, so that ours and the peer's see the same machine load;
ratios are medians of per-run ratios.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
import numpy as np
import torch

from ..checkpoints.layouts import official_state_dict
from ..checkpoints.synthetic import load_recipe_weights
from ..engine.core import DepthEngine
from ..engine.device import precision_name, resolve_device, resolve_precision, set_threads
from ..errors import InputError
from ..io.images import read_image
from ..models import create_model, get_spec
from .contender import Contender
from .measure import PeakMemory, Series, count_flops, deviation, matmul_peak
from .passes import find_inputs, stage_pass
from .peer import Peer
from .report import device_name, loadavg, print_backends, print_report

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
    backends: tuple[str, ...] = ("torch",)
    peer: bool = True
    as_json: bool = False
    startup: bool = False
    precisions: tuple[str, ...] = ()  # each backend at each ([] = (precision,)); int8: OpenVINO
    calibrate: Path | None = None  # int8: --calibrate DIR


class Bench:
    """One benchmark: the backends under test, the optional peer, and what they measured."""

    def __init__(self, o: BenchOptions) -> None:
        self.o = o
        self.log = (lambda m: click.echo(m, err=True)) if o.as_json else click.echo
        self.spec = get_spec(o.model)
        try:
            self.dev = resolve_device(o.device)
        except ValueError as exc:
            raise InputError(f"--device: {exc}") from None
        precs = o.precisions or (o.precision,)
        # the matmul peak, the header and the peer: the first non-int8 precision (int8's
        # non-quantised parts and its reference are fp32)
        first = next((p for p in precs if p != "int8"), "fp32")
        self.dtype = resolve_precision(first, self.dev)
        self.prec = precision_name(self.dtype)
        self.precs = tuple(dict.fromkeys(
            "int8" if p == "int8" else precision_name(resolve_precision(p, self.dev))
            for p in precs))
        net = cast("DepthAnything", create_model(self.spec.name, weights=o.weights,
                                                 pretrained=o.weights is not None))
        if o.weights is None:
            load_recipe_weights(net)
        self.peer: Peer | None = None
        self.peer_prec = o.peer_precision or self.prec
        if o.peer:
            peer_dtype = resolve_precision(self.peer_prec, self.dev)
            self.peer = Peer(self.spec, official_state_dict(net), net.max_depth,
                             o.input_size or self.spec.input_size, self.dev, peer_dtype,
                             self.peer_prec)
        self.net = net  # the fp32 module: FLOPs are counted on it whatever runs the model
        # Several backends share `net`: the torch backend then works on a copy (it folds
        # LayerScale in place, which would change the runtime backends' cache keys).
        alone = len(o.backends) == 1 and len(self.precs) == 1
        self.contenders: list[Contender] = []
        for name in o.backends:
            for prec in self.precs:
                if prec == "int8" and name not in ("openvino", "auto"):
                    self.log(f"--backend {name}: no int8 (OpenVINO only), measured at "
                             f"{', '.join(p for p in self.precs if p != 'int8')} only")
                    continue
                est = DepthEngine(net, device=self.dev, precision=prec,  # type: ignore[arg-type]
                                     input_size=o.input_size, compile=o.compile,
                                     channels_last=o.channels_last, backend=name,
                                     owns_model=alone,
                                     calibrate=o.calibrate if prec == "int8" else None)
                c = Contender(name, est, tagged=len(self.precs) > 1 or prec == "int8")
                if any(k.backend == c.backend for k in self.contenders):
                    self.log(f"--backend {name} is {c.backend} here, already measured")
                    continue
                self.contenders.append(c)
        self.est = self.contenders[0].est  # the first one named: the report's headline
        # torch fp32 on the same weights: the reference each other contender is compared with
        self.ref_net = None
        if any(not c.torch_fp32 for c in self.contenders):
            self.ref_net = create_model(self.spec.name, pretrained=False)
            self.ref_net.load_state_dict(net.state_dict())
        self.mem = PeakMemory(self.dev)
        self.flops: dict[tuple[int, int], int] = {}
        self.peak, self.peer_model, self.peer_e2e = Series(), Series(), Series()
        self.peer_mem: dict[str, float | None] = {}

    def header(self) -> dict[str, object]:
        o = self.o
        return {
            "model": self.spec.name,
            "weights": str(o.weights) if o.weights else "synthetic recipe (in memory)",
            "device": device_name(self.dev), "precision": self.est.backend.precision,
            "backend": self.est.backend.name,
            "backends": [c.backend for c in self.contenders],
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

    def one_run(self, r: int, work: Path, folder: Path, files: list[Path]) -> None:
        o = self.o
        self.peak.add(matmul_peak(self.dev, self.dtype))
        parts = [c.one_run(self.mem, files, folder, work, o.batch_size, o.workers)
                 for c in self.contenders]
        if self.peer is not None:
            self.peer_model.add(self.peer.model_pass(o.batch_size))
            self.mem.reset()
            self.peer_e2e.add(self.peer.e2e_pass(files, work / "peer", o.batch_size))
            got = self.mem.read()
            for k, v in got.items():
                old = self.peer_mem.get(k)
                self.peer_mem[k] = v if old is None or (v is not None and v > old) else old
            parts.append(f"peer model {self.peer_model.values[-1] * 1e3:.0f}, end-to-end "
                         f"{self.peer_e2e.values[-1] * 1e3:.0f} ms/img")
        self.log(f"  run {r + 1}/{o.runs}: " + "; ".join(parts))

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
        names = ", ".join(c.backend for c in self.contenders)
        self.log(f"depthcli bench: {self.spec.name} on {result['device']}, {', '.join(self.precs)}, "
                 f"{names} backend{'s' if len(self.contenders) > 1 else ''}, batch "
                 f"{o.batch_size}, {len(files)} images ({desc}; {min(mps):.2f}-{max(mps):.2f} MP),"
                 f" {o.runs} runs")
        model_flops = sum(self.flops_of(shapes[p]) for p in files) / len(files)
        if self.peer is not None:
            self.peer.prepare(files)
            self.peer.flops = sum(self.flops_of(s) for s in self.peer.shapes) / len(files)
        firsts = list({shapes[p]: p for p in reversed(files)}.values())
        for name in ("warm", "dev", "peer"):
            (work / name).mkdir()
        for _ in range(o.warmup):  # one image per network shape through every stage
            for c in self.contenders:
                stage_pass(c.est, firsts * o.batch_size, work / "warm", o.batch_size)
            if self.peer is not None:
                self.peer.warm(work / "warm")
        resident = self.mem.current_mb()
        for r in range(o.runs):
            self.one_run(r, work, folder, files)
        per = {}
        for c in self.contenders:
            fig = c.figures(model_flops, self.peak)
            fig["compute"]["matmul_dtype"] = self.prec  # type: ignore[index]
            fig["memory"] = {"resident_before_runs_mb": resident, "stages": c.mem_max["stages"],
                             "end_to_end": c.mem_max["end_to_end"]}
            report = getattr(c.est.backend, "int8_report", None)
            if report:  # how it was quantised: calibration set, time
                fig["int8"] = report
            per[c.backend] = fig
        if self.ref_net is not None:  # how far from torch fp32, on each distinct image
            ref_est = DepthEngine(self.ref_net, device=self.dev, precision="fp32",
                                     input_size=o.input_size, backend="torch", owns_model=True)
            ref = [ref_est.infer(read_image(p)) for p in uniq]
            for c in self.contenders:
                if c.torch_fp32:
                    continue
                got: list[np.ndarray] = []
                stage_pass(c.est, uniq, work / "dev", 1, keep=got)
                per[c.backend]["deviation_vs_torch_fp32"] = deviation(ref, got)
        head = per[self.contenders[0].backend]
        result.update({k: v for k, v in head.items() if k != "deviation_vs_torch_fp32"})
        result["compute"]["gflop_by_shape"] = {f"{h}x{w}": round(f / 1e9, 1)
                                               for (h, w), f in sorted(self.flops.items())}
        if self.contenders[0].est.backend.precision != "fp32" and "deviation_vs_torch_fp32" in head:
            result["deviation_vs_fp32"] = head["deviation_vs_torch_fp32"]
        if self.peer is not None:
            result.update(self.versus_peer(per))
        if len(self.contenders) > 1:
            result["by_backend"] = per

    def versus_peer(self, per: dict[str, dict[str, Any]]) -> dict[str, object]:
        peer = self.peer
        assert peer is not None
        prec = self.peer_prec
        ratios = {}
        for c in self.contenders:
            pm = Series([a / b for a, b in zip(self.peer_model.values, c.stage["model"].values,
                                               strict=True)])
            pe = Series([a / b for a, b in zip(self.peer_e2e.values, c.e2e.values, strict=True)])
            ratios[c.backend] = {  # ours / peer throughput, median of the per-run ratios
                "end_to_end": round(pe.median, 2),
                "end_to_end_runs": [round(v, 2) for v in pe.values],
                "model": round(pm.median, 2), "model_runs": [round(v, 2) for v in pm.values],
            }
            per[c.backend]["ratio_vs_peer"] = ratios[c.backend]
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
                "memory": {"end_to_end": self.peer_mem},
            },
            "ratio": ratios[self.contenders[0].backend],
        }


def run_bench(o: BenchOptions) -> dict[str, object]:
    """Run the benchmark, print its report (text, or JSON with `as_json`), return the results."""
    import json

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if o.startup:
        return run_startup(o)
    if o.threads:
        set_threads(o.threads)
    bench = Bench(o)
    result: dict[str, Any] = bench.header()
    with tempfile.TemporaryDirectory(prefix="depthcli-bench-") as tmp:
        bench.measure(Path(tmp), result)
    result["load_average"] = loadavg()
    if o.as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        print_report(result)
        if "by_backend" in result:
            print_backends(result)
    return result


def run_startup(o: BenchOptions) -> dict[str, object]:
    """`--startup`: the fixed cost of a run, per backend, in fresh processes."""
    import json

    from .report import print_startup
    from .startup import measure

    with tempfile.TemporaryDirectory(prefix="depthcli-bench-") as tmp:
        _, files, desc = find_inputs(1, o.source, Path(tmp))
        result: dict[str, Any] = {"model": o.model, "image": str(files[0]), "inputs": desc,
                                  "startup": {}}
        for name in o.backends:
            got = measure(o.model, o.weights, name, files[0], o.input_size, o.runs,
                          o.warmup)
            result["startup"][got["backend"]] = got
    result["load_average"] = loadavg()
    if o.as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        print_startup(result)
    return result
