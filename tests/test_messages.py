"""What a new user meets: help with examples, one-line errors that name the option or file and
what is accepted, the summary's fields, and the Python API's input checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_image
from depthcli.cli import _COMMANDS, main


def run(args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("command", [c for c in _COMMANDS if c != "bench"] + ["bench"])
def test_every_command_has_examples_and_described_options(command: str) -> None:
    r = run([command, "--help"])
    assert r.exit_code == 0, r.output
    assert "Examples:" in r.output
    cmd = main.get_command(None, command)  # type: ignore[arg-type]
    undocumented = [p.opts[0] for p in cmd.params
                    if getattr(p, "help", "x") in (None, "") and p.param_type_name == "option"]
    assert undocumented == []


def test_top_level_help_lists_commands_without_importing_them() -> None:
    r = run(["--help"])
    assert r.exit_code == 0
    for name in _COMMANDS:
        assert name in r.output
    assert "_DEPTHCLI_COMPLETE" in r.output


def test_usage_errors_name_option_and_choices(tmp_path: Path) -> None:
    img = write_image(tmp_path / "a.png", 20, 30)
    r = run(["predict", str(img), "-f", "colour"])
    assert r.exit_code == 2
    assert "--format" in r.stderr and "'colour'" in r.stderr and "color, gray, png16" in r.stderr
    (tmp_path / "afile").write_text("x")
    r = run(["predict", str(img), "-o", str(tmp_path / "afile")])
    assert r.exit_code == 2 and "-o/--output" in r.stderr and "not a folder" in r.stderr
    r = run(["predict", str(img), "--cmap", "nope"])
    assert r.exit_code == 2 and "spectral_r" in r.stderr and "turbo" in r.stderr
    r = run(["predict", str(img), "--range", "p5"])
    assert r.exit_code == 2 and "--range" in r.stderr and "p2,98" in r.stderr
    r = run(["predict", str(img), "-m", "da2-smal"])
    assert r.exit_code == 2 and "did you mean da2-small" in r.stderr


def test_weights_that_are_not_a_checkpoint(tmp_path: Path) -> None:
    img = write_image(tmp_path / "a.png", 20, 30)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    r = run(["predict", str(img), "-o", str(tmp_path / "o"), "--weights", str(text)])
    assert r.exit_code == 2  # a usage error, found before any model loads (issue 21)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1] == (f"Error: Invalid value for --weights: {text}: not a checkpoint (neither "
                         "a PyTorch nor a safetensors file); --weights takes an official "
                         ".pth/.bin (PyTorch state_dict) or a transformers .safetensors file")


def test_models_json_and_table() -> None:
    r = run(["models", "--json"])
    rows = json.loads(r.output)
    assert all(isinstance(row["cached"], bool) for row in rows)
    assert {row["kind"] for row in rows} == {"image", "video"}
    r = run(["models"])
    assert "unclear (hub says apache-2.0)" in r.output  # licences are not cut


def test_summary_fields_and_settings(tmp_path: Path, small_ckpt: Path) -> None:
    img = write_image(tmp_path / "in" / "a.png", 30, 40)
    (tmp_path / "in" / "notes.txt").write_text("x")
    r = run(["predict", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--weights",
             str(small_ckpt), "--input-size", "28", "-f", "npy", "--json", "--list-outputs"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    for key in ("written", "skipped", "failed", "not_images", "frames", "seconds", "load_seconds",
                "img_per_s", "frames_per_s", "models", "failures", "settings", "outputs"):
        assert key in s, key
    assert s["written"] == 1 and s["not_images"] == 1 and s["models"] == {"images": "da2-small"}
    assert s["seconds"] >= s["load_seconds"] > 0
    used = s["settings"]["models"]["images"]
    assert used["model"] == "da2-small" and used["precision"] == "fp32" and used["input_size"] == 28
    assert used["backend"] and used["device"] == "cpu"
    assert s["settings"]["workers"] == 2 and s["settings"]["threads"] >= 1
    assert s["outputs"] == [str(tmp_path / "o" / "a.npy")]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("written 1, skipped 0, failed 0, not images 1;")
    assert "loading the model" in line and "img/s" in line and "da2-small for images" in line
    assert img.is_file()


def test_python_api_input_errors(small_ckpt: Path) -> None:
    from depthcli import DepthEngine

    est = DepthEngine.from_name("da2-small", weights=small_ckpt, device="cpu", input_size=28)
    with pytest.raises(TypeError, match="cv2.imread returns None"):
        est.infer(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="numpy array"):
        est.infer([[1, 2], [3, 4]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        est.infer(np.zeros((0, 5, 3), np.uint8))
    assert est.infer(np.zeros((20, 30, 3), np.uint8)).shape == (20, 30)
