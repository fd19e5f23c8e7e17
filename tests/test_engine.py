"""Engine policy: device resolution, NaN fallback to fp32, OOM batch halving, bucketing flow."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from depthcli.engine.core import DepthEngine
from depthcli.engine.device import resolve_device, resolve_precision


@pytest.fixture(scope="module")
def est(tiny_ckpt) -> DepthEngine:
    return DepthEngine.from_name("da2-tiny-test", weights=tiny_ckpt, device="cpu", input_size=42)


def test_resolve_device_and_precision() -> None:
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16


def test_non_finite_half_batch_is_redone_in_fp32(tiny_ckpt, caplog) -> None:
    e = DepthEngine.from_name("da2-tiny-test", weights=tiny_ckpt, device="cpu",
                                 precision="bf16", input_size=42)
    x = np.random.default_rng(0).standard_normal((2, 3, 42, 56)).astype(np.float32)
    ref = DepthEngine(e.model, device="cpu", precision="fp32", input_size=42).forward_batch(x)
    real = e.backend._forward
    e.backend._forward = lambda t: real(t) * float("nan")  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING):
        out = e.forward_batch(x)
    assert "redoing the batch in fp32" in caplog.text
    assert torch.isfinite(out).all() and torch.allclose(out, ref, atol=1e-5)  # ref is LayerScale-folded


def test_cuda_oom_halves_the_batch(est, monkeypatch, caplog) -> None:
    calls: list[int] = []
    real = est.backend.run

    def fake(x):
        calls.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(x)

    monkeypatch.setattr(est.backend, "run", fake)
    x = np.random.default_rng(1).standard_normal((5, 3, 42, 42)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        out = est.forward_batch(x)
    assert out.shape == (5, 42, 42)
    assert calls == [5, 2, 3, 1, 2]  # 5 fails -> 2 + 3; 3 fails -> 1 + 2
    assert "retrying" in caplog.text
    monkeypatch.undo()
    assert torch.allclose(out, est.forward_batch(x), atol=1e-5)


def test_run_streams_and_reports_failures(est) -> None:
    rng = np.random.default_rng(2)
    shapes = [(30, 40), (40, 30), (30, 40), (30, 40), (40, 30)]
    imgs = {i: rng.integers(0, 255, (*s, 3), dtype=np.uint8) for i, s in enumerate(shapes)}

    def loader(i: int):
        def load() -> np.ndarray:
            if i == 3:
                raise ValueError("broken input")
            return imgs[i]
        return load

    results = list(est.run(((i, loader(i)) for i in imgs), batch_size=2, workers=2))
    assert sorted(r.key for r in results) == list(range(5))
    bad = [r for r in results if r.error]
    assert [r.key for r in bad] == [3] and bad[0].error == "broken input"
    for r in results:
        if r.key != 3:
            assert r.depth.shape == shapes[r.key] and r.depth.dtype == np.float32
            assert np.allclose(r.depth, est.infer(imgs[r.key]), atol=1e-5)


def test_run_memory_is_bounded(est) -> None:
    """No more than a few batches are decoded ahead, whatever the number of jobs."""
    loaded = 0
    yielded = 0
    ahead = []

    def jobs():
        nonlocal loaded
        for i in range(40):
            def load(i=i):
                nonlocal loaded
                loaded += 1
                return np.full((20, 20 + (i % 3) * 14, 3), 100, np.uint8)
            yield i, load

    for _ in est.run(jobs(), batch_size=2, workers=2):
        yielded += 1
        ahead.append(loaded - yielded)
    assert yielded == 40 and max(ahead) <= 12


def test_shape_batches_rule() -> None:
    """Full buckets go at once, a None shape passes alone, the cap flushes the fullest."""
    from depthcli.engine.batching import shape_batches

    items = ["a1", "b1", "a2", "x", "b2", "a3", "b3", "c1"]
    got = list(shape_batches(items, lambda s: None if s == "x" else s[0], 2))
    assert got == [["a1", "a2"], ["x"], ["b1", "b2"], ["a3"], ["b3"], ["c1"]]
    capped = list(shape_batches(["a", "b", "c", "a"], lambda s: s, 8, max_buffered=3))
    assert capped == [["a"], ["b"], ["c"], ["a"]]


def test_run_ordered_frames_network_and_stages(est) -> None:
    """A video's frames: job order, depth-only, the network-size depth beside the full one;
    `workers=0` loads in the caller's thread and `stages` sees every step."""
    from collections import Counter
    from contextlib import contextmanager

    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (30, 40, 3), dtype=np.uint8) for _ in range(7)]
    jobs = [(i, (lambda f=f: f)) for i, f in enumerate(frames)]
    res = list(est.run(jobs, batch_size=3, workers=2, ordered=True, extras=False, network=True))
    assert [r.key for r in res] == list(range(7))
    for r, f in zip(res, frames, strict=True):
        assert r.network.shape == est.preprocess(f).shape[1:] and r.network.dtype == np.float32
        assert np.array_equal(r.depth, est.postprocess(r.network, (30, 40)))
        assert np.allclose(r.depth, est.infer_frame(f, (30, 40)), atol=1e-5)  # batch 1 vs 3
    seen: Counter[str] = Counter()

    @contextmanager
    def stage(name: str):
        seen[name] += 1
        yield

    serial = list(est.run(jobs, batch_size=3, workers=0, stages=stage))
    assert [r.key for r in serial] == list(range(7))
    assert seen == {"decode": 7, "preprocess": 7, "model": 3, "postprocess": 7}
    assert all(np.array_equal(a.depth, b.depth) for a, b in zip(res, serial, strict=True))


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_spec_preprocessing_is_the_engines(tiny_ckpt, precision: str) -> None:
    """What the Ray read tasks prepare without a model (`EngineSpec.preprocess`) is what the
    engine the spec builds uses: one rule (`engine_preprocess`), on every precision."""
    from depthcli.engine.spec import EngineSpec
    from depthcli.engine.transforms import engine_preprocess
    from depthcli.models.registry import get_spec

    spec = EngineSpec("da2-tiny-test", str(tiny_ckpt), device="cpu", precision=precision,
                      input_size=42)
    built = spec.build().preprocess
    assert spec.preprocess() == built
    assert built.exact is (precision != "bf16")  # half precision: the float32 resize
    model = get_spec("da2-tiny-test")
    assert not engine_preprocess(model, 42, "auto", "cuda").exact  # auto on a GPU is half
    assert engine_preprocess(model, 42, "int8", "cpu").exact  # int8 keeps fp32 inputs
