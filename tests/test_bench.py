"""The benchmark command runs and reports every figure it promises (no timing assertions)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import write_image
from depthcli.cli import main


def test_bench_smoke(tmp_path) -> None:
    for i in range(2):
        write_image(tmp_path / "imgs" / f"p{i}.jpg", 60, 90, seed=i)
    r = CliRunner().invoke(main, ["bench", "--no-peer", "--runs", "1", "--warmup", "0",
                                  "--input-size", "42", "--inputs", str(tmp_path / "imgs"),
                                  "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output + r.stderr
    res = json.loads(r.stdout)
    assert res["inputs"]["images"] == 2
    assert set(res["stages_ms"]) == {"decode", "preprocess", "model", "postprocess", "write"}
    assert res["end_to_end"]["images_per_s"] > 0
    assert res["compute"]["gflop_per_image"] > 0 and res["compute"]["matmul_peak_gflop_s"] > 0
    paired = res["compute"]["pct_of_same_run_peak_runs"]
    assert len(paired) == 1 and res["compute"]["pct_of_same_run_peak"] == paired[0] > 0
    assert res["memory"]["end_to_end"]["host_mb"] > 0


def test_bench_backends_side_by_side(tmp_path, tiny_ckpt, monkeypatch) -> None:
    pytest.importorskip("openvino")
    """Several backends in one run: each one's stages, end to end, compute and deviation from
    torch fp32; the headline figures are the first backend's."""
    monkeypatch.setenv("DEPTHCLI_CACHE", str(tmp_path / "cache"))
    for i in range(2):
        write_image(tmp_path / "imgs" / f"p{i}.jpg", 60, 90, seed=i)
    r = CliRunner().invoke(main, ["bench", "--model", "da2-tiny-test", "--weights", str(tiny_ckpt),
                                  "--backend", "torch,openvino,auto",
                                  "--no-peer", "--runs", "1", "--warmup", "0", "--input-size",
                                  "56", "--inputs", str(tmp_path / "imgs"), "--device", "cpu",
                                  "--json"])
    assert r.exit_code == 0, r.output + r.stderr
    res = json.loads(r.stdout)
    assert res["backends"] == ["torch", "openvino"]  # each once (auto is openvino here), in order
    per = res["by_backend"]
    assert list(per) == res["backends"]
    assert res["stages_ms"] == per["torch"]["stages_ms"]  # headline = the first one named
    for name, fig in per.items():
        assert set(fig["stages_ms"]) == {"decode", "preprocess", "model", "postprocess", "write"}
        assert fig["end_to_end"]["images_per_s"] > 0 and fig["compute"]["model_gflop_s"] > 0
        assert fig["compute"]["pct_of_same_run_peak"] > 0
        if name == "torch":
            assert "deviation_vs_torch_fp32" not in fig
        else:
            dev = fig["deviation_vs_torch_fp32"]
            assert 0 <= dev["mean_of_range"] <= dev["max_of_range"] < 1e-4
    bad = CliRunner().invoke(main, ["bench", "--backend", "torch,tensorrt", "--no-peer"])
    assert bad.exit_code == 2 and "tensorrt" in bad.output


def test_startup_steps(tmp_path, tiny_ckpt) -> None:
    """`bench --startup`: fresh processes, each step of the fixed cost, the total per run."""
    write_image(tmp_path / "imgs" / "p0.jpg", 60, 90)
    r = CliRunner().invoke(main, ["bench", "--startup", "--model", "da2-tiny-test", "--weights",
                                  str(tiny_ckpt), "--backend", "torch", "--runs", "1",
                                  "--warmup", "0", "--input-size", "56", "--inputs", str(tmp_path / "imgs"),
                                  "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["startup"]["torch"]
    s = got["seconds"]
    assert got["runs"] == 1 and len(got["total_runs"]) == 1
    assert s["imports"] > 0 and s["checkpoint_read"] > 0 and s["first_image"] > 0
    assert s["convert"] == s["cache_load"] == s["compile"] == 0  # torch: nothing to convert
    parts = sum(v for k, v in s.items() if k != "to_first_forward")
    assert parts <= s["to_first_forward"] + 0.01
