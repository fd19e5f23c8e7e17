"""Warm start (engine/warm.py, backends/warm.py): a checkpoint whose OpenVINO model is cached
runs without torch, and gives the bytes the full path gave; anything changed or not covered
takes the full path.

The runs are fresh interpreters; "without torch" is checked by poisoning torch, timm and
torchvision in them (an import of any raises), so a warm run that touched torch would fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, write_image

pytest.importorskip("openvino", reason="OpenVINO is not installed")

NO_TORCH = ("import sys\n"
            "for m in ('torch', 'timm', 'torchvision'):\n"
            "    sys.modules[m] = None\n")
CLI = "import runpy; runpy.run_module('depthcli', run_name='__main__')\n"


def _predict(cache: Path, src: Path, out: Path, ckpt: Path, *extra: str,
             poison: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEPTHCLI_CACHE": str(cache)}
    env.pop("DEPTHCLI_BACKEND", None)
    cmd = [sys.executable, "-c", (NO_TORCH if poison else "") + CLI, "predict", str(src),
           "-o", str(out), "--model", "da2-tiny-test", "--weights", str(ckpt), "-f", "npy",
           "--json", "--device", "cpu", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def _predict_here(cache: Path, src: Path, out: Path, ckpt: Path, *extra: str) -> None:
    """A full-path run in this process (torch is loaded here anyway): converts and records."""
    from click.testing import CliRunner

    from depthcli.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEPTHCLI_CACHE", str(cache))
        r = CliRunner().invoke(main, ["predict", str(src), "-o", str(out), "--model",
                                      "da2-tiny-test", "--weights", str(ckpt), "-f", "npy",
                                      "--device", "cpu", "--backend", "openvino", *extra])
    assert r.exit_code == 0, r.output + r.stderr


def _inputs(root: Path) -> Path:
    for i, (h, w) in enumerate(((40, 60), (33, 47), (64, 30))):
        write_image(root / f"i{i}.png", h, w, seed=i)
    return root


@pytest.fixture(scope="module")
def cold(tmp_path_factory, tiny_ckpt) -> tuple[Path, Path, Path]:
    """(cache, inputs, outputs) of one full-path run that converted the tiny model (shared:
    tests/conftest.py keeps this file on one worker)."""
    root = tmp_path_factory.mktemp("warm")
    cache, src = root / "cache", _inputs(root / "in")
    _predict_here(cache, src, root / "cold", tiny_ckpt)
    return cache, src, root / "cold"


def test_warm_run_needs_no_torch_and_gives_the_same_bytes(cold, tmp_path, tiny_ckpt,
                                                           monkeypatch) -> None:
    cache, src, out = cold
    assert len(list((cache / "runtimes" / "openvino" / "warm").glob("*.json"))) >= 1
    # auto picks the cached model; --threads reaches OpenVINO without torch
    warm = _predict(cache, src, tmp_path / "warm", tiny_ckpt, "--backend", "auto", "--threads",
                    "1", poison=True)
    assert warm.returncode == 0, warm.stderr
    used = json.loads(warm.stdout)["settings"]
    assert used["models"]["images"]["backend"] == "openvino" and used["threads"] == 1
    assert used["models"]["images"]["device"] == "cpu"
    names = sorted(p.name for p in out.glob("*.npy"))
    assert names == ["i0.npy", "i1.npy", "i2.npy"]
    for name in names:
        a, b = np.load(out / name), np.load(tmp_path / "warm" / name)
        assert a.shape == b.shape and np.array_equal(a, b), name

    # In process: the same engine for every setting that would pick this model, none otherwise.
    from depthcli.engine.warm import warm_engine

    monkeypatch.setenv("DEPTHCLI_CACHE", str(cache))
    base = {"max_depth": None, "device": "cpu", "precision": "auto", "backend": "openvino",
            "input_size": None}
    est = warm_engine("da2-tiny-test", tiny_ckpt, **base)  # type: ignore[arg-type]
    assert est is not None and est.backend.name == "openvino" and est.model is None
    assert est.preprocess.input_size == 518 and est.device_type == "cpu"
    for change in ({"device": "cuda"}, {"precision": "bf16"}, {"precision": "int8"},
                   {"backend": "torch"}, {"backend": "onnxruntime"}, {"max_depth": 5.0},
                   {"output_size": "nope"}):
        assert warm_engine("da2-tiny-test", tiny_ckpt, **{**base, **change}) is None, change
    assert warm_engine("da2-tiny-test", tmp_path / "missing.pth", **base) is None
    monkeypatch.setenv("DEPTHCLI_WARM_START", "0")
    assert warm_engine("da2-tiny-test", tiny_ckpt, **base) is None


def test_a_changed_checkpoint_or_entry_takes_the_full_path(cold, tmp_path, tiny_ckpt) -> None:
    cache, src, out = cold
    ckpt = tmp_path / "w.pth"  # same numbers: the cached entry serves it; its own record
    ckpt.write_bytes(tiny_ckpt.read_bytes())
    _predict_here(cache, src, tmp_path / "o1", ckpt)
    # a checkpoint rewritten in place (another mtime): no warm start, torch is needed
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    r = _predict(cache, src, tmp_path / "o2", ckpt, "--backend", "openvino", poison=True)
    assert r.returncode == 1 and "cannot import torch" in r.stderr, r.stderr
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))  # as recorded: warm again
    r = _predict(cache, src, tmp_path / "o3", ckpt, "--backend", "openvino", poison=True)
    assert r.returncode == 0, r.stderr
    for name in ("i0.npy", "i1.npy", "i2.npy"):
        assert np.array_equal(np.load(out / name), np.load(tmp_path / "o3" / name))
    # an entry file altered since it was checked: not trusted (the full path rebuilds it); in a
    # copy of the cache, which the other tests share
    altered = tmp_path / "cache"
    shutil.copytree(cache, altered)  # (mtimes kept: the copy starts warm)
    r = _predict(altered, src, tmp_path / "o4", ckpt, "--backend", "openvino", poison=True)
    assert r.returncode == 0, r.stderr
    (xml,) = (altered / "runtimes" / "openvino").glob("da2-tiny-test-fp32-*/model.xml")
    xml.write_text(xml.read_text() + " ")
    r = _predict(altered, src, tmp_path / "o5", ckpt, "--backend", "openvino", poison=True)
    assert r.returncode == 1 and "cannot import torch" in r.stderr, r.stderr


def test_int8_warm_start(cold, tmp_path, tiny_ckpt, monkeypatch) -> None:
    """--precision int8 on the built-in calibration set starts warm too: the quantised entry
    at that network size, the same bytes, no torch; another size or --calibrate does not."""
    pytest.importorskip("nncf")
    cache, src, _ = cold
    _predict_here(cache, src, tmp_path / "cold", tiny_ckpt, "--precision", "int8",
                  "--input-size", "112")
    r = _predict(cache, src, tmp_path / "warm", tiny_ckpt, "--precision", "int8",
                 "--input-size", "112", poison=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["settings"]["models"]["images"]["backend"] == "openvino"
    for name in ("i0.npy", "i1.npy", "i2.npy"):
        assert np.array_equal(np.load(tmp_path / "cold" / name), np.load(tmp_path / "warm" / name))

    from depthcli.engine.warm import warm_engine

    monkeypatch.setenv("DEPTHCLI_CACHE", str(cache))
    base = {"max_depth": None, "device": "cpu", "precision": "int8", "backend": "auto",
            "input_size": 112}
    est = warm_engine("da2-tiny-test", tiny_ckpt, **base)  # type: ignore[arg-type]
    assert est is not None and est.backend.precision == "int8"
    assert warm_engine("da2-tiny-test", tiny_ckpt, **{**base, "input_size": 126}) is None  # type: ignore[arg-type]


def test_threads_without_torch() -> None:
    """--threads reaches the runtimes while torch is not loaded, and torch once it is."""
    code = NO_TORCH + (
        "from depthcli.engine.device import current_threads, run_threads, torch_threads\n"
        "assert run_threads() is None\n"
        "with torch_threads(3):\n"
        "    assert run_threads() == 3 == current_threads()\n"
        "assert run_threads() is None\n"
        "print(current_threads())\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "5"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "5", r.stderr


def test_bench_startup_measures_the_warm_start(cold, tiny_ckpt, monkeypatch) -> None:
    """`bench --startup --backend openvino` with a checkpoint file: the steps of a warm start
    (no checkpoint read, the record's lookup as the cache key)."""
    from depthcli.bench.startup import measure

    cache, src, _ = cold
    monkeypatch.setenv("DEPTHCLI_CACHE", str(cache))
    got = measure("da2-tiny-test", tiny_ckpt, "openvino", src / "i0.png", 56, runs=1, warmup=0)
    s = got["seconds"]
    assert got["backend"] == "openvino-warm"
    assert s["checkpoint_read"] == s["convert"] == 0 and s["cache_load"] > 0 and s["compile"] > 0
    assert s["imports"] > 0 and s["first_image"] > 0
    assert sum(v for k, v in s.items() if k != "to_first_forward") <= s["to_first_forward"] + 0.01
