"""`depthcli bench`: per-stage and end-to-end speed, memory and compute efficiency, beside the
transformers `depth-estimation` pipeline run on the same weights, images and device.

What is measured, per run over the same N images (median over runs, spread = (max-min)/median):
- stages, one image at a time in this thread: decode, preprocess, model (device-synchronised),
  postprocess (resize to the photo's size, copy to host), write (the default colour PNG);
- end-to-end: the real `depthcli predict` path (`run_predict` on a folder: decode threads,
  shape-bucketed batches, writer threads), images/s;
- model compute: FLOPs counted once per input shape with FlopCounterMode, achieved GFLOP/s beside
  the peak of a large torch.matmul measured in the same process, same device and precision;
- memory: peak host RSS (VmHWM, reset before each phase on Linux) and, on CUDA, peak device memory;
- the peer: transformers' DepthAnythingForDepthEstimation built from a config and loaded with the
  same weights (converted to its layout), behind `pipeline("depth-estimation")` with a
  DPTImageProcessor configured like the hub's -hf checkpoints; nothing is downloaded.

Weights default to the synthetic recipe of ../shared/golden/README.md built in memory, so the
command runs offline; speed does not depend on the values.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from .models.registry import DEFAULT_MODEL, ModelSpec

if TYPE_CHECKING:
    import torch

    from .engine import DepthEstimator

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples" / "images"
GENERATED_SHAPE = (1362, 2048)  # ~2.8 MP, the size of most sample photos

# ----------------------------------------------------------------------------- weights


def official_name(key: str, swiglu: bool = False) -> str:
    """Internal module key → official checkpoint key (inverse of weights.to_internal)."""
    if key.startswith("encoder.vit."):
        rest = key[len("encoder.vit."):]
        if swiglu:  # vitg: timm SwiGLUPacked fc1/fc2 are the official w12/w3
            rest = re.sub(r"\.mlp\.fc1\.", ".mlp.w12.", rest)
            rest = re.sub(r"\.mlp\.fc2\.", ".mlp.w3.", rest)
        return "pretrained." + rest
    if key.startswith("head."):
        return "depth_head." + key[len("head."):]
    return key


def recipe_tensor(key: str, shape: tuple[int, ...], salt: str = "") -> torch.Tensor:
    """One tensor of the golden synthetic-weight recipe (../shared/golden/README.md).

    A non-empty `salt` gives other, equally realistic weights (tests use it).
    """
    import torch

    z = np.random.default_rng(zlib.crc32((salt + key).encode())).standard_normal(
        tuple(shape), dtype=np.float64)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "gamma" or (leaf == "weight" and len(shape) == 1):
        v = 1.0 + 0.05 * z
    elif leaf == "bias":
        v = 0.05 * z
    elif leaf == "weight" and len(shape) >= 2:
        v = z / np.sqrt(np.prod(shape[1:]))
    else:
        v = 0.02 * z
    if key.endswith("scratch.output_conv2.2.bias"):
        v = v + 1.0
    return torch.from_numpy(v.astype(np.float32))


def _is_swiglu(model: torch.nn.Module) -> bool:
    return model.spec.encoder.name == "vitg"  # type: ignore[union-attr]


def load_recipe_weights(model: torch.nn.Module) -> None:
    """Fill `model` with the recipe weights (seeded by the official checkpoint key names)."""
    sw = _is_swiglu(model)
    sd = {k: recipe_tensor(official_name(k, sw), tuple(v.shape))
          for k, v in model.state_dict().items()}
    model.load_state_dict(sd, strict=True)


def official_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    sw = _is_swiglu(model)
    return {official_name(k, sw): v for k, v in model.state_dict().items()}


def to_transformers(sd: dict[str, torch.Tensor], hf_keys: set[str]) -> dict[str, torch.Tensor]:
    """Official layout → DepthAnythingForDepthEstimation in-memory names (DESIGN.md §2.3).

    Inverse of weights._from_transformers. Targets transformers 5 names (q/k/v/o_proj) or the 4.x
    names (query/key/value, output.dense), whichever `hf_keys` (the peer's own keys) uses.
    """
    import torch

    from .weights import HF_TOP_LEVEL

    v5 = any(".attention.q_proj." in k for k in hf_keys)
    out: dict[str, torch.Tensor] = {}
    for key, v in sd.items():
        if key == "pretrained.mask_token":
            out["backbone.embeddings.mask_token"] = v
            continue
        m = re.match(r"pretrained\.blocks\.(\d+)\.(.+)$", key)
        if m:
            p, rest = f"backbone.encoder.layer.{m.group(1)}.", m.group(2)
            qm = re.match(r"attn\.qkv\.(weight|bias)$", rest)
            if qm:
                q, k, vv = v.chunk(3, dim=0)
                names = ("q_proj", "k_proj", "v_proj") if v5 else (
                    "attention.query", "attention.key", "attention.value")
                for name, t in zip(names, (q, k, vv)):
                    out[f"{p}attention.{name}.{qm.group(1)}"] = t.clone()
                continue
            wm = re.match(r"mlp\.w12\.(weight|bias)$", rest)
            if wm:
                if v5:
                    gate, up = v.chunk(2, dim=0)
                    out[f"{p}mlp.gate_proj.{wm.group(1)}"] = gate.clone()
                    out[f"{p}mlp.up_proj.{wm.group(1)}"] = up.clone()
                else:
                    out[f"{p}mlp.weights_in.{wm.group(1)}"] = v
                continue
            for a, b in (
                ("attn.proj.", "attention.o_proj." if v5 else "attention.output.dense."),
                ("ls1.gamma", "layer_scale1.lambda1"),
                ("ls2.gamma", "layer_scale2.lambda1"),
                ("mlp.w3.", "mlp.down_proj." if v5 else "mlp.weights_out."),
            ):
                if rest.startswith(a):
                    rest = b + rest[len(a):]
                    break
            out[p + rest] = v
            continue
        for b, a in HF_TOP_LEVEL:  # official prefix a → transformers prefix b
            if key.startswith(a):
                out[b + key[len(a):]] = v
                break
        else:
            m = re.match(r"depth_head\.(projects|resize_layers)\.(\d)\.(.+)$", key)
            if m:
                kind = "projection" if m.group(1) == "projects" else "resize"
                out[f"neck.reassemble_stage.layers.{m.group(2)}.{kind}.{m.group(3)}"] = v
                continue
            m = re.match(r"depth_head\.scratch\.layer(\d)_rn\.(.+)$", key)
            if m:
                out[f"neck.convs.{int(m.group(1)) - 1}.{m.group(2)}"] = v
                continue
            m = re.match(r"depth_head\.scratch\.refinenet(\d)\.(.+)$", key)
            if m:
                rest = m.group(2).replace("out_conv.", "projection.")
                rest = re.sub(r"resConfUnit(\d)\.conv(\d)", r"residual_layer\1.convolution\2", rest)
                out[f"neck.fusion_stage.layers.{4 - int(m.group(1))}.{rest}"] = v
                continue
            out[key] = v  # unknown: the strict load reports it
    mt = "backbone.embeddings.mask_token"
    if mt in hf_keys and mt not in out:  # training-only; our module does not keep it
        out[mt] = torch.zeros_like(out["backbone.embeddings.cls_token"][0])
    return out


def build_peer(spec: ModelSpec, official_sd: dict[str, torch.Tensor], max_depth: float,
               input_size: int, device: torch.device,
               dtype: torch.dtype):  # type: ignore[no-untyped-def]
    """transformers DepthAnythingForDepthEstimation + DPTImageProcessor + pipeline, offline."""
    import torch
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
        pipeline,
    )

    enc = spec.encoder
    backbone = Dinov2Config(
        image_size=518, patch_size=14, hidden_size=enc.embed_dim, num_hidden_layers=enc.depth,
        num_attention_heads=enc.num_heads, mlp_ratio=4, layerscale_value=1.0,
        out_indices=[i + 1 for i in spec.layers], apply_layernorm=True,
        reshape_hidden_states=False, use_swiglu_ffn=enc.name == "vitg",
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=enc.embed_dim, patch_size=14,
        fusion_hidden_size=spec.features, neck_hidden_sizes=list(spec.out_channels),
        reassemble_factors=[4, 2, 1, 0.5], depth_estimation_type=spec.output,
    )
    if spec.output == "metric":  # its config field is typed int
        cfg.max_depth = int(max_depth) if float(max_depth).is_integer() else max_depth
    # Default attention, as from_pretrained gives it: SDPA in the Dinov2 backbone.
    model = DepthAnythingForDepthEstimation(cfg)
    sd = to_transformers(official_sd, set(model.state_dict()))
    model.load_state_dict(sd, strict=True)
    model = model.eval().to(device=device, dtype=dtype)
    if dtype != torch.float32:
        # The pipeline's postprocess calls .numpy() on predicted_depth, which fails on bf16
        # (TypeError: unsupported ScalarType BFloat16): hand it fp32, as a user would have to.
        def _to_fp32(_mod, _args, out):  # type: ignore[no-untyped-def]
            out.predicted_depth = out.predicted_depth.float()
            return out

        model.register_forward_hook(_to_fp32)
    # The hub's Depth-Anything-V2-*-hf preprocessor_config.json, built here instead of fetched.
    proc = DPTImageProcessor(
        do_resize=True, size={"height": input_size, "width": input_size}, keep_aspect_ratio=True,
        ensure_multiple_of=14, resample=3, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(spec.mean), image_std=list(spec.std), do_pad=False,
    )
    pipe = pipeline("depth-estimation", model=model, image_processor=proc, device=device,
                    dtype=dtype)
    return model, proc, pipe


# ----------------------------------------------------------------------------- measuring


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

    def cpu_sdpa(q, k, v, *args, out_shape=None, **kwargs) -> int:  # type: ignore[no-untyped-def]
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
    """GFLOP/s of a large square torch.matmul (best of `reps` after a warm-up)."""
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
    return 2 * n**3 / best / 1e9


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
def _timer(acc: dict[str, float], name: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    acc[name] = acc.get(name, 0.0) + time.perf_counter() - t


# ----------------------------------------------------------------------------- inputs


def find_inputs(n: int | None, source: Path | None, workdir: Path) -> tuple[Path, list[Path], str]:
    """A folder of `n` images: the sample photos (cycled to reach n), or generated ~2.8 MP JPEGs.

    Returns (folder of symlinks, the source files in order, a description).
    """
    import cv2

    from .io.images import IMAGE_EXTS

    root = source if source is not None else SAMPLES
    files = []
    if root.is_dir():
        files = sorted(p for p in root.glob("*") if p.suffix.lower() in IMAGE_EXTS)
    if source is not None and not files:
        raise click.BadParameter(f"{source}: no images there", param_hint="--inputs")
    if files:
        desc = str(root)
    else:
        gen = workdir / "generated"
        gen.mkdir()
        h, w = GENERATED_SHAPE
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for i in range(4):
            rng = np.random.default_rng(i)
            img = np.stack([np.sin(xx / (40 + 7 * c) + yy / (60 + 11 * c) + rng.uniform(0, 6))
                            for c in range(3)], axis=-1)
            img = img * 90 + 128 + rng.normal(0, 12, img.shape)
            p = gen / f"generated{i}.jpg"
            cv2.imwrite(str(p), np.clip(img, 0, 255).astype(np.uint8),
                        [cv2.IMWRITE_JPEG_QUALITY, 92])
            files.append(p)
        desc = f"generated {h}x{w} JPEGs ({root} not found)"
    n = n or len(files)
    chosen = [files[i % len(files)] for i in range(n)]
    folder = workdir / "inputs"
    folder.mkdir()
    for i, p in enumerate(chosen):
        link = folder / f"{i:05d}{p.suffix.lower()}"
        try:
            link.symlink_to(p.resolve())
        except OSError:
            link.write_bytes(p.read_bytes())
    return folder, chosen, desc


# ----------------------------------------------------------------------------- the runs


def _stage_pass(est: DepthEstimator, files: list[Path], out_dir: Path, batch_size: int,
                keep: list[np.ndarray] | None = None) -> dict[str, float]:
    """Every stage for every file, serially in this thread; returns total seconds per stage.

    Consecutive inputs of the same network shape are batched up to `batch_size`.
    """
    from . import outputs
    from .io.images import read_image

    acc: dict[str, float] = {}
    opts = outputs.OutputOptions()

    def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
        with _timer(acc, "decode"):
            img = read_image(path)
        with _timer(acc, "preprocess"):
            x = est.preprocess(img)
        return img, x

    n = 0
    pending = load(files[0]) if files else None
    nxt = 1
    while pending is not None:
        group = [pending]
        pending = None
        while nxt < len(files):
            item = load(files[nxt])
            nxt += 1
            if len(group) < batch_size and item[1].shape == group[0][1].shape:
                group.append(item)
            else:
                pending = item
                break
        with _timer(acc, "model"):
            out = est.forward_batch(np.stack([x for _, x in group]))
            sync(est.device)
        for (img, _), d in zip(group, out):
            with _timer(acc, "postprocess"):
                depth = est.postprocess(d, img.shape[:2])
            if keep is not None:
                keep.append(depth)
            with _timer(acc, "write"):
                outputs.write_image_outputs(
                    depth, img, outputs.output_paths(out_dir / f"{n:05d}", opts.formats), opts)
            n += 1
    return acc


def _e2e_pass(est: DepthEstimator, folder: Path, out_dir: Path, batch_size: int,
              workers: int) -> float:
    from .pipeline import PredictOptions, run_predict

    errors: list[str] = []
    opts = PredictOptions(inputs=(str(folder),), out_dir=out_dir, batch_size=batch_size,
                          workers=workers)
    t = time.perf_counter()
    summary = run_predict(opts, est, report=errors.append)
    sync(est.device)
    dt = time.perf_counter() - t
    if summary.failed or errors:
        raise click.ClickException(f"end-to-end run failed: {errors[:3]}")
    return dt


def _peer_e2e_pass(pipe: Any, files: list[Path], out_dir: Path, batch_size: int) -> float:
    """The user's loop with the peer: pipeline(path) → save the depth PNG it returns."""
    t = time.perf_counter()
    for i, p in enumerate(files):
        res = pipe(str(p), batch_size=batch_size)
        res["depth"].save(out_dir / f"{i:05d}.png")
    return time.perf_counter() - t


def _deviation(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    """|got - ref| as a fraction of each reference's range: max, 99th percentile and mean
    (the worst image for each)."""
    mx = p99 = mean = 0.0
    for r, g in zip(ref, got):
        rng = float(r.max() - r.min()) or 1.0
        d = np.abs(g.astype(np.float64) - r) / rng
        mx = max(mx, float(d.max()))
        p99 = max(p99, float(np.percentile(d, 99)))
        mean = max(mean, float(d.mean()))
    return {"max_of_range": mx, "p99_of_range": p99, "mean_of_range": mean}


@click.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help="Registry name.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint file [default: synthetic recipe weights built in memory].")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda", "mps"]))
@click.option("--precision", default="fp32", show_default=True,
              type=click.Choice(["auto", "fp32", "fp16", "bf16"]))
@click.option("--peer-precision", default=None, type=click.Choice(["fp32", "fp16", "bf16"]),
              help="Precision of the transformers peer [default: the same as --precision; "
                   "auto resolves first].")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed repetitions of each measurement (median and spread are reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Untimed passes over one image of each input shape first.")
@click.option("--images", "n_images", type=click.IntRange(min=1), default=None,
              help="Number of images (the inputs are cycled) [default: all of them].")
@click.option("--inputs", "source", type=click.Path(file_okay=False, path_type=Path),
              default=None,
              help="Folder of images [default: ../shared/samples/images beside the checkout; "
                   "generated ~2.8 MP photos when that is absent].")
@click.option("--input-size", type=click.IntRange(min=1), default=None,
              help="Short side of the network input [default: 518].")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Decode/preprocess threads of the end-to-end run.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads [default: torch's choice].")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--channels-last", is_flag=True, help="channels_last memory format.")
@click.option("--no-peer", is_flag=True, help="Skip the transformers pipeline.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def bench(model: str, weights: Path | None, device: str, precision: str,
          peer_precision: str | None, batch_size: int, runs: int, warmup: int,
          n_images: int | None, source: Path | None, input_size: int | None, workers: int,
          threads: int | None, compile_: bool, channels_last: bool, no_peer: bool,
          as_json: bool) -> None:
    """Benchmark stages, end-to-end images/s, memory and GFLOP/s against the transformers pipeline.

    Each run measures, back to back: the matmul peak, our stages, our end-to-end pass, then the
    peer's model and end-to-end pass, so that ours and the peer's see the same machine load;
    ratios are medians of per-run ratios.
    """
    import torch

    from .engine import DepthEstimator, resolve_device, resolve_precision
    from .io.images import read_image
    from .models import create_model, get_spec

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if threads:
        torch.set_num_threads(threads)
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    spec = get_spec(model)
    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    dtype = resolve_precision(precision, dev)  # type: ignore[arg-type]
    prec_name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    peer_prec = peer_precision or prec_name
    peer_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[peer_prec]

    net = create_model(spec.name, weights=weights, pretrained=weights is not None)
    if weights is None:
        load_recipe_weights(net)
    ref_net = None
    if dtype != torch.float32:  # an fp32 twin to state the deviation of half precision
        ref_net = create_model(spec.name, pretrained=False)
        ref_net.load_state_dict(net.state_dict())
    peer = None
    if not no_peer:
        peer = Peer(spec, official_state_dict(net), net.max_depth,
                    input_size or spec.input_size, dev, peer_dtype, peer_prec)
    est = DepthEstimator(net, device=dev, precision=prec_name,  # type: ignore[arg-type]
                         input_size=input_size, compile=compile_, channels_last=channels_last)
    size = est.preprocess.input_size
    mem = PeakMemory(dev)
    result: dict[str, object] = {
        "model": spec.name, "weights": str(weights) if weights else "synthetic recipe (in memory)",
        "device": _device_name(dev), "precision": prec_name, "batch_size": batch_size,
        "runs": runs, "input_size": size, "compile": compile_, "channels_last": channels_last,
        "torch_threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "workers": workers, "torch": torch.__version__,
    }

    with tempfile.TemporaryDirectory(prefix="depthcli-bench-") as tmp:
        work = Path(tmp)
        folder, files, desc = find_inputs(n_images, source, work)
        uniq = list(dict.fromkeys(files))
        per_file_shape: dict[Path, tuple[int, int]] = {}
        mps = []
        for p in uniq:
            h, w = read_image(p).shape[:2]
            mps.append(h * w / 1e6)
            per_file_shape[p] = est.preprocess.target_size(h, w)
        result["inputs"] = {
            "source": desc, "images": len(files),
            "megapixels": [round(min(mps), 2), round(max(mps), 2)],
            "network_shapes": sorted({f"{h}x{w}" for h, w in per_file_shape.values()}),
        }
        log(f"depthcli bench: {spec.name} on {result['device']}, {prec_name}, batch {batch_size}, "
            f"{len(files)} images ({desc}; {min(mps):.2f}-{max(mps):.2f} MP), {runs} runs")

        # FLOPs once per network input shape (the peer's shapes too: its resize rule differs).
        flops: dict[tuple[int, int], int] = {}

        def flops_of(shape: tuple[int, int]) -> int:
            if shape not in flops:
                flops[shape] = count_flops(est.model, (1, 3, *shape), dev)
            return flops[shape]

        model_flops = sum(flops_of(per_file_shape[p]) for p in files) / len(files)
        if peer is not None:
            peer.prepare(files)
            peer.flops = sum(flops_of(s) for s in peer.shapes) / len(files)

        # Warm-up: one image per network shape through every stage (compiles each shape).
        firsts = list({per_file_shape[p]: p for p in reversed(files)}.values())
        for name in ("warm", "stages", "dev", "peer"):
            (work / name).mkdir()
        for _ in range(warmup):
            _stage_pass(est, firsts * batch_size, work / "warm", batch_size)
            if peer is not None:
                peer.warm(work / "warm")

        stage = {s: Series() for s in STAGES}
        e2e, peak, peer_model, peer_e2e = Series(), Series(), Series(), Series()
        resident = mem.current_mb()
        mem_max: dict[str, dict[str, float | None]] = {}

        def track(name: str) -> None:
            got = mem.read()
            old = mem_max.setdefault(name, got)
            for k, v in got.items():
                if v is not None and (old[k] is None or v > old[k]):  # type: ignore[operator]
                    old[k] = v

        for r in range(runs):
            peak.add(matmul_peak(dev, dtype))
            mem.reset()
            acc = _stage_pass(est, files, work / "stages", batch_size)
            track("stages")
            for s in STAGES:
                stage[s].add(acc.get(s, 0.0) / len(files))
            shutil.rmtree(work / "e2e", ignore_errors=True)  # fresh outputs, bounded disk use
            mem.reset()
            e2e.add(_e2e_pass(est, folder, work / "e2e", batch_size, workers) / len(files))
            track("end_to_end")
            if peer is not None:
                peer_model.add(peer.model_pass(batch_size))
                mem.reset()
                peer_e2e.add(peer.e2e_pass(files, work / "peer", batch_size))
                track("peer_end_to_end")
            log(f"  run {r + 1}/{runs}: model {stage['model'].values[-1] * 1e3:.0f} ms/img, "
                f"end-to-end {e2e.values[-1] * 1e3:.0f} ms/img"
                + (f"; peer model {peer_model.values[-1] * 1e3:.0f}, end-to-end "
                   f"{peer_e2e.values[-1] * 1e3:.0f} ms/img" if peer is not None else ""))

        result["stages_ms"] = {s: stage[s].as_dict(1e3, 1) for s in STAGES}
        result["sum_of_stages_ms"] = round(sum(stage[s].median for s in STAGES) * 1e3, 1)
        result["end_to_end"] = {
            "ms_per_image": e2e.as_dict(1e3, 1), "images_per_s": round(1 / e2e.median, 3),
            "vs_model_only_pct": round(100 * (e2e.median / stage["model"].median - 1), 1),
        }
        gflops = model_flops / stage["model"].median / 1e9
        # Paired with the peak measured in the same run: robust to the machine's speed drifting
        # between runs (seen here: the fp32 peak moved 99-194 GFLOP/s over an afternoon).
        paired = Series([model_flops / m / 1e9 / p
                         for m, p in zip(stage["model"].values, peak.values)])
        result["compute"] = {
            "gflop_per_image": round(model_flops / 1e9, 1),
            "gflop_by_shape": {f"{h}x{w}": round(f / 1e9, 1)
                               for (h, w), f in sorted(flops.items())},
            "model_gflop_s": round(gflops, 1),
            "matmul_peak_gflop_s": round(max(peak.values), 1),
            "matmul_gflop_s_runs": [round(v, 1) for v in peak.values],
            "pct_of_peak": round(100 * gflops / max(peak.values), 1), "matmul_dtype": prec_name,
            "pct_of_same_run_peak": round(100 * paired.median, 1),
            "pct_of_same_run_peak_runs": [round(100 * v, 1) for v in paired.values],
        }
        result["memory"] = {"resident_before_runs_mb": resident, "stages": mem_max["stages"],
                            "end_to_end": mem_max["end_to_end"]}

        if ref_net is not None:  # half precision: how far from fp32, on each distinct image
            ref_est = DepthEstimator(ref_net, device=dev, precision="fp32", input_size=input_size)
            ref = [ref_est.infer(read_image(p)) for p in uniq]
            got: list[np.ndarray] = []
            _stage_pass(est, uniq, work / "dev", 1, keep=got)
            result["deviation_vs_fp32"] = _deviation(ref, got)
            del ref_est, ref_net

        if peer is not None:
            pm = Series([a / b for a, b in zip(peer_model.values, stage["model"].values)])
            pe = Series([a / b for a, b in zip(peer_e2e.values, e2e.values)])
            result["peer"] = {
                "what": "transformers pipeline('depth-estimation'): "
                        "DepthAnythingForDepthEstimation "
                        f"(SDPA attention) + DPTImageProcessor, same weights, {peer_prec}"
                        + (" (whole model cast; output hooked back to fp32 for the pipeline's "
                           "postprocess)" if peer_prec != "fp32" else ""),
                "transformers": __import__("transformers").__version__,
                "precision": peer_prec,
                "network_shapes": sorted({f"{h}x{w}" for h, w in peer.shapes}),
                "model_ms": peer_model.as_dict(1e3, 1),
                "model_gflop_s": round(peer.flops / peer_model.median / 1e9, 1),
                "end_to_end": {"ms_per_image": peer_e2e.as_dict(1e3, 1),
                               "images_per_s": round(1 / peer_e2e.median, 3)},
                "memory": {"end_to_end": mem_max["peer_end_to_end"]},
            }
            result["ratio"] = {  # ours / peer throughput, median of the per-run ratios
                "end_to_end": round(pe.median, 2),
                "end_to_end_runs": [round(v, 2) for v in pe.values],
                "model": round(pm.median, 2), "model_runs": [round(v, 2) for v in pm.values],
            }
    result["load_average"] = _loadavg()

    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_report(result)


class Peer:
    """The transformers pipeline on the same weights, device and images."""

    def __init__(self, spec: ModelSpec, official_sd: dict[str, Any], max_depth: float,
                 input_size: int, dev: torch.device, dtype: torch.dtype, prec: str) -> None:
        self.dev, self.dtype, self.prec = dev, dtype, prec
        self.model, self.proc, self.pipe = build_peer(spec, official_sd, max_depth, input_size,
                                                      dev, dtype)
        self.inputs: list = []  # type: ignore[type-arg]
        self.shapes: list[tuple[int, int]] = []
        self.flops = 0.0

    def prepare(self, files: list[Path]) -> None:
        """Its own processor's pixel_values for the model-alone timing (decoded once)."""
        from PIL import Image

        self._files = list(files)
        cache: dict[Path, object] = {}
        for p in files:
            if p not in cache:
                with Image.open(p) as im:
                    pv = self.proc(images=im.convert("RGB"), return_tensors="pt")["pixel_values"]
                cache[p] = pv.to(self.dev, self.dtype)
            self.inputs.append(cache[p])
            self.shapes.append(tuple(cache[p].shape[-2:]))  # type: ignore[attr-defined]

    def warm(self, out_dir: Path) -> None:
        import torch

        with torch.inference_mode():
            for x in {tuple(x.shape): x for x in self.inputs}.values():
                self.model(pixel_values=x)
        sync(self.dev)
        if self.inputs:
            _peer_e2e_pass(self.pipe, self._files[:1], out_dir, 1)

    def model_pass(self, batch_size: int) -> float:
        """Seconds per image for the model alone (same-shape inputs batched)."""
        import torch

        t = time.perf_counter()
        with torch.inference_mode():
            i = 0
            while i < len(self.inputs):
                group = [self.inputs[i]]
                while (i + len(group) < len(self.inputs) and len(group) < batch_size
                       and self.inputs[i + len(group)].shape == group[0].shape):
                    group.append(self.inputs[i + len(group)])
                self.model(pixel_values=torch.cat(group) if len(group) > 1 else group[0])
                i += len(group)
            sync(self.dev)
        return (time.perf_counter() - t) / len(self.inputs)

    def e2e_pass(self, files: list[Path], out_dir: Path, batch_size: int) -> float:
        return _peer_e2e_pass(self.pipe, files, out_dir, batch_size) / len(files)


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _device_name(dev: torch.device) -> str:
    import torch

    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    if dev.type == "cpu":
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                m = re.search(r"model name\s*:\s*(.+)", f.read())
            if m:
                name = m.group(1).strip()
        except OSError:
            pass
        return f"cpu ({name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return dev.type


def _print_report(r: dict) -> None:  # type: ignore[type-arg]
    e = click.echo
    e("")
    e(f"{'stage (serial)':<16}{'ms/img':>10}{'spread':>9}")
    for s, d in r["stages_ms"].items():
        e(f"{s:<16}{d['median']:>10.1f}{d['spread_pct']:>8.1f}%")
    e(f"{'sum of stages':<16}{r['sum_of_stages_ms']:>10.1f}")
    ee = r["end_to_end"]
    e(f"{'end-to-end':<16}{ee['ms_per_image']['median']:>10.1f}"
      f"{ee['ms_per_image']['spread_pct']:>8.1f}%   {ee['images_per_s']:.3f} img/s "
      f"(predict path, {r['workers']} workers; {ee['vs_model_only_pct']:+.1f}% vs model alone)")
    c = r["compute"]
    shapes = ", ".join(f"{k}: {v}" for k, v in c["gflop_by_shape"].items())
    e(f"model compute   {c['gflop_per_image']} GFLOP/img ({shapes}); {c['model_gflop_s']} GFLOP/s "
      f"= {c['pct_of_peak']}% of the best {c['matmul_dtype']} matmul peak "
      f"{c['matmul_peak_gflop_s']} GFLOP/s")
    e(f"                {c['pct_of_same_run_peak']}% of the peak measured in the same run "
      f"(median; runs {c['pct_of_same_run_peak_runs']}; peaks {c['matmul_gflop_s_runs']})")
    m = r["memory"]
    dev_mem = (f", device {m['end_to_end']['device_mb']} MB"
               if m["end_to_end"]["device_mb"] is not None else "")
    e(f"peak memory     host {m['end_to_end']['host_mb']} MB end-to-end "
      f"({m['stages']['host_mb']} MB serial stages; {m['resident_before_runs_mb']} MB resident "
      f"before the runs, models loaded){dev_mem}")
    if "deviation_vs_fp32" in r:
        d = r["deviation_vs_fp32"]
        e(f"vs fp32 depth   |d| as % of the depth range (worst image): max "
          f"{100 * d['max_of_range']:.2f}%, p99 {100 * d['p99_of_range']:.2f}%, "
          f"mean {100 * d['mean_of_range']:.3f}%")
    if "peer" in r:
        p = r["peer"]
        e(f"peer            {p['what']}")
        e(f"  model         {p['model_ms']['median']:>8.1f} ms/img ({p['model_ms']['spread_pct']}% "
          f"spread; {p['model_gflop_s']} GFLOP/s; input {', '.join(p['network_shapes'])})")
        pe = p["end_to_end"]
        pdev = p["memory"]["end_to_end"]["device_mb"]
        e(f"  end-to-end    {pe['ms_per_image']['median']:>8.1f} ms/img "
          f"({pe['ms_per_image']['spread_pct']}% spread) {pe['images_per_s']:.3f} img/s; "
          f"peak host {p['memory']['end_to_end']['host_mb']} MB"
          + (f", device {pdev} MB" if pdev is not None else ""))
        ra = r["ratio"]
        e(f"ours / peer     throughput x{ra['end_to_end']:.2f} end-to-end "
          f"(runs {ra['end_to_end_runs']}), x{ra['model']:.2f} model (runs {ra['model_runs']})")
    if r.get("load_average"):
        e(f"load average    {r['load_average']} (other processes skew timings; rerun if high)")
