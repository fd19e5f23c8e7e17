"""Weight resolution (file, weights folder, hub cache offline) and refusal of bad checkpoints."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, write_image
from depthcli.checkpoints.weights import read_state_dict
from depthcli.errors import WeightsError
from depthcli.models import create_model, get_spec

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_hub_cache(cache: Path, repo: str, filename: str, src: Path) -> Path:
    """Lay a file out the way huggingface_hub stores it (refs/main → snapshot)."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    snap = folder / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    shutil.copy(src, snap / filename)
    return snap / filename


_CHILD = """
import json, sys
from click.testing import CliRunner
from depthcli.cli import main
res = [CliRunner().invoke(main, args) for args in json.loads(sys.argv[1])]
print(json.dumps([dict(code=r.exit_code, stdout=r.stdout, stderr=r.stderr) for r in res]))
"""


def run_cli(commands: list[list[str]], env_extra: dict[str, str]) -> list[dict]:
    """`depthcli` commands in one fresh process whose environment holds `env_extra` before
    anything is imported (huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE at import).
    One process for several commands: each would cost a torch import of its own."""
    env = {**os.environ, **env_extra}
    r = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(commands)], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def offline(small_ckpt, tmp_path_factory) -> dict[str, dict]:
    """One offline hub cache (da2-small's .pth, the -hf Small repo's safetensors) and the
    commands of the tests below, run in one process with HF_HUB_OFFLINE=1."""
    from safetensors.torch import save_file
    from test_model import _official_to_transformers

    tmp = tmp_path_factory.mktemp("offline")
    spec = get_spec("da2-small")
    cache = tmp / "hub"
    populate_hub_cache(cache, spec.hub_repo, spec.hub_file, small_ckpt)
    sd = torch.load(small_ckpt, weights_only=True)
    st = tmp / "model.safetensors"
    save_file({k: v.contiguous() for k, v in _official_to_transformers(sd).items()}, str(st))
    populate_hub_cache(cache, "depth-anything/Depth-Anything-V2-Small-hf", "model.safetensors", st)
    img = write_image(tmp / "in.png", 40, 60)
    img2 = write_image(tmp / "in2.png", 30, 30)
    common = ["--input-size", "70", "--format", "npy", "--device", "cpu"]
    commands = {
        "hub": ["predict", str(img), "-o", str(tmp / "out"), *common],
        "models": ["models", "--json"],
        "hf": ["predict", str(img2), "-o", str(tmp / "out_hf"), *common, "--model",
               "depth-anything/Depth-Anything-V2-Small-hf"],
        "missing": ["predict", str(img2), "-o", str(tmp / "out_missing"), "--model", "da2-base"],
        "download": ["download", "da2-large"],
    }
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "DEPTHCLI_WEIGHTS_DIR": str(tmp / "empty")}
    res = dict(zip(commands, run_cli(list(commands.values()), env), strict=True))
    return {**res, "tmp": {"path": str(tmp), "cache": str(cache)}}


def test_hub_cache_offline_resolves(offline) -> None:
    tmp = Path(offline["tmp"]["path"])
    assert offline["hub"]["code"] == 0, offline["hub"]["stderr"]
    d = np.load(tmp / "out" / "in.npy")
    assert d.shape == (40, 60) and np.isfinite(d).all()
    assert offline["models"]["code"] == 0
    stdout = offline["models"]["stdout"]
    assert '"path": "' + offline["tmp"]["cache"] in stdout.replace("\\\\", "\\")


def test_hub_cache_hf_repo_id(offline) -> None:
    """A -hf repo id as model name resolves model.safetensors from the cache."""
    assert offline["hf"]["code"] == 0, offline["hf"]["stderr"]
    assert (Path(offline["tmp"]["path"]) / "out_hf" / "in2.npy").is_file()


def test_empty_cache_offline_gives_clear_error(offline) -> None:
    tmp = Path(offline["tmp"]["path"])
    r = offline["missing"]
    assert r["code"] == 1
    err = r["stderr"].strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "depth-anything/Depth-Anything-V2-Base" in err
    assert "depth_anything_v2_vitb.pth" in err and str(tmp / "empty") in err
    out = tmp / "out_missing"
    assert not out.exists() or not any(out.iterdir())


def test_weights_dir_is_searched(small_ckpt, tmp_path, monkeypatch) -> None:
    wdir = tmp_path / "w"
    wdir.mkdir()
    shutil.copy(small_ckpt, wdir / "depth_anything_v2_metric_hypersim_vits.pth")
    monkeypatch.setenv("DEPTHCLI_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = create_model("da2-metric-indoor-small")
    assert m.metric and m.max_depth == 20


def test_shape_mismatch_says_what_it_looks_like(small_ckpt) -> None:
    with pytest.raises(WeightsError) as ei:
        create_model("da2-base", weights=small_ckpt)
    msg = str(ei.value)
    assert "da2-base" in msg and "ViT-S" in msg and "da2-small" in msg


def test_missing_keys_refused(small_ckpt, tmp_path) -> None:
    sd = torch.load(small_ckpt, weights_only=True)
    del sd["depth_head.scratch.output_conv1.weight"]
    torch.save(sd, tmp_path / "cut.pth")
    with pytest.raises(WeightsError, match="missing"):
        create_model("da2-small", weights=tmp_path / "cut.pth")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + str(Path(os.environ["EVIL_MARK"])),))


def test_code_carrying_pickle_is_refused(tmp_path, monkeypatch) -> None:
    mark = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARK", str(mark))
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"pretrained.cls_token": _Evil()}, f)
    with pytest.raises(WeightsError, match="refused"):
        read_state_dict(path)
    assert not mark.exists()
    # also through torch.save's zip container
    torch.save({"x": _Evil()}, tmp_path / "evil2.pth")
    with pytest.raises(WeightsError, match="refused"):
        create_model("da2-small", weights=tmp_path / "evil2.pth")
    assert not mark.exists()


def test_not_a_checkpoint(tmp_path) -> None:
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="junk.pth"):
        create_model("da2-small", weights=bad)


def test_missing_weights_file_cli(tmp_path) -> None:
    from click.testing import CliRunner

    from depthcli.cli import main

    img = write_image(tmp_path / "in.png", 20, 20)
    r = CliRunner().invoke(main, ["predict", str(img), "--weights", str(tmp_path / "nope.pth"),
                                  "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "nope.pth" in r.stderr and "not found" in r.stderr  # issue 21


def test_unknown_model_is_usage_error(tmp_path) -> None:
    from click.testing import CliRunner

    from depthcli.cli import main

    r = CliRunner().invoke(main, ["predict", "x.jpg", "--model", "da3-huge"])
    assert r.exit_code == 2 and "unknown model" in r.stderr


def test_download_offline_error(offline) -> None:
    r = offline["download"]
    assert r["code"] == 1 and "Depth-Anything-V2-Large" in r["stderr"]
