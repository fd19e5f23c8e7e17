"""Video Depth Anything on the runtime backends: the golden clip through the OpenVINO graph of
the temporal model (one conversion of the golden ViT-S, shared by every test here), the window
contract, and `predict` on a clip with `--backend openvino`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_vda import decoded_rgb, rel_err, stream, write_clip

from depthcli.backends import BackendError, create_runtime_backend, resolve_backend
from depthcli.checkpoints.synthetic import recipe_state_dict
from depthcli.cli import main
from depthcli.engine.windows import TemporalWindows, video_preprocess
from depthcli.models import create_model

pytest.importorskip("openvino")


@pytest.fixture(scope="session")
def vda_runtime(golden_keys, tmp_path_factory) -> dict:
    """The golden recipe VDA checkpoint, its torch model and one OpenVINO conversion of it."""
    d = tmp_path_factory.mktemp("vda-runtime")
    path = d / "video_depth_anything_vits.pth"
    torch.save(recipe_state_dict(golden_keys["vda-small"]), path)
    model = create_model("vda-small", weights=path)
    cache = d / "cache"
    backend = create_runtime_backend("openvino", model, model.spec, precision="fp32",
                                     cache_dir=cache)
    return {"ckpt": path, "model": model, "backend": backend, "cache": cache}


def test_openvino_golden_parity(golden_dir, vda_runtime) -> None:
    """The golden clip's first window through the OpenVINO graph: its 24 final frames (the
    ones no later window touches) within 1e-4 of the range of the official outputs. The
    procedure around the network is the same code whatever the backend (test_vda.py)."""
    gold = np.load(golden_dir / "vda-small.npz")
    frames, want = gold["frames"], gold["depths_140"]
    spec = vda_runtime["model"].spec
    prep = video_preprocess(140, frames.shape[1:3], spec.mean, spec.std)
    tw = TemporalWindows(vda_runtime["backend"].run, frames.shape[1:3], metric=False)
    got: list[np.ndarray] = []
    for f in frames[:32]:
        got += tw.push(prep(np.ascontiguousarray(f[..., ::-1])))
    assert len(got) == 24 and got[0].dtype == np.float32
    assert rel_err(np.stack(got), want[:24]) < 1e-4


def test_window_contract(vda_runtime) -> None:
    """The graph takes whole windows: 32 frames in, 32 depths out at the network size; any
    other count is a clear error, not a shape error from inside the runtime."""
    backend = vda_runtime["backend"]
    out = backend.run(np.zeros((32, 3, 42, 56), np.float32))
    assert out.shape == (32, 42, 56) and out.dtype == np.float32
    with pytest.raises(BackendError, match="windows of 32 frames, got 4"):
        backend.run(np.zeros((4, 3, 42, 56), np.float32))
    assert resolve_backend("openvino", "cpu", temporal=True) == "openvino"


def test_predict_video_on_openvino(golden_dir, vda_runtime, tmp_path,
                                          monkeypatch) -> None:
    """`predict CLIP --backend openvino` runs the temporal model on OpenVINO, from the cached
    conversion, and writes the streamed procedure's numbers."""
    monkeypatch.setenv("DEPTHCLI_CACHE", str(vda_runtime["cache"]))
    frames = np.load(golden_dir / "vda-small.npz")["frames"][:25]
    clip = write_clip(tmp_path / "clip.mp4", frames)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["predict", str(clip), "-o", str(out), "--model", "vda-small",
                                  "--weights", str(vda_runtime["ckpt"]), "--format", "npy",
                                  "--input-size", "70", "--device", "cpu", "--backend", "openvino",
                                  "--json", "-q"])
    assert r.exit_code == 0, r.output
    settings = json.loads(r.stdout)["settings"]["models"]["videos"]
    assert settings["backend"] == "openvino" and settings["model"] == "vda-small"
    got = np.load(out / "clip.npy")
    want = stream(vda_runtime["model"], decoded_rgb(clip), 70)
    assert got.shape == want.shape == (25, 108, 192)
    assert rel_err(got, want) < 1e-4


def test_caller_module_and_entry_kept(vda_runtime) -> None:
    """The conversion wraps the temporal model without changing it, under its own cache entry
    (one: `predict` above reused it)."""
    model = vda_runtime["model"]
    assert model.temporal and not model.training
    entries = list((Path(vda_runtime["cache"]) / "runtimes" / "openvino").glob("vda-small-*"))
    assert [e.name.split("-fp32-")[1].rsplit("-", 1)[0] for e in entries] == [
        "window32-dynamic-hw"]
