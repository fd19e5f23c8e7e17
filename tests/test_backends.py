"""Runtime backends: `auto` selection, OpenVINO / ONNX Runtime parity with the official outputs
for V1, V2 and metric models, the on-disk cache (reuse, mixed sizes, corrupt entries), and the
caller's module left untouched."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import torch

import depthcli.backends as backends
from depthcli.backends import Backend, BackendError, create_runtime_backend, resolve_backend
from depthcli.backends.cache import CacheKey, RuntimeCache, cache_root
from runtime_helpers import golden_case, golden_model, memo_onnx_export, rel_err, to_original

# One golden entry per model (few, small): the identity case, a resampled one, a tall one.
CASES = {"da2-small": "landscape@364", "da1-small": "square@518",
         "da2-metric-indoor-small": "portrait@518"}


@pytest.fixture(scope="module", autouse=True)
def _shared_exports():
    mp = pytest.MonkeyPatch()
    mp.setattr(torch.onnx, "export", memo_onnx_export(torch.onnx.export))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def models(golden_keys, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("bk")
    return {tag: golden_model(tag, golden_keys, d) for tag in CASES}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runtime-cache")


# ------------------------------------------------------------------ selection


def test_auto_falls_back_to_torch_when_a_conversion_fails(monkeypatch, caplog) -> None:
    """`auto` keeps the official numbers: a runtime model that fails its check against torch
    means torch for the run, with one line; asked for by name, it is the run's error."""
    from depthcli.backends.torch import TorchBackend
    from depthcli.models import create_model

    def failing(*a, **kw):  # type: ignore[no-untyped-def]
        raise BackendError("OpenVINO conversion of x does not reproduce torch (...); use "
                           "--backend torch")

    monkeypatch.setattr(backends, "resolve_backend", lambda name, *a, **kw: "openvino")
    monkeypatch.setattr(backends, "create_runtime_backend", failing)
    net = create_model("da2-tiny-test", pretrained=False)
    with caplog.at_level(logging.WARNING):
        got = backends.create_backend("auto", net, torch.device("cpu"), torch.float32)
    assert isinstance(got, TorchBackend)
    assert caplog.text.count("running on torch instead") == 1 and "use --" not in caplog.text
    with pytest.raises(BackendError, match="does not reproduce torch"):
        backends.create_backend("openvino", net, torch.device("cpu"), torch.float32)


def test_auto_selection(monkeypatch, caplog) -> None:
    expected_cpu = "openvino" if backends.available("openvino") else "torch"
    assert resolve_backend("auto", "cpu") == expected_cpu
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("auto", "mps") == "torch"
    assert resolve_backend("torch", "cpu") == "torch"
    with caplog.at_level(logging.WARNING):  # temporal: OpenVINO with AVX-512, else torch
        for avx512 in (True, False):
            monkeypatch.setattr(backends, "has_avx512", lambda v=avx512: v)
            assert resolve_backend("auto", "cpu", temporal=True) == (
                expected_cpu if avx512 else "torch")
        assert resolve_backend("auto", "cuda", temporal=True) == "torch"
        if backends.available("openvino"):
            assert resolve_backend("openvino", "cpu", temporal=True) == "openvino"
        assert caplog.text == ""
    with pytest.raises(BackendError, match="unknown backend"):
        resolve_backend("tensorrt", "cpu")
    monkeypatch.setattr(backends, "available", lambda name: False)
    assert resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(BackendError, match=r"depthcli\[openvino\]"):
        resolve_backend("openvino", "cpu")
    with pytest.raises(BackendError, match=r"depthcli\[onnx\]"):
        resolve_backend("onnxruntime", "cpu")
    monkeypatch.setattr(backends, "available", lambda name: True)
    with pytest.raises(BackendError, match="runs on the CPU"):
        resolve_backend("openvino", "cuda")
    monkeypatch.setattr(backends, "_openvino_supports", lambda p: False)
    assert resolve_backend("auto", "cpu", precision="bf16") == "torch"
    assert resolve_backend("auto", "cpu", precision="fp32") == "openvino"


def test_cache_root_follows_hf_conventions(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("DEPTHCLI_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert cache_root() == tmp_path / "hf" / "depthcli"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "huggingface" / "depthcli"
    monkeypatch.setenv("DEPTHCLI_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"


# ---------------------------------------------------------------- cache unit


def test_cache_atomic_reuse_and_corrupt_recovery(tmp_path, caplog) -> None:
    cache = RuntimeCache(tmp_path)
    key = CacheKey("openvino", "da2-small", "abc", "fp32", "dynamic", {"openvino": "1"})
    builds: list[int] = []

    def build(folder) -> None:
        builds.append(1)
        (folder / "model.bin").write_bytes(b"x" * 1000)

    def load(entry) -> bytes:
        data = (entry / "model.bin").read_bytes()
        if data != b"x" * 1000:
            raise ValueError("bad model")
        return data

    assert cache.get(key, build, load) == (b"x" * 1000, True)
    assert cache.get(key, build, load) == (b"x" * 1000, False) and len(builds) == 1
    entry = cache.entry_path(key)
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # no temporaries
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["key"]["weights"] == "abc" and "model.bin" in manifest["files"]
    # Another key (e.g. other weights or runtime version) is another entry.
    other = CacheKey("openvino", "da2-small", "abd", "fp32", "dynamic", {"openvino": "1"})
    assert cache.entry_path(other) != entry

    for corrupt in (lambda: (entry / "model.bin").write_bytes(b"x" * 10),  # truncated
                    lambda: (entry / "model.bin").write_bytes(b"y" * 1000),  # altered
                    lambda: (entry / "manifest.json").write_text("{"),  # unreadable manifest
                    lambda: (entry / "model.bin").unlink()):  # missing
        corrupt()
        with caplog.at_level(logging.WARNING):
            caplog.clear()
            assert cache.get(key, build, load) == (b"x" * 1000, True)
        assert "unusable" in caplog.text
    # Valid manifest, but the runtime cannot load it: rebuilt once, not fatal.
    calls = {"n": 0}

    def flaky_load(entry) -> bytes:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("cannot parse")
        return load(entry)

    with caplog.at_level(logging.WARNING):
        caplog.clear()
        assert cache.get(key, build, flaky_load) == (b"x" * 1000, True)
    assert "failed to load" in caplog.text


def test_cache_build_failure_leaves_nothing(tmp_path) -> None:
    cache = RuntimeCache(tmp_path)
    key = CacheKey("onnxruntime", "da2-small", "abc", "fp32", "dynamic")

    def build(folder) -> None:
        (folder / "model.onnx").write_bytes(b"partial")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        cache.get(key, build, lambda e: None)
    assert list(cache.entry_path(key).parent.iterdir()) == []


def test_cache_builds_once_while_another_builds(tmp_path, caplog) -> None:
    """A second `get` of a key being built waits for that build and loads its entry (the
    build lock is flock on its own open file, so two threads contend as two processes do)."""
    import threading

    cache = RuntimeCache(tmp_path)
    key = CacheKey("openvino", "da2-small", "abc", "fp32", "dynamic")
    started, builds = threading.Event(), []

    def build(folder) -> None:
        builds.append(threading.get_ident())
        started.set()
        time.sleep(1.0)
        (folder / "model.bin").write_bytes(b"ok")

    def load(entry) -> bytes:
        return (entry / "model.bin").read_bytes()

    results: list[tuple[bytes, bool]] = []
    first = threading.Thread(target=lambda: results.append(cache.get(key, build, load)))
    first.start()
    assert started.wait(30)
    with caplog.at_level(logging.WARNING):
        second = cache.get(key, build, load)
    first.join(30)
    assert results == [(b"ok", True)] and second == (b"ok", False)
    assert len(builds) == 1
    assert "waiting for another depthcli process converting da2-small" in caplog.text


# ------------------------------------------------------------------- OpenVINO


@pytest.mark.parametrize("tag", list(CASES))
def test_openvino_parity_with_official(tag, models, cache_dir, golden_dir) -> None:
    pytest.importorskip("openvino")
    model = models[tag]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    b = create_runtime_backend("openvino", model, model.spec, precision="fp32",
                               cache_dir=cache_dir)
    assert isinstance(b, Backend) and (b.name, b.device, b.precision) == ("openvino", "cpu", "fp32")
    x, gold = golden_case(golden_dir, tag, CASES[tag], model.spec)
    out = b.run(x)
    assert out.shape == x.shape[:1] + x.shape[2:] and out.dtype == np.float32
    assert rel_err(to_original(out, gold, model.spec), gold) < 1e-4
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_openvino_cache_reuse_mixed_sizes_and_corrupt_entry(tiny_ckpt, tmp_path, monkeypatch,
                                                            caplog) -> None:
    """Plumbing (the cache, not the numbers of a model: golden parity is above), so the tiny
    configuration: its two conversions cost a fraction of a ViT-S one. Neither forks a
    process to send OpenVINO's usage reports (backends/telemetry.py)."""
    ov = pytest.importorskip("openvino")
    import multiprocessing

    from depthcli.models import create_model

    forks: list[object] = []
    monkeypatch.setattr(multiprocessing.Process, "start", lambda self: forks.append(self))
    model = create_model("da2-tiny-test", weights=tiny_ckpt)
    cache_dir = tmp_path / "cache"
    create_runtime_backend("openvino", model, model.spec, precision="fp32", cache_dir=cache_dir)
    conversions = {"n": 0}
    real_convert = ov.convert_model

    def counting(*a, **kw):  # type: ignore[no-untyped-def]
        conversions["n"] += 1
        return real_convert(*a, **kw)

    monkeypatch.setattr(ov, "convert_model", counting)
    b = create_runtime_backend("openvino", model, model.spec, precision="fp32", cache_dir=cache_dir)
    assert b.built is False and conversions["n"] == 0
    # Mixed sizes and batch sizes in one run: no re-conversion, torch numbers on each.
    for shape in ((1, 3, 42, 56), (2, 3, 70, 42), (1, 3, 28, 140)):
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        assert rel_err(b.run(torch.from_numpy(x)), ref) < 1e-4
    assert conversions["n"] == 0
    # Corrupt the entry: a warning, one rebuild, the same numbers.
    entry = _only_entry(b.cache.root / "openvino", "da2-tiny-test")
    (entry / "model.bin").write_bytes(b"\0" * 100)
    with caplog.at_level(logging.WARNING):
        b2 = create_runtime_backend("openvino", model, model.spec, precision="fp32",
                                    cache_dir=cache_dir)
    assert b2.built is True and conversions["n"] == 1 and "unusable" in caplog.text
    telemetry = pytest.importorskip("openvino_telemetry.backend.backend_ga4")
    telemetry.GA4Backend(None, "depthcli-test", "0").send({"a": 1})  # what any report does
    assert forks == []
    x = np.random.default_rng(2).standard_normal((1, 3, 42, 56)).astype(np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    assert rel_err(b2.run(x), ref) < 1e-4


def _only_entry(folder, model_name):  # type: ignore[no-untyped-def]
    (entry,) = [p for p in folder.iterdir() if p.name.startswith(model_name + "-")]
    return entry


def test_openvino_precision_errors_are_clear(models, cache_dir, monkeypatch) -> None:
    pytest.importorskip("openvino")
    import depthcli.backends.openvino as bov

    monkeypatch.setattr(bov, "cpu_supports", lambda p: p == "fp32")
    with pytest.raises(BackendError, match="no native bf16"):
        create_runtime_backend("openvino", models["da2-small"], precision="bf16",
                               cache_dir=cache_dir)


# --------------------------------------------------------------- ONNX Runtime


@pytest.mark.parametrize("tag", [
    "da2-small",
    pytest.param("da1-small", marks=pytest.mark.slow),
    pytest.param("da2-metric-indoor-small", marks=pytest.mark.slow),
])
def test_onnxruntime_parity_with_official(tag, models, cache_dir, golden_dir) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = models[tag]
    b = create_runtime_backend("onnxruntime", model, model.spec, precision="fp32",
                               cache_dir=cache_dir)
    assert (b.name, b.device, b.precision) == ("onnxruntime", "cpu", "fp32")
    x, gold = golden_case(golden_dir, tag, CASES[tag], model.spec)
    assert rel_err(to_original(b.run(x), gold, model.spec), gold) < 1e-4
    again = create_runtime_backend("onnxruntime", model, model.spec, precision="fp32",
                                   cache_dir=cache_dir)
    assert again.built is False


def test_onnxruntime_rejects_half_precision(models, cache_dir) -> None:
    pytest.importorskip("onnxruntime")
    with pytest.raises(BackendError, match="fp32 only"):
        create_runtime_backend("onnxruntime", models["da2-small"], precision="bf16",
                               cache_dir=cache_dir)


def test_unknown_runtime_backend(models) -> None:
    with pytest.raises(BackendError, match="not a runtime backend"):
        create_runtime_backend("torch", models["da2-small"], precision="fp32")
