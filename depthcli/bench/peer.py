"""The peer of `depthcli bench`: transformers' depth-estimation pipeline on the same weights.

DepthAnythingForDepthEstimation built from a config (nothing downloaded), loaded with our
weights converted to its layout, behind `pipeline("depth-estimation")` with a DPTImageProcessor
configured like the hub's -hf checkpoints: what a user of transformers would run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoints.layouts import to_transformers
from ..models.registry import ModelSpec
from .measure import sync

if TYPE_CHECKING:
    import torch


def build_peer(spec: ModelSpec, official_sd: dict[str, torch.Tensor], max_depth: float,
               input_size: int, device: torch.device,
               dtype: torch.dtype):
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
        out_indices=[i + 1 for i in spec.layers],  # a BackboneConfig kwarg
        apply_layernorm=True,
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
        def _to_fp32(_mod, _args, out):
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


class Peer:
    """The transformers pipeline on the same weights, device and images."""

    def __init__(self, spec: ModelSpec, official_sd: dict[str, Any], max_depth: float,
                 input_size: int, dev: torch.device, dtype: torch.dtype, prec: str) -> None:
        self.dev, self.dtype, self.prec = dev, dtype, prec
        self.model, self.proc, self.pipe = build_peer(spec, official_sd, max_depth, input_size,
                                                      dev, dtype)
        self.inputs: list = []
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
        """Seconds per image for the model alone, batched by the engine's rule
        (`engine.batching.shape_batches`: same-shape inputs together)."""
        import torch

        from ..engine.batching import shape_batches

        t = time.perf_counter()
        with torch.inference_mode():
            for group in shape_batches(self.inputs, lambda x: tuple(x.shape), batch_size):
                self.model(pixel_values=torch.cat(group) if len(group) > 1 else group[0])
            sync(self.dev)
        return (time.perf_counter() - t) / len(self.inputs)

    def e2e_pass(self, files: list[Path], out_dir: Path, batch_size: int) -> float:
        return _peer_e2e_pass(self.pipe, files, out_dir, batch_size) / len(files)


def _peer_e2e_pass(pipe: Any, files: list[Path], out_dir: Path, batch_size: int) -> float:
    """The user's loop with the peer: pipeline(path) → save the depth PNG it returns."""
    t = time.perf_counter()
    for i, p in enumerate(files):
        res = pipe(str(p), batch_size=batch_size)
        res["depth"].save(out_dir / f"{i:05d}.png")
    return time.perf_counter() - t
