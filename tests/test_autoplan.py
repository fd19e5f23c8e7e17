"""`--backend auto` on a checkpoint not yet converted: the decision rule, and a first run that
takes torch (converting for the next run) followed by a run from the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

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
    # a 3:2 photo at 518 (518x770) is 1.5 square forwards: converting pays from fewer photos
    wide = breakeven(518, aspect=1.5)
    assert need / 1.5 - 1 <= wide <= need / 1.5 + 1
    assert plan("openvino", "da2-small", cached=False, inputs=wide, input_size=518,
                can_background=True, aspect=1.5).backend == "openvino"
    assert plan("openvino", "da2-small", cached=False, inputs=wide - 1, input_size=518,
                can_background=True, aspect=1.5).backend == "torch"
    assert plan("openvino", "da2-small", cached=False, inputs=wide, input_size=518,
                can_background=True).backend == "torch"
    # a background conversion of the checkpoint waits for its run: no second one
    queued = plan("openvino", "da2-small", cached=False, inputs=3, input_size=518,
                  can_background=True, pending=True)
    assert queued.backend == "torch" and not queued.background
    assert queued.line is not None and "another process is converting it" in queued.line


def test_job_size_counts_and_aspect(tmp_path) -> None:
    """The job's inputs and their median long/short ratio from the image headers."""
    from depthcli.cli.predict import _image_job_size
    from depthcli.io.images import header_size

    for i in range(3):
        write_image(tmp_path / "in" / f"w{i}.jpg", 40, 60, seed=i)  # 3:2 landscape
    write_image(tmp_path / "in" / "portrait.png", 90, 45, seed=9)  # 1:2, PNG header
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a jpeg")  # counted, no header
    assert header_size(tmp_path / "in" / "w0.jpg") == (60, 40)
    assert header_size(tmp_path / "in" / "portrait.png") == (45, 90)
    assert header_size(tmp_path / "in" / "broken.jpg") is None

    class Opts:
        inputs = (str(tmp_path / "in"),)
        out_dir = tmp_path / "out"
        sequence = None

    assert _image_job_size(Opts()) == (5, 1.5)


def test_pending_states_follow_the_lock(tmp_path, monkeypatch) -> None:
    """`pending` reads what the holder of the checkpoint's lock marked; nothing once it is
    released (flock: a second open description conflicts, as another process's would)."""
    from depthcli.backends import locks

    monkeypatch.setenv("DEPTHCLI_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"x")
    lock = autoplan.pending_lock("openvino", "da2-small", ckpt)
    assert autoplan.pending("openvino", "da2-small", ckpt) is None
    with locks.exclusive(lock) as held:
        assert held
        autoplan.mark_pending(lock, "queued")
        assert autoplan.pending("openvino", "da2-small", ckpt) == "queued"
        autoplan.mark_pending(lock, "converting")
        assert autoplan.pending("openvino", "da2-small", ckpt) == "converting"
        assert not autoplan.wait_pending("openvino", "da2-small", ckpt, limit=0.3)
        with locks.exclusive(lock, wait=False) as second:
            assert not second
    assert autoplan.pending("openvino", "da2-small", ckpt) is None
    assert autoplan.wait_pending("openvino", "da2-small", ckpt, limit=0.3)
    ckpt.write_bytes(b"xy")  # another file version: another lock
    assert autoplan.pending_lock("openvino", "da2-small", ckpt) != lock


def test_a_run_waits_for_a_conversion_under_way(monkeypatch, caplog, tiny_ckpt) -> None:
    """Converting: wait, then run from the cache; queued: torch, and no second conversion."""
    import logging

    import depthcli.backends as backends
    import depthcli.backends.openvino as bov
    from depthcli.models import create_model

    model = create_model("da2-tiny-test", weights=tiny_ckpt)
    waited: list[str] = []
    state = {"cached": False}

    def wait(runtime, name, weights, limit=0):  # type: ignore[no-untyped-def]
        waited.append(name)
        state["cached"] = True  # the other process published its entry
        return True

    monkeypatch.setattr(bov, "is_cached", lambda m: state["cached"])
    monkeypatch.setattr(autoplan, "wait_pending", wait)
    monkeypatch.setattr(autoplan, "pending", lambda *a: "converting")
    monkeypatch.setattr(autoplan, "convert_in_background", lambda *a: waited.append("bg"))
    job = backends.Job(3, 518, tiny_ckpt)
    with caplog.at_level(logging.WARNING):
        assert backends._auto_first_run(model, job) == "openvino"
    assert waited == ["da2-tiny-test"]
    assert "waiting for it" in caplog.text
    state["cached"] = False
    monkeypatch.setattr(autoplan, "pending", lambda *a: "queued")
    assert backends._auto_first_run(model, job) == "torch"
    assert waited == ["da2-tiny-test"]  # neither waited nor started another


def test_background_conversion_starts_after_its_run_exits(tmp_path, tiny_ckpt,
                                                           monkeypatch) -> None:
    """The real detached process: queued while the run that started it lives, nothing built
    meanwhile; converts (and records the warm start) once that run has exited."""
    pytest.importorskip("openvino")
    cache = tmp_path / "cache"
    run = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from depthcli.backends import autoplan
        ckpt = {str(tiny_ckpt)!r}
        autoplan.convert_in_background("openvino", "da2-tiny-test", ckpt)
        end = time.monotonic() + 120
        while autoplan.pending("openvino", "da2-tiny-test", ckpt) != "queued":
            assert time.monotonic() < end, "the background conversion did not start"
            time.sleep(0.1)
        time.sleep(1.5)
        assert autoplan.pending("openvino", "da2-tiny-test", ckpt) == "queued"
        built = Path({str(cache)!r}) / "runtimes" / "openvino"
        assert not built.exists() or not list(built.iterdir()), list(built.iterdir())
        print("queued, nothing built")
    """)
    env = {**os.environ, "DEPTHCLI_CACHE": str(cache)}
    r = subprocess.run([sys.executable, "-c", run], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "queued, nothing built" in r.stdout, r.stderr
    monkeypatch.setenv("DEPTHCLI_CACHE", str(cache))
    end = time.monotonic() + 240
    while autoplan.pending("openvino", "da2-tiny-test", tiny_ckpt) is not None:
        assert time.monotonic() < end, "the background conversion did not finish"
        time.sleep(0.2)
    entries = [p.name for p in (cache / "runtimes" / "openvino").iterdir()
               if p.name.startswith("da2-tiny-test-fp32-")]
    assert len(entries) == 1, entries


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
