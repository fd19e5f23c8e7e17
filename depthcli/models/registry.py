"""The single source of truth for model architectures, checkpoints and preprocessing.

Nothing here imports torch or touches files, so `depthcli models` lists specs instantly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ..errors import UnknownModelError

OutputKind = Literal["relative", "metric"]
# What the number means: DA1/DA2 relative models give inverse depth (near = large), DA3 and every
# metric model give depth (near = small).
Quantity = Literal["inverse", "depth"]


@dataclass(frozen=True)
class EncoderSpec:
    """A DINOv2 ViT/14 encoder as timm names it."""

    name: Literal["vits", "vitb", "vitl", "vitg", "vitt"]
    timm_name: str
    embed_dim: int
    depth: int
    num_heads: int
    custom: bool = False  # not timm's own size: embed_dim, depth and num_heads override it

    @property
    def timm_kwargs(self) -> dict[str, int]:
        """What `timm.create_model(timm_name, ...)` needs beyond the name to build this size."""
        if not self.custom:
            return {}
        return {"embed_dim": self.embed_dim, "depth": self.depth, "num_heads": self.num_heads}


@dataclass(frozen=True)
class Da3Arch:
    """What a Depth Anything 3 configuration adds to the DINOv2 + DPT recipe (DESIGN.md §10.1).

    Any-view models (`alt_start >= 0`) add a camera token, QK-norm, 2-D RoPE and alternating
    attention from block `alt_start` on, read out cat(local, global) tokens (head input 2C) and
    predict depth + confidence + the camera; mono/metric ones are DA2's encoder with a DPT head
    that predicts depth + a sky map.
    """

    config: str  # the official config name (config.json's `model_name`)
    alt_start: int  # camera token / QK-norm / RoPE / alternation start; -1 = monocular
    head_dim_in: int

    @property
    def any_view(self) -> bool:
        return self.alt_start >= 0

    @property
    def output_dim(self) -> int:
        return 2 if self.any_view else 1


@dataclass(frozen=True)
class ModelSpec:
    """One published Depth Anything checkpoint: architecture, weights source, pre/postprocessing."""

    name: str
    family: Literal["v1", "v2", "v3"]
    encoder: EncoderSpec
    layers: tuple[int, int, int, int]  # 0-based blocks whose (normed) tokens feed the head
    features: int
    out_channels: tuple[int, int, int, int]
    output: OutputKind
    hub_repo: str  # official-layout repo
    hub_file: str  # official file name in that repo (and in the weights folder)
    hf_repo: str  # transformers-layout repo (model.safetensors)
    licence: str
    params_m: float
    max_depth: float | None = None  # metric models only: metres at sigmoid == 1
    dataset: str = ""
    # V2's infer_image upsamples with align_corners=True, V1's run.py with False.
    upsample_align_corners: bool = True
    input_size: int = 518
    temporal: bool = False  # Video Depth Anything: frames go through 32-frame windows
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    quantity: Quantity = "inverse"
    da3: Da3Arch | None = None  # Depth Anything 3 only
    listed: bool = True  # False: a test configuration, resolvable by name but not listed

    @property
    def size(self) -> str:
        return {"vits": "small", "vitb": "base", "vitl": "large", "vitg": "giant",
                "vitt": "tiny"}[self.encoder.name]

    @property
    def unit(self) -> str:
        if self.output == "metric":
            return "metres"
        if self.quantity == "depth":
            return "relative depth (unitless, larger = farther)"
        return "relative inverse depth (unitless)"

    def max_depth_for(self, requested: float | None) -> float:
        """The max depth a model built with `--max-depth requested` (None: the default) has."""
        return float(requested if requested is not None else (self.max_depth or 1.0))

    @property
    def near_is_large(self) -> bool:
        """Whether larger output values are nearer (inverse depth), for colour maps."""
        return self.quantity == "inverse"


ENCODERS: dict[str, EncoderSpec] = {
    "vits": EncoderSpec("vits", "vit_small_patch14_dinov2", 384, 12, 6),
    "vitb": EncoderSpec("vitb", "vit_base_patch14_dinov2", 768, 12, 12),
    "vitl": EncoderSpec("vitl", "vit_large_patch14_dinov2", 1024, 24, 16),
    "vitg": EncoderSpec("vitg", "vit_giant_patch14_dinov2", 1536, 40, 24),
}
# Not a published size: a 4-block, 64-wide ViT/14 for tests that check plumbing, not numbers.
TINY_ENCODER = EncoderSpec("vitt", "vit_small_patch14_dinov2", 64, 4, 2, custom=True)

_HEAD = {  # features, out_channels, V2 taps, params (M) of the V2 model
    "vits": (64, (48, 96, 192, 384), (2, 5, 8, 11), 24.8),
    "vitb": (128, (96, 192, 384, 768), (2, 5, 8, 11), 97.5),
    "vitl": (256, (256, 512, 1024, 1024), (4, 11, 17, 23), 335.3),
}
_SIZES = {"small": "vits", "base": "vitb", "large": "vitl"}
_VDA_PARAMS = {"vits": 29.0, "vitb": 114.4, "vitl": 384.4}  # V2 + four temporal modules
_NC = "CC-BY-NC-4.0"


def _spec(name: str, family: str, enc: str, output: OutputKind, **kw: object) -> ModelSpec:
    features, out_channels, v2_layers, params = _HEAD[enc]
    depth = ENCODERS[enc].depth
    layers = v2_layers if family == "v2" else tuple(range(depth - 4, depth))
    return ModelSpec(
        name=name,
        family=family,  # type: ignore[arg-type]
        encoder=ENCODERS[enc],
        layers=layers,  # type: ignore[arg-type]
        features=features,
        out_channels=out_channels,
        output=output,
        params_m=params,
        upsample_align_corners=family == "v2",
        **kw,  # type: ignore[arg-type]
    )


def _build() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for size, enc in _SIZES.items():
        cap = size.capitalize()
        specs[f"da2-{size}"] = _spec(
            f"da2-{size}", "v2", enc, "relative",
            hub_repo=f"depth-anything/Depth-Anything-V2-{cap}",
            hub_file=f"depth_anything_v2_{enc}.pth",
            hf_repo=f"depth-anything/Depth-Anything-V2-{cap}-hf",
            licence="Apache-2.0" if size == "small" else _NC,
            dataset="DA-V2 mixed (relative)",
        )
    for size, enc in _SIZES.items():
        specs[f"da1-{size}"] = _spec(
            f"da1-{size}", "v1", enc, "relative",
            hub_repo=f"LiheYoung/depth_anything_{enc}14",
            hub_file="pytorch_model.bin",
            hf_repo=f"LiheYoung/depth-anything-{size}-hf",
            licence="Apache-2.0",
            dataset="DA-V1 (relative)",
        )
    for scene, data, short, max_depth in (
        ("indoor", "Hypersim", "hypersim", 20.0),
        ("outdoor", "VKITTI", "vkitti", 80.0),
    ):
        for size, enc in _SIZES.items():
            cap = size.capitalize()
            specs[f"da2-metric-{scene}-{size}"] = _spec(
                f"da2-metric-{scene}-{size}", "v2", enc, "metric",
                hub_repo=f"depth-anything/Depth-Anything-V2-Metric-{data}-{cap}",
                hub_file=f"depth_anything_v2_metric_{short}_{enc}.pth",
                hf_repo=f"depth-anything/Depth-Anything-V2-Metric-{scene.capitalize()}-{cap}-hf",
                licence="Apache-2.0" if size == "small" else "unclear (hub says apache-2.0)",
                max_depth=max_depth,
                dataset=f"{data} ({scene}, max {max_depth:g} m)",
            )
    for size, enc in _SIZES.items():
        cap = size.capitalize()
        for metric in (False, True):
            name = f"vda-{'metric-' if metric else ''}{size}"
            specs[name] = _spec(
                name, "v2", enc, "metric" if metric else "relative",
                hub_repo=(f"depth-anything/{'Metric-' if metric else ''}"
                          f"Video-Depth-Anything-{cap}"),
                hub_file=f"{'metric_' if metric else ''}video_depth_anything_{enc}.pth",
                hf_repo="",
                licence="Apache-2.0" if size == "small" else _NC,
                dataset=("Video Depth Anything, metric (metres)" if metric
                         else "Video Depth Anything (relative)"),
                temporal=True,
            )
            specs[name] = replace(specs[name], params_m=_VDA_PARAMS[enc])
    return specs


# Depth Anything 3 (DESIGN.md §10.1.1): name, official config, hub repo, encoder, out layers,
# alt_start, head dim_in, output, licence, values in the checkpoint (M).
_DA3 = (
    ("da3-small", "da3-small", "DA3-SMALL", "vits", (5, 7, 9, 11), 4, 768, "relative",
     "Apache-2.0", 34.3),
    ("da3-base", "da3-base", "DA3-BASE", "vitb", (5, 7, 9, 11), 4, 1536, "relative",
     "Apache-2.0", 135.4),
    ("da3-large", "da3-large", "DA3-LARGE-1.1", "vitl", (11, 15, 19, 23), 8, 2048, "relative",
     _NC, 410.9),
    ("da3-giant", "da3-giant", "DA3-GIANT-1.1", "vitg", (19, 27, 33, 39), 13, 3072, "relative",
     _NC, 1355.7),
    ("da3-mono-large", "da3mono-large", "DA3MONO-LARGE", "vitl", (4, 11, 17, 23), -1, 1024,
     "relative", "Apache-2.0", 334.2),
    ("da3-metric-large", "da3metric-large", "DA3METRIC-LARGE", "vitl", (4, 11, 17, 23), -1,
     1024, "metric", "Apache-2.0", 334.2),
    # Not a published model: da3mono-large's code path at ViT-S cost (golden files, tests).
    ("da3mono-small-test", "da3mono-small-test", "", "vits", (2, 5, 8, 11), -1, 384,
     "relative", "test configuration", 24.7),
)
_DA3_HEAD = {"vits": (64, (48, 96, 192, 384)), "vitb": (128, (96, 192, 384, 768)),
             "vitl": (256, (256, 512, 1024, 1024)), "vitg": (256, (256, 512, 1024, 1024))}


def _da3_specs() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for name, config, repo, enc, layers, alt, dim_in, output, licence, params in _DA3:
        features, out_channels = _DA3_HEAD[enc]
        mono = alt < 0
        what = ("metric depth (f / 300 scaling)" if output == "metric"
                else "monocular depth + sky" if mono else "any-view depth + camera")
        specs[name] = ModelSpec(
            name=name, family="v3", encoder=ENCODERS[enc], layers=layers,
            features=features, out_channels=out_channels, output=output,  # type: ignore[arg-type]
            hub_repo=f"depth-anything/{repo}" if repo else "", hub_file="model.safetensors",
            hf_repo="", licence=licence, params_m=params, dataset=f"DA3 {what}",
            input_size=504, quantity="depth", da3=Da3Arch(config, alt, dim_in),
            listed=bool(repo),
        )
    return specs


def _test_specs() -> dict[str, ModelSpec]:
    """Unlisted tiny configurations (a 4-block ViT, a 32-wide head; ~0.3 M values): the real
    code paths of V2 and Video Depth Anything at a cost that suits plumbing tests."""
    tiny = {"encoder": TINY_ENCODER, "layers": (0, 1, 2, 3), "features": 32,
            "out_channels": (16, 32, 64, 64), "hub_repo": "", "hf_repo": "",
            "licence": "test configuration", "listed": False}
    return {
        "da2-tiny-test": ModelSpec(name="da2-tiny-test", family="v2", output="relative",
                                   hub_file="depth_anything_v2_vitt.pth", params_m=0.3,
                                   dataset="test configuration", **tiny),  # type: ignore[arg-type]
        "da2-metric-tiny-test": ModelSpec(name="da2-metric-tiny-test", family="v2",
                                          output="metric", max_depth=20.0,
                                          hub_file="depth_anything_v2_metric_vitt.pth",
                                          params_m=0.3, dataset="test configuration (max 20 m)",
                                          **tiny),  # type: ignore[arg-type]
        "vda-tiny-test": ModelSpec(name="vda-tiny-test", family="v2", output="relative",
                                   hub_file="video_depth_anything_vitt.pth", params_m=0.4,
                                   dataset="test configuration", temporal=True,
                                   **tiny),  # type: ignore[arg-type]
    }


MODEL_SPECS: dict[str, ModelSpec] = {**_build(), **_da3_specs(), **_test_specs()}
DEFAULT_MODEL = "da2-small"
DEFAULT_VIDEO_MODEL = "vda-small"

# V1 checkpoints also live in the Space LiheYoung/Depth-Anything under this name; accept it locally.
LOCAL_ALIASES: dict[str, tuple[str, ...]] = {
    n: (f"depth_anything_{s.encoder.name}14.pth",) for n, s in MODEL_SPECS.items() if s.family == "v1"
}


def list_models() -> list[str]:
    """Registry names, in display order (test configurations left out)."""
    return [n for n, s in MODEL_SPECS.items() if s.listed]


def get_spec(name: str) -> ModelSpec:
    """Resolve a registry name or an official / -hf hub repo id to its spec."""
    if name in MODEL_SPECS:
        return MODEL_SPECS[name]
    low = name.strip().lower()
    for spec in MODEL_SPECS.values():
        if low and low in (spec.hub_repo.lower(), spec.hf_repo.lower()):
            return spec
        if spec.da3 is not None and spec.listed and low == spec.da3.config:
            return spec  # DA3's own config names (da3mono-large, ...) are accepted too
    close = [n for n in list_models() if low and (low in n or n in low)]
    hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}{hint}; run 'depthcli models' for the list "
        "(official and -hf hub repo ids are accepted too)"
    )


def is_hf_repo_name(name: str) -> bool:
    """True if `name` is the transformers-layout repo of a registry model."""
    low = name.strip().lower()
    return any(low and low == s.hf_repo.lower() for s in MODEL_SPECS.values())
