"""`predict --engine ray`: same outputs as the local engine, clusters, lost actors, resume.

Ray binds every network interface it finds, so each scenario runs in a private network
namespace whose only interface is loopback (`unshare -n`, root): nothing here can reach, or
be reached from, another machine. Skipped where Ray is not installed or namespaces are not
permitted. The scenarios themselves live in tests/ray_scenarios.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import NETNS, ROOT, needs_netns, write_image

pytest.importorskip("ray.data", reason="Ray is not installed (pip install 'depthcli[ray]')")



def scenario(name: str, work: Path, ckpt: Path, timeout: int = 540) -> str:
    """Run one scenario of ray_scenarios.py inside a loopback-only namespace.

    Generous limits (the scenario dumps its threads and fails after 420 s): a hang fails, a
    machine loaded by other work (two CI runs at once, xdist workers) does not."""
    # RAY_worker_niceness=0: Ray runs its workers at nice 15 (it assumes a machine of its own);
    # beside the other xdist worker at nice 0 they would get a few percent of a core.
    # RAY_USAGE_STATS_ENABLED=0: no usage-collection actor per job (CPU, and nowhere to send).
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_worker_niceness": "0",
           "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                          os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([*NETNS, sys.executable, str(ROOT / "tests" / "ray_scenarios.py"), name,
                        str(work), str(ckpt)], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=timeout)
    assert r.returncode == 0, f"{name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r.stdout


@needs_netns
def test_local_vs_ray_identical(tmp_path, tiny_ckpt) -> None:
    """Sizes, subfolders, a bad file, a video: same files, lines, summary and exit code."""
    assert "parity: ok" in scenario("parity", tmp_path, tiny_ckpt)


@needs_netns
def test_two_node_cluster_finishes_a_local_run_with_killed_actors(tmp_path, tiny_ckpt) -> None:
    """Two `ray start` nodes through RAY_ADDRESS finish an interrupted local run while the
    model actors are SIGKILLed (the uninterrupted run's files, lines, exit code); then the
    local engine finishes a ray run."""
    out = scenario("cluster", tmp_path, tiny_ckpt)
    assert "cluster: ok" in out, out


# --------------------------------------------------------------- no cluster needed below

def test_pool_sizing_leaves_cpus_for_tasks() -> None:
    """2 CPUs: one 1-CPU actor (two would starve the read tasks: measured hang)."""
    from depthcli.runs.ray import EngineSpec, PoolPlan, RayOptions, plan_pool

    cfg = EngineSpec("da2-small", device="auto")
    assert plan_pool(cfg, RayOptions(), [{"CPU": 2.0}]) == PoolPlan(1, 1.0, 0.0, "cpu")
    assert plan_pool(cfg, RayOptions(), [{"CPU": 2.0}, {"CPU": 2.0}]).actors == 2
    assert plan_pool(cfg, RayOptions(), [{"CPU": 1.0}]) == PoolPlan(1, 0.5, 0.0, "cpu")
    assert plan_pool(cfg, RayOptions(), [{"CPU": 16.0}]) == PoolPlan(1, 15.0, 0.0, "cpu")
    gpu = plan_pool(cfg, RayOptions(), [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 8.0, "GPU": 2.0}])
    assert gpu == PoolPlan(4, 1.0, 1.0, "cuda")
    cpu_only = EngineSpec("da2-small", device="cpu")
    assert plan_pool(cpu_only, RayOptions(actors=3, actor_cpus=2), [{"CPU": 8, "GPU": 1}]) == \
        PoolPlan(3, 2, 0.0, "cpu")
    with pytest.raises(ValueError, match="no GPUs"):
        plan_pool(EngineSpec("da2-small", device="cuda"), RayOptions(), [{"CPU": 4.0}])


def test_ray_flags_reach_the_engine(tmp_path, tiny_ckpt, monkeypatch) -> None:
    """--ray-address / --ray-actors / --ray-actor-cpus become the engine's RayOptions (the
    scenarios above reach their clusters through $RAY_ADDRESS and a started instance)."""
    from click.testing import CliRunner

    import depthcli.runs.ray as rr
    from depthcli.cli import main
    from depthcli.runs.summary import Summary

    seen = {}

    def fake(opts, cfg, ropts, **kw):  # type: ignore[no-untyped-def]
        seen.update(ropts=ropts, model=cfg.model, weights=cfg.weights)
        return Summary()

    monkeypatch.setattr(rr, "run_predict_ray", fake)
    img = write_image(tmp_path / "a.png", 20, 20)
    r = CliRunner().invoke(main, ["predict", str(img), "-o", str(tmp_path / "o"), "--model",
                                  "da2-tiny-test", "--weights", str(tiny_ckpt), "--engine", "ray",
                                  "--ray-address", "127.0.0.1:6390", "--ray-actors", "3",
                                  "--ray-actor-cpus", "1.5", "--json"])
    assert r.exit_code == 0, r.output + r.stderr
    assert seen["ropts"] == rr.RayOptions("127.0.0.1:6390", 3, 1.5)
    assert seen["model"] == "da2-tiny-test" and seen["weights"] == str(tiny_ckpt.resolve())
    assert json.loads(r.stdout)["settings"]["ray_address"] == "127.0.0.1:6390"


def test_stages_without_ray(tmp_path, tiny_ckpt) -> None:
    """read -> model -> write as plain functions equal the local engine's outputs."""
    from depthcli.io.images import read_image
    from depthcli.outputs import OutputOptions
    from depthcli.runs.options import PredictOptions
    from depthcli.runs.ray_stages import (
        EngineSpec,
        ModelStage,
        column,
        read_stage,
        write_stage,
    )

    srcs = [write_image(tmp_path / f"i{k}.png", 30 + 9 * k, 44, seed=k) for k in range(3)]
    (tmp_path / "bad.png").write_bytes(b"nope")
    srcs.append(tmp_path / "bad.png")
    cfg = EngineSpec("da2-tiny-test", str(tiny_ckpt), device="cpu", input_size=56)
    opts = PredictOptions(inputs=(), out_dir=tmp_path / "o", output=OutputOptions(("npy",)),
                          batch_size=2)
    paths = [json.dumps({"npy": str(tmp_path / "o" / f"{p.stem}.npy")}) for p in srcs]
    batch = {"idx": np.arange(4), "src": column(map(str, srcs)), "kind": column(["image"] * 4),
             "base": column([""] * 4), "paths": column(paths)}
    prep = cfg.preprocess()
    model = ModelStage(cfg, opts, prep)
    res = write_stage(model(read_stage(batch, prep=prep, max_pixels=10**8, keep_image=False)),
                      output=opts.output)
    assert list(res["status"]) == ["written"] * 3 + ["failed"]
    assert "not a decodable image" in res["error"][3]
    for p in srcs[:3]:
        ref = model.est.infer(read_image(p))
        got = np.load(tmp_path / "o" / f"{p.stem}.npy")
        assert np.abs(ref - got).max() <= 1e-5 * (ref.max() - ref.min())


def test_depth_predictor_callable(tiny_ckpt, tmp_path) -> None:
    """The map_batches class on plain numpy batches: RGB arrays and encoded bytes."""
    import cv2

    from depthcli import RayDepthMapper

    pred = RayDepthMapper("da2-tiny-test", weights=tiny_ckpt, input_size=56, device="cpu")
    bgr = cv2.imread(str(write_image(tmp_path / "a.png", 40, 50)))
    rgb = bgr[..., ::-1]
    out = pred({"image": np.stack([rgb, rgb])})
    assert out["depth"].shape == (2, 40, 50) and out["depth"].dtype == np.float32
    ref = pred.est.infer(bgr)
    assert np.abs(out["depth"][0] - ref).max() <= 1e-5 * (ref.max() - ref.min())
    other = cv2.imencode(".png", cv2.resize(bgr, (30, 20)))[1].tobytes()
    mixed = pred({"bytes": np.array([(tmp_path / "a.png").read_bytes(), other], dtype=object)})
    assert [d.shape for d in mixed["depth"]] == [(40, 50), (20, 30)]
