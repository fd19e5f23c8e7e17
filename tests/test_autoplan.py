"""`--backend auto` on a checkpoint not yet converted: the decision rule, and a first run that
takes torch (converting for the next run) followed by a run from the cache."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import depthcli.backends.autoplan as autoplan
from conftest import write_image
from depthcli.backends.autoplan import breakeven, plan
from depthcli.cli import main


def test_rule(monkeypatch) -> None:
    import depthcli.cpu

    monkeypatch.setattr(depthcli.cpu, "has_avx512", lambda: True)
    assert 5 <= breakeven(518) <= 20  # AVX-512: OpenVINO halves the forward, converts in ~5
    monkeypatch.setattr(depthcli.cpu, "has_avx512", lambda: False)
    need = breakeven(518)
    assert 40 <= need <= 100  # AVX2: ~60 photos at the default size
    assert breakeven(266) > 3 * need  # the conversion does not shrink with the input
    cached = plan("openvino", "da2-small", cached=True, inputs=1, input_size=518,
                  can_background=True)
    assert cached == autoplan.AutoPlan("openvino", False, None)
    unknown = plan("openvino", "da2-small", cached=False, inputs=None, input_size=518,
                   can_background=True)
    assert unknown.backend == "openvino" and unknown.line is None
    big = plan("openvino", "da2-small", cached=False, inputs=need, input_size=518,
               can_background=True)
    assert big.backend == "openvino" and not big.background
    assert big.line is not None and "converting da2-small to openvino first" in big.line
    small = plan("openvino", "da2-small", cached=False, inputs=need - 1, input_size=518,
                 can_background=True)
    assert small.backend == "torch" and small.background
    assert small.line is not None and small.line.count("\n") == 0
    assert f"({need - 1} inputs;" in small.line and "background" in small.line
    no_file = plan("openvino", "da2-small", cached=False, inputs=3, input_size=518,
                   can_background=False)
    assert no_file.backend == "torch" and not no_file.background
    assert no_file.line is not None and "--backend openvino once" in no_file.line


def test_first_run_torch_then_cache(tmp_path, tiny_ckpt, monkeypatch) -> None:
    pytest.importorskip("openvino")
    from depthcli.backends import prebuild

    monkeypatch.setenv("DEPTHCLI_CACHE", str(tmp_path / "cache"))
    started: list[tuple[str, ...]] = []

    def background(runtime: str, model: str, weights: object) -> None:  # in-process, at once
        started.append((runtime, model, str(weights)))
        assert prebuild.main([runtime, model, str(weights)]) == 0

    monkeypatch.setattr(autoplan, "convert_in_background", background)
    for i in range(2):
        write_image(tmp_path / "in" / f"p{i}.jpg", 40, 60, seed=i)
    args = ["predict", str(tmp_path / "in"), "--model", "da2-tiny-test", "--weights",
            str(tiny_ckpt), "--input-size", "56", "--format", "npy", "--device", "cpu",
            "--backend", "auto", "--json"]
    first = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "o1")])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["settings"]["models"]["images"]["backend"] == "torch"
    lines = [x for x in first.stderr.splitlines() if "auto:" in x]
    assert len(lines) == 1 and "torch for this job (2 inputs" in lines[0]
    assert started == [("openvino", "da2-tiny-test", str(tiny_ckpt))]
    second = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "o2")])
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["settings"]["models"]["images"]["backend"] == "openvino"
    assert "auto:" not in second.stderr and len(started) == 1
