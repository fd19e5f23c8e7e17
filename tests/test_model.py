"""Parity with the official code (golden outputs), the transformers layout, and the registry."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import make_checkpoint, official_keys
from depthcli.engine.core import DepthEngine
from depthcli.engine.transforms import lower_bound_size
from depthcli.models import create_model, get_spec
from depthcli.models.encoder import interpolate_pos_embed
from depthcli.models.registry import MODEL_SPECS
from recipe import recipe_state_dict

GOLDEN_TAGS = ["da2-small", "da1-small", "da2-metric-indoor-small"]


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / (ref.max() - ref.min()))


@pytest.fixture(scope="module")
def golden_ckpts(golden_keys: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("golden")
    out = {}
    for tag in GOLDEN_TAGS:
        path = d / f"{tag}.pth"
        torch.save(recipe_state_dict(golden_keys[tag]), path)
        out[tag] = path
    return out


@pytest.fixture()
def shared_forwards():  # type: ignore[no-untyped-def]
    """The API and the CLI test below run da2-small on the same six preprocessed images: each
    forward runs once (tests/forward_memo.py; conftest's "golden" group keeps them in one
    worker). Loading, preprocessing, resizing and writing run in both."""
    from forward_memo import shared_forwards

    from depthcli.models import DepthAnything

    with shared_forwards(DepthAnything):
        yield


@pytest.mark.parametrize("tag", GOLDEN_TAGS)
def test_golden_parity_api(tag: str, golden_dir, golden_ckpts, shared_forwards) -> None:
    """Every golden entry within 1e-4 of its range through the Python API (real loading path)."""
    gold = np.load(golden_dir / f"{tag}.npz")
    est = DepthEngine.from_name(tag, weights=golden_ckpts[tag], device="cpu")
    sizes = sorted({int(k.split("@")[1]) for k in gold.files})
    for size in sizes:
        est_s = est if size == 518 else DepthEngine(est.model, device="cpu", input_size=size)
        for key in [k for k in gold.files if k.endswith(f"@{size}")]:
            img = cv2.imread(str(golden_dir / f"{key.split('@')[0]}.png"))
            depth = est_s.infer(img)
            assert depth.shape == gold[key].shape and depth.dtype == np.float32
            assert rel_err(depth, gold[key]) < 1e-4, key


def test_golden_parity_cli_npy(golden_dir, golden_ckpts, tmp_path, shared_forwards) -> None:
    """The `predict --format npy` contract the acceptance check uses, at two input sizes."""
    from click.testing import CliRunner

    from depthcli.cli import main

    gold = np.load(golden_dir / "da2-small.npz")
    imgs = [str(golden_dir / f"{n}.png") for n in ("landscape", "portrait", "square")]
    for size in (518, 364):
        out = tmp_path / str(size)
        r = CliRunner().invoke(main, ["predict", *imgs, "-o", str(out), "--model", "da2-small",
                                      "--weights", str(golden_ckpts["da2-small"]),
                                      "--input-size", str(size), "--format", "npy",
                                      "--device", "cpu"])
        assert r.exit_code == 0, r.output
        for n in ("landscape", "portrait", "square"):
            d = np.load(out / f"{n}.npy")
            assert d.dtype == np.float32
            assert rel_err(d, gold[f"{n}@{size}"]) < 1e-4


def test_metric_is_metres_in_range(golden_ckpts) -> None:
    m = create_model("da2-metric-outdoor-small", weights=golden_ckpts["da2-metric-indoor-small"])
    x = torch.randn(1, 3, 70, 98)
    with torch.inference_mode():
        d80 = m(x)
    assert m.max_depth == 80.0 and 0 < float(d80.min()) and float(d80.max()) < 80
    m20 = create_model("da2-metric-indoor-small", weights=golden_ckpts["da2-metric-indoor-small"])
    with torch.inference_mode():
        assert torch.allclose(m20(x) * 4, d80, rtol=1e-5)


def test_pos_embed_rule_matches_official_formula() -> None:
    """scale_factor=(n+0.1)/37, bicubic, no antialias; untouched only for square 37x37."""
    pe = torch.randn(1, 1 + 37 * 37, 8)
    assert interpolate_pos_embed(pe, 37, 37) is pe
    out = interpolate_pos_embed(pe, 37, 56)
    assert out.shape == (1, 1 + 37 * 56, 8)
    grid = pe[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, scale_factor=(37.1 / 37, 56.1 / 37),
                                          mode="bicubic", antialias=False)
    # Float rounding only: the matrix form (exportable with dynamic sizes) vs PyTorch's kernel.
    ref = ref.permute(0, 2, 3, 1).reshape(1, -1, 8)
    assert float((out[:, 1:] - ref).abs().max()) <= 2e-6 * float(ref.abs().max())
    # The 37-row axis is still resampled (unlike a size-based rule): rows differ from the table.
    assert not torch.allclose(out[:, 1:].reshape(1, 37, 56, 8)[:, :, 0], grid.permute(0, 2, 3, 1)[:, :, 0])


@pytest.mark.parametrize(("h", "w", "size", "expected"), [
    (1362, 2048, 518, (518, 784)), (720, 1280, 518, (518, 924)), (200, 300, 518, (518, 784)),
    (250, 2000, 518, (518, 4144)), (600, 450, 518, (686, 518)), (160, 240, 364, (364, 546)),
    (300, 400, 500, (504, 672)), (300, 300, 510, (518, 518)), (10, 10, 5, (14, 14)),
])
def test_lower_bound_size(h, w, size, expected) -> None:
    assert lower_bound_size(h, w, size) == expected


def test_registry_names_and_families() -> None:
    names = {"da2-small", "da2-base", "da2-large", "da1-small", "da1-base", "da1-large"} | {
        f"da2-metric-{s}-{z}" for s in ("indoor", "outdoor") for z in ("small", "base", "large")}
    assert names <= set(MODEL_SPECS)
    assert get_spec("da1-large").layers == (20, 21, 22, 23)
    assert get_spec("da2-large").layers == (4, 11, 17, 23)
    assert get_spec("da2-metric-indoor-base").max_depth == 20
    assert get_spec("da2-metric-outdoor-large").max_depth == 80
    assert get_spec("depth-anything/Depth-Anything-V2-Small-hf").name == "da2-small"
    assert get_spec("LiheYoung/depth_anything_vitb14").name == "da1-base"


def _official_to_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DESIGN.md §2.3, written independently of depthcli.checkpoints.weights (legacy 4.x names)."""
    out = {}
    c = sd["pretrained.cls_token"].shape[-1]
    for k, v in sd.items():
        if k.startswith("pretrained.blocks."):
            i, rest = k.split(".")[2], ".".join(k.split(".")[3:])
            p = f"backbone.encoder.layer.{i}."
            if rest.startswith("attn.qkv."):
                kind = rest.split(".")[-1]
                for j, n in enumerate(("query", "key", "value")):
                    out[p + f"attention.attention.{n}.{kind}"] = v[j * c:(j + 1) * c]
                continue
            rest = (rest.replace("attn.proj.", "attention.output.dense.")
                    .replace("ls1.gamma", "layer_scale1.lambda1")
                    .replace("ls2.gamma", "layer_scale2.lambda1"))
            out[p + rest] = v
        elif k.startswith("pretrained."):
            rest = k[len("pretrained."):]
            rest = {"cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
                    "pos_embed": "embeddings.position_embeddings"}.get(rest, rest)
            rest = rest.replace("patch_embed.proj.", "embeddings.patch_embeddings.projection.")
            rest = rest.replace("norm.", "layernorm.") if rest.startswith("norm.") else rest
            out["backbone." + rest] = v
        else:
            rest = k[len("depth_head."):]
            parts = rest.split(".")
            if parts[0] == "projects":
                out[f"neck.reassemble_stage.layers.{parts[1]}.projection.{parts[2]}"] = v
            elif parts[0] == "resize_layers":
                out[f"neck.reassemble_stage.layers.{parts[1]}.resize.{parts[2]}"] = v
            elif parts[1].endswith("_rn"):
                out[f"neck.convs.{int(parts[1][5]) - 1}.{parts[2]}"] = v
            elif parts[1].startswith("refinenet"):
                layer = 4 - int(parts[1][-1])
                sub = ".".join(parts[2:]).replace("out_conv.", "projection.")
                for r in (1, 2):
                    for cc in (1, 2):
                        sub = sub.replace(f"resConfUnit{r}.conv{cc}", f"residual_layer{r}.convolution{cc}")
                out[f"neck.fusion_stage.layers.{layer}.{sub}"] = v
            elif parts[1] == "output_conv1":
                out[f"head.conv1.{parts[2]}"] = v
            else:
                out[f"head.conv{2 if parts[2] == '0' else 3}.{parts[3]}"] = v
    return out


def test_transformers_layout_loads_identically(small_ckpt, tmp_path) -> None:
    from safetensors.torch import save_file

    sd = torch.load(small_ckpt, weights_only=True)
    hf = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in _official_to_transformers(sd).items()}, str(hf))
    a = create_model("da2-small", weights=small_ckpt)
    b = create_model("da2-small", weights=hf)
    x = torch.randn(1, 3, 70, 126)
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))


def test_matches_transformers_at_518(tmp_path) -> None:
    """Independent oracle: a transformers model (its own init, its own save_pretrained file)
    loaded through our loader gives transformers' output at 518x518 (the size where stock
    transformers interpolation agrees with the official rule)."""
    transformers = pytest.importorskip("transformers")
    bc = transformers.Dinov2Config(
        image_size=518, patch_size=14, hidden_size=384, num_hidden_layers=12,
        num_attention_heads=6, layerscale_value=1.0, out_indices=[3, 6, 9, 12],
        apply_layernorm=True, reshape_hidden_states=False)
    cfg = transformers.DepthAnythingConfig(
        backbone_config=bc, reassemble_hidden_size=384, patch_size=14, fusion_hidden_size=64,
        neck_hidden_sizes=[48, 96, 192, 384], reassemble_factors=[4, 2, 1, 0.5],
        depth_estimation_type="relative")
    torch.manual_seed(0)
    ref = transformers.DepthAnythingForDepthEstimation(cfg).eval()
    with torch.no_grad():  # make the head output non-degenerate (ReLU)
        ref.head.conv3.bias.fill_(1.0)
    ref.save_pretrained(tmp_path)
    ours = create_model("da2-small", weights=tmp_path / "model.safetensors")
    x = torch.randn(1, 3, 518, 518)
    with torch.inference_mode():
        expected = ref(pixel_values=x).predicted_depth
        got = ours(x)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max() / (expected.max() - expected.min())) < 1e-5


def test_v1_and_v2_differ_on_same_weights(small_ckpt) -> None:
    """The family comes from the name: the same file gives different taps for da1 and da2."""
    x = torch.randn(1, 3, 70, 70)
    with torch.inference_mode():
        v1 = create_model("da1-small", weights=small_ckpt)(x)
        v2 = create_model("da2-small", weights=small_ckpt)(x)
    assert not torch.allclose(v1, v2)


def test_batch_equals_single(small_ckpt) -> None:
    est = DepthEngine.from_name("da2-small", weights=small_ckpt, device="cpu", input_size=70)
    rng = np.random.default_rng(0)
    imgs = [cv2.GaussianBlur(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8), (9, 9), 3)
            for _ in range(3)]
    singles = [est.infer(i) for i in imgs]
    batch = est.forward_batch(np.stack([est.preprocess(i) for i in imgs]))
    for s, b in zip(singles, batch, strict=True):
        d = est.postprocess(b, (60, 90))
        assert np.abs(d - s).max() <= 1e-5 * (s.max() - s.min())


def test_official_keys_helper_matches_golden(golden_keys) -> None:
    ours = official_keys("da2-small")
    assert [k for k, _ in ours] != [] and sorted(ours) == sorted(
        (k, list(s)) for k, s in golden_keys["da2-small"])


def test_make_checkpoint_other_sizes(tmp_path) -> None:
    """vitb-sized checkpoints build and load (registry widths and taps are consistent)."""
    path = make_checkpoint(tmp_path / "b.pth", "da2-base")
    m = create_model("da2-base", weights=path)
    with torch.inference_mode():
        assert m(torch.randn(1, 3, 28, 42)).shape == (1, 28, 42)
