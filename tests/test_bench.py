"""The benchmark command runs and reports every figure it promises (no timing assertions)."""

from __future__ import annotations

import json

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
