"""Depth Anything 3: golden parity with the official code (API, CLI and the Ray stages),
hub-layout loading, refusals, --output-size, metric scaling and the runtime backends.

Recipe checkpoints are written once per session in the hub layout (`model.safetensors` +
`config.json`), and each model is built once per module: `create_model` is memoised for the
checkpoints of this module, so the CLI and the Ray stages load the same modules again for free
(folding LayerScale, the only change an estimator makes to its model, is idempotent). The
golden inputs are small, and the 504-px cases run once per model and path.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import write_image
from depthcli.engine.core import DepthEngine
from depthcli.errors import WeightsError
from depthcli.models import create_model, get_spec
from recipe import recipe_state_dict

INPUTS = ("landscape", "portrait", "square")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / (ref.max() - ref.min()))


@pytest.fixture(scope="session")
def da3_keys(golden_dir: Path) -> dict:
    path = golden_dir / "da3-keys.json"
    if not path.is_file():
        pytest.skip("../shared/golden/da3-keys.json is absent")
    return json.loads(path.read_text())


def write_hub_folder(folder: Path, keys: list, config: str, salt: str = "",
                     aliases: bool = False) -> Path:
    """A `save_pretrained`-style folder; `aliases` adds the six shared-LayerNorm names too."""
    from safetensors.torch import save_file

    sd = recipe_state_dict(keys, salt)
    if aliases:
        for i in (1, 2, 3):
            for leaf in ("weight", "bias"):
                src = f"model.head.scratch.output_conv2_aux.0.2.{leaf}"
                sd[src.replace("aux.0.", f"aux.{i}.")] = sd[src].clone()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_name": config}))
    return folder


@pytest.fixture(scope="session")
def da3_folders(da3_keys: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("da3")
    return {tag: write_hub_folder(root / tag, da3_keys[tag], tag)
            for tag in ("da3-small", "da3mono-small-test")}


@pytest.fixture(scope="module", autouse=True)
def built_once(da3_folders: dict[str, Path], small_ckpt: Path):
    """`create_model` memoised on (name, checkpoint) for this module's own checkpoints."""
    import depthcli.engine.core
    import depthcli.models

    real = depthcli.models.create_model
    mine = {str(p.resolve()) for f in da3_folders.values()
            for p in (f, f / "model.safetensors")} | {str(small_ckpt.resolve())}
    cache: dict[tuple, torch.nn.Module] = {}

    def create(name, *, weights=None, **kw):
        if weights is None or str(Path(weights).resolve()) not in mine or kw.get("pretrained") \
                is False:
            return real(name, weights=weights, **kw)
        key = (get_spec(name).name, str(Path(weights).resolve()), kw.get("max_depth"))
        if key not in cache:
            cache[key] = real(name, weights=weights, **kw)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(depthcli.engine.core, "create_model", create)
        yield cache


@pytest.fixture(scope="module")
def estimators(da3_folders: dict[str, Path]) -> dict[tuple[str, int], DepthEngine]:
    """One loaded model per tag, an estimator per process size, network-size output."""
    out = {}
    for tag, folder in da3_folders.items():
        est = DepthEngine.from_name(tag, weights=folder, device="cpu", backend="torch",
                                       output_size="network")
        out[tag, 504] = est
        out[tag, 140] = DepthEngine(est.model, device="cpu", backend="torch", owns_model=True,
                                       input_size=140, output_size="network")
    return out


def _check_small(gold: np.lib.npyio.NpzFile, key: str, depth: np.ndarray, conf: np.ndarray,
                 intrinsics: np.ndarray) -> None:
    assert depth.shape == gold[key].shape and depth.dtype == np.float32
    assert rel_err(depth, gold[key]) < 1e-4, key
    assert rel_err(conf, gold[f"{key}:conf"]) < 1e-4, key
    np.testing.assert_allclose(intrinsics, gold[f"{key}:intrinsics"], rtol=1e-5, atol=1e-4)


def _check_mono(gold: np.lib.npyio.NpzFile, key: str, depth: np.ndarray,
                sky: np.ndarray | None, fill: float | None) -> None:
    g = gold[key]
    assert depth.shape == g.shape and depth.dtype == np.float32
    sky_map = gold[f"{key}:sky_map"]
    # Pixels within 1e-3 of the 0.3 fill threshold may land on either side of it.
    outside, inside = sky_map < 0.3 - 1e-3, sky_map >= 0.3 + 1e-3
    assert np.abs(depth - g)[outside].max() / (g.max() - g.min()) < 1e-4, key
    if bool(gold[f"{key}:sky_filled"]):
        exact = float(gold[f"{key}:sky_fill_value_exact"])
        assert fill is not None and abs(fill - exact) / (g.max() - g.min()) < 1e-4, key
        assert np.abs(depth[inside] - exact).max() / (g.max() - g.min()) < 1e-4, key
    if sky is not None:
        assert (sky == gold[f"{key}:sky"]).mean() > 0.9999, key


@pytest.mark.parametrize("tag", ["da3-small", "da3mono-small-test"])
def test_golden_parity_api(tag: str, golden_dir: Path, estimators: dict) -> None:
    """Every stored input at 140 and the 504 portrait through `DepthEngine.infer_full`."""
    gold = np.load(golden_dir / f"{tag}.npz")
    for size, names in ((140, INPUTS), (504, ("portrait",))):
        for name in names:
            key = f"{name}@{size}"
            r = estimators[tag, size].infer_full(cv2.imread(str(golden_dir / f"{name}.png")))
            if tag == "da3-small":
                _check_small(gold, key, r.depth, r.extras["conf"],
                             np.asarray(r.extras["intrinsics"]))
            else:
                _check_mono(gold, key, r.depth, r.extras["sky"], r.extras["sky_fill"])


def _cli(args: list[str]) -> str:
    from click.testing import CliRunner

    from depthcli.cli import main

    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.mark.parametrize("tag", ["da3-small", "da3mono-small-test"])
def test_golden_parity_cli(tag: str, golden_dir: Path, da3_folders: dict, tmp_path) -> None:
    """`predict --format npy --output-size network` (+ conf / sky, --json intrinsics): the
    504 landscape and every input at 140."""
    gold = np.load(golden_dir / f"{tag}.npz")
    extra = "conf" if tag == "da3-small" else "sky"
    for size, names in ((504, ("landscape",)), (140, INPUTS)):
        out = tmp_path / str(size)
        imgs = [str(golden_dir / f"{n}.png") for n in names]
        text = _cli(["predict", *imgs, "-o", str(out), "--model", tag, "--weights",
                     str(da3_folders[tag]), "--format", f"npy,{extra}", "--output-size",
                     "network", "--input-size", str(size), "--device", "cpu", "--precision",
                     "fp32", "--backend", "torch", "--json", "-q"])
        rows = {Path(r["path"]).stem: r for r in json.loads(text)["images"]}
        for n in names:
            key, depth = f"{n}@{size}", np.load(out / f"{n}.npy")
            if tag == "da3-small":
                _check_small(gold, key, depth, np.load(out / f"{n}_conf.npy"),
                             np.asarray(rows[n]["intrinsics"]))
            else:
                sky = cv2.imread(str(out / f"{n}_sky.png"), cv2.IMREAD_UNCHANGED) > 127
                _check_mono(gold, key, depth, sky, rows[n]["sky_fill"])


def test_default_output_is_input_size(estimators: dict, golden_dir: Path) -> None:
    """Without --output-size network every DA3 output is at the input's size, the camera too."""
    est = estimators["da3-small", 140]
    default = DepthEngine(est.model, device="cpu", backend="torch", input_size=140,
                             owns_model=True)
    img = cv2.imread(str(golden_dir / "landscape.png"))  # 240x160 → network 140x98
    net, full = est.infer_full(img), default.infer_full(img)
    assert net.depth.shape == (98, 140) and full.depth.shape == img.shape[:2]
    assert full.extras["conf"].shape == img.shape[:2]
    k_net, k_full = np.asarray(net.extras["intrinsics"]), np.asarray(full.extras["intrinsics"])
    assert k_full[0, 2] == 120 and k_full[1, 2] == 80
    assert k_full[0, 0] == pytest.approx(k_net[0, 0] * 240 / 140, rel=1e-6)


def test_hub_cache_layout_with_aliases(da3_keys: dict, tmp_path, monkeypatch) -> None:
    """A hub-cache snapshot (other seed, all six aliased LayerNorm names present) loads offline
    by name, and the `model.safetensors` file alone loads the same way."""
    from huggingface_hub import constants

    spec = get_spec("da3-small")
    cache = tmp_path / "hub"
    folder = cache / ("models--" + spec.hub_repo.replace("/", "--"))
    snap = write_hub_folder(folder / "snapshots" / COMMIT, da3_keys["da3-small"], "da3-small",
                            salt="other", aliases=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("DEPTHCLI_WEIGHTS_DIR", str(tmp_path / "empty"))
    a = create_model("da3-small")
    b = create_model("depth-anything/DA3-SMALL", weights=snap / "model.safetensors")
    ref = recipe_state_dict(da3_keys["da3-small"][:1], salt="other")
    key = "model.backbone.pretrained.cls_token"
    assert torch.equal(a.state_dict()["encoder.vit.cls_token"], ref[key])
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    # DEPTHCLI_WEIGHTS_DIR/<repo>/model.safetensors is found too
    local = tmp_path / "w" / "DA3-SMALL"
    shutil.copytree(snap, local)
    monkeypatch.setenv("DEPTHCLI_WEIGHTS_DIR", str(tmp_path / "w"))
    from depthcli.checkpoints.weights import cached_path

    assert cached_path(spec) == local / "model.safetensors"


def test_mismatched_files_refused(da3_folders: dict, small_ckpt: Path, tmp_path) -> None:
    with pytest.raises(WeightsError, match="Depth Anything 3 any-view.*da3-small"):
        create_model("da2-small", weights=da3_folders["da3-small"] / "model.safetensors")
    with pytest.raises(WeightsError, match="Depth Anything 3 monocular/metric ViT-S"):
        create_model("da3-small", weights=da3_folders["da3mono-small-test"] / "model.safetensors")
    with pytest.raises(WeightsError, match="ViT-S model.*da2-small"):
        create_model("da3-small", weights=small_ckpt)
    with pytest.raises(WeightsError, match="config.json says model_name 'da3mono-small-test'"):
        create_model("da3-small", weights=da3_folders["da3mono-small-test"])


def metric_twin(model: torch.nn.Module) -> torch.nn.Module:
    """The mono test model as da3-metric-large would be: the same modules (shared, not
    copied), a metric spec (configs are identical, DESIGN.md §10.1.1)."""
    twin = copy.copy(model)
    twin.spec = dataclasses.replace(model.spec, output="metric")
    return twin


def test_metric_scaling(estimators: dict, golden_dir: Path) -> None:
    """da3-metric-large's metres = focal (network px) x output / 300, on the mono test config."""
    base = estimators["da3mono-small-test", 140]
    model = metric_twin(base.model)
    img = cv2.imread(str(golden_dir / "portrait.png"))  # 126x203 → network 84x140
    rel = base.infer_full(img)
    for camera, focal in (({"focal_px": 252.0}, 252.0 * (84 / 126 + 140 / 203) / 2),
                          ({"fov_deg": 90.0}, (63 * 84 / 126 + 63 * 140 / 203) / 2)):
        est = DepthEngine(model, device="cpu", backend="torch", input_size=140,
                             output_size="network", camera=camera, owns_model=True)
        r = est.infer_full(img)
        assert r.extras["focal_px"] == pytest.approx(focal, rel=1e-9)
        np.testing.assert_allclose(r.depth, rel.depth * focal / 300, rtol=2e-5)


def test_output_size_da2(small_ckpt: Path, tmp_path) -> None:
    """--output-size network gives DA2 the network-size map; the default the input size."""
    from depthcli.engine.transforms import lower_bound_size

    img = write_image(tmp_path / "in.png", 40, 60)
    sizes = {}
    for mode in ("input", "network"):
        _cli(["predict", str(img), "-o", str(tmp_path / mode), "--weights", str(small_ckpt),
              "--input-size", "70", "-f", "npy", "--output-size", mode, "--device", "cpu", "-q"])
        sizes[mode] = np.load(tmp_path / mode / "in.npy").shape
    assert sizes == {"input": (40, 60), "network": lower_bound_size(40, 60, 70)}


def test_ray_stages_without_ray(estimators: dict, da3_folders: dict, golden_dir: Path,
                                tmp_path) -> None:
    """read -> model -> write (the `--engine ray` stages as plain functions) give the golden
    network-size depth, confidence, intrinsics (for --json) and sky of the local engine, and
    the input-size default equals the local engine's; metric metres use the camera options."""
    from depthcli.outputs import OutputOptions
    from depthcli.runs.options import PredictOptions
    from depthcli.runs.ray_stages import (
        EngineSpec,
        ModelStage,
        column,
        read_stage,
        write_stage,
    )

    names = ("landscape", "portrait")
    srcs = [str(golden_dir / f"{n}.png") for n in names]

    def run(tag: str, fmts: tuple[str, ...], out: Path, **cfg_kw: object) -> dict:
        cfg = EngineSpec(tag, str(da3_folders[tag]), device="cpu", backend="torch",
                              input_size=140, **cfg_kw)  # type: ignore[arg-type]
        opts = PredictOptions(inputs=(), out_dir=out, output=OutputOptions(fmts), batch_size=2)
        suffix = {"npy": ".npy", "conf": "_conf.npy", "sky": "_sky.png"}
        paths = [json.dumps({f: str(out / f"{n}{suffix[f]}") for f in fmts}) for n in names]
        batch = {"idx": np.arange(2), "src": column(srcs), "kind": column(["image"] * 2),
                 "base": column([""] * 2), "paths": column(paths)}
        prep = cfg.preprocess()
        assert prep == estimators[tag, 140].preprocess
        stage = ModelStage(cfg, opts, prep)
        res = write_stage(stage(read_stage(batch, prep=prep, max_pixels=10**8,
                                           keep_image=False)), output=opts.output)
        assert list(res["status"]) == ["written"] * 2, list(res["error"])
        return {n: json.loads(str(c)) if str(c) else {} for n, c in zip(names, res["camera"],
                                                                          strict=True)}

    small = np.load(golden_dir / "da3-small.npz")
    cams = run("da3-small", ("npy", "conf"), tmp_path / "s", output_size="network")
    for n in names:
        _check_small(small, f"{n}@140", np.load(tmp_path / "s" / f"{n}.npy"),
                     np.load(tmp_path / "s" / f"{n}_conf.npy"), np.asarray(cams[n]["intrinsics"]))
    mono = np.load(golden_dir / "da3mono-small-test.npz")
    cams = run("da3mono-small-test", ("npy", "sky"), tmp_path / "m", output_size="network")
    for n in names:
        sky = cv2.imread(str(tmp_path / "m" / f"{n}_sky.png"), cv2.IMREAD_UNCHANGED) > 127
        _check_mono(mono, f"{n}@140", np.load(tmp_path / "m" / f"{n}.npy"), sky,
                    cams[n]["sky_fill"])
    # default output size: the local engine's input-size arrays, bit for bit
    run("da3-small", ("npy",), tmp_path / "d")
    local = DepthEngine(estimators["da3-small", 140].model, device="cpu", backend="torch",
                           input_size=140, owns_model=True)
    ref = local.infer_full(cv2.imread(srcs[0])).depth
    np.testing.assert_array_equal(np.load(tmp_path / "d" / "landscape.npy"), ref)


def test_backend_choice(estimators: dict, caplog) -> None:
    """`auto` on a CPU: OpenVINO (where installed) for every DA3 model: the any-view graph
    (RoPE, camera token, QK-norm) converts and reproduces torch to ~4e-6 of the range. ONNX
    Runtime cannot export it (torch.export fails on the RoPE tables' dynamic sizes), so an
    explicit --backend onnxruntime says so in one line and runs torch."""
    from depthcli.backends import available, create_backend, resolve_backend

    want = "openvino" if available("openvino") else "torch"
    assert resolve_backend("auto", "cpu", precision="fp32", onnx=False) == want
    with caplog.at_level("WARNING", logger="depthcli.backends"):
        be = create_backend("onnxruntime", estimators["da3-small", 140].model,
                            torch.device("cpu"), torch.float32, owns_model=True)
    assert be.name == "torch"
    assert [r.getMessage() for r in caplog.records] == [
        "--backend onnxruntime does not export Depth Anything 3 any-view models (RoPE) yet; "
        "using torch"]


@pytest.mark.slow  # ~50 s here: the OpenVINO conversion of the ViT-S model
def test_openvino_backend_mono(estimators: dict, golden_dir: Path, tmp_path) -> None:
    """The monocular configuration through OpenVINO (no new operators): the same depth, sky
    and fill as the official code."""
    pytest.importorskip("openvino")
    from depthcli.backends import create_runtime_backend

    base = estimators["da3mono-small-test", 140]
    backend = create_runtime_backend("openvino", base.model, base.spec, precision="fp32",
                                     cache_dir=tmp_path)
    est = DepthEngine(base.model, device="cpu", backend=backend, input_size=140,
                         output_size="network")
    gold = np.load(golden_dir / "da3mono-small-test.npz")
    for name in ("landscape", "square"):
        r = est.infer_full(cv2.imread(str(golden_dir / f"{name}.png")))
        _check_mono(gold, f"{name}@140", r.depth, r.extras["sky"], r.extras["sky_fill"])
