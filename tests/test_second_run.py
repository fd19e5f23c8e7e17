"""Issue 21: the second run and the real install.

Reruns never take their own outputs as inputs, the per-user weights folder, checks before the
model loads (no torch imported), CPU half precision, bench without transformers, files in -o
that are not ours, a broken torch install, and the summary/logging rules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from conftest import ROOT, write_image
from depthcli.cli import main
from depthcli.io.manifest import MARKER

TINY = ("--model", "da2-tiny-test", "--input-size", "28", "--device", "cpu")


def predict(args: list[str], ckpt: Path, *extra: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["predict", *args, "--weights", str(ckpt), *TINY, *extra])


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def run_py(code: str, *args: str, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter (where torch is not imported yet) running `code`."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "DEPTHCLI_BACKEND": "torch", **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=full, timeout=300)


# Poisons the torch stack: a check that needs no model must not import it.
NO_TORCH = ("import sys\n"
            "for m in ('torch', 'timm', 'torchvision'):\n"
            "    sys.modules[m] = None\n")
CLI = "import runpy; runpy.run_module('depthcli', run_name='__main__')\n"


# ------------------------------------------------------------------------ 1. reruns


def test_reruns_of_dot_and_of_o_equal_input_never_nest_nor_retag(tmp_path, tiny_ckpt,
                                                                  monkeypatch) -> None:
    h = tmp_path / "h"
    write_image(h / "a.jpg", 20, 30, seed=1)
    write_image(h / "sub" / "b.png", 20, 30, seed=2)
    monkeypatch.chdir(h)
    for _ in range(2):  # `predict .`: -o depth_out lies inside the input folder
        r = predict(["."], tiny_ckpt, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["written"] == 2
    assert tree(h) == ["a.jpg", f"depth_out/{MARKER}", "depth_out/a_depth.png",
                       "depth_out/sub/b_depth.png", "sub/b.png"]
    r = predict(["."], tiny_ckpt, "--skip-existing", "--json")
    s = json.loads(r.stdout)
    assert (s["written"], s["skipped"]) == (0, 2)
    for _ in range(2):  # -o equal to the input folder
        r = predict([".", "-o", "."], tiny_ckpt, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["written"] == 2
        assert "WARNING" not in r.stderr  # its own outputs are replaced without a word
    files = tree(h)
    assert [f for f in files if "depth_depth" in f or "depth_out/depth_out" in f] == []
    assert {"a_depth.png", "sub/b_depth.png", MARKER} <= set(files)
    # another run from above sees neither output folder as input
    r = predict([str(tmp_path), "-o", str(tmp_path / "other")], tiny_ckpt, "--json")
    assert json.loads(r.stdout)["written"] == 2
    assert tree(tmp_path / "other") == [MARKER, "h/a_depth.png", "h/sub/b_depth.png"]


# ------------------------------------------------------------------------ 2. weights folder


def test_user_weights_folder_is_independent_of_the_install(tmp_path, monkeypatch) -> None:
    from depthcli.checkpoints import userdirs, weights
    from depthcli.models import get_spec

    monkeypatch.delenv("DEPTHCLI_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert userdirs.user_weights_dir() == tmp_path / "xdg" / "depthcli" / "weights"
    assert weights.weights_dir() == userdirs.user_weights_dir()
    assert userdirs.checkout_weights_dir() == ROOT / "weights"  # a development install
    assert userdirs.weights_dirs() == [userdirs.user_weights_dir(), ROOT / "weights"]
    monkeypatch.setattr(userdirs, "checkout_weights_dir", lambda: None)  # as after pip install
    assert userdirs.weights_dirs() == [userdirs.user_weights_dir()]
    spec = get_spec("da2-small")
    target = userdirs.user_weights_dir() / spec.hub_file
    assert weights.local_candidates(spec)[0] == target
    target.parent.mkdir(parents=True)
    target.write_bytes(b"PK\x03\x04")
    assert weights.cached_path(spec) == target
    r = CliRunner().invoke(main, ["models"])
    assert f"{userdirs.user_weights_dir()} (per user, put files here)" in r.output


def test_offline_first_run_names_the_folder_without_importing_torch(tmp_path) -> None:
    img = write_image(tmp_path / "p.jpg", 20, 30)
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "DEPTHCLI_WEIGHTS_DIR": ""}
    r = run_py(NO_TORCH + CLI, "predict", str(img), "-o", str(tmp_path / "o"), env=env)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not available offline" in lines[0]
    assert str(tmp_path / "xdg" / "depthcli" / "weights") in lines[0]
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------ 3. checks first


def test_usage_errors_come_before_the_model_and_torch(tmp_path, tiny_ckpt) -> None:
    img = write_image(tmp_path / "p.jpg", 20, 30)
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"not checked: only its name counts here")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    cases = {
        "missing": [str(tmp_path / "nosuch.jpg")],
        "weights": [str(img), "--weights", str(tmp_path / "nosuch.pth")],
        "notckpt": [str(img), "--weights", str(text)],
        "video_fmt": [str(clip), "-f", "ply", "-m", "da2-metric-indoor-small"],
        "video_model": [str(img), "-m", "vda-small"],
        "runtime": [str(img), "--backend", "openvino"],
    }
    code = NO_TORCH + (
        "import json, sys\n"
        "import depthcli.backends as b\n"
        "b.available = lambda name: False  # as without OpenVINO\n"
        "from click.testing import CliRunner\n"
        "from depthcli.cli import main\n"
        "out = {}\n"
        "for name, args in json.loads(sys.argv[1]).items():\n"
        "    r = CliRunner().invoke(main, ['predict', *args, '-o', sys.argv[2]])\n"
        "    out[name] = [r.exit_code, r.stderr.strip().splitlines()[-1]]\n"
        "print(json.dumps(out))\n")
    r = run_py(code, json.dumps(cases), str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert {k: v[0] for k, v in res.items()} == {k: 2 for k in cases}, res
    assert "nosuch.jpg: no such file" in res["missing"][1]
    assert "--weights" in res["weights"][1] and "not found" in res["weights"][1]
    assert "not a checkpoint" in res["notckpt"][1]
    assert "none of the formats ply can be written for a video" in res["video_fmt"][1]
    assert "needs a video" in res["video_model"][1]
    assert "OpenVINO is not installed" in res["runtime"][1]
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------ 4. precision


def test_cpu_half_precision_without_a_fast_path_runs_fp32(monkeypatch, caplog) -> None:
    from depthcli.engine import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    precision._warn_once.cache_clear()
    with caplog.at_level("WARNING", logger="depthcli"):
        assert precision.cli_precision("bf16", "cpu") == "fp32"
        assert precision.cli_precision("bf16", "cpu") == "fp32"
    assert len(caplog.records) == 1 and "running fp32" in caplog.records[0].getMessage()
    assert precision.cli_precision("fp16", "cpu") == "fp32"
    assert precision.cli_precision("auto", "cpu") == "auto"
    assert precision.cli_precision("bf16", "cuda") == "bf16"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert precision.cli_precision("bf16", "cpu") == "bf16"
    assert precision.cli_precision("fp16", "cpu") == "fp32"
    precision._warn_once.cache_clear()


def test_predict_bf16_and_fp16_on_this_cpu(tmp_path, tiny_ckpt) -> None:
    from depthcli.engine.precision import cpu_fast

    img = write_image(tmp_path / "p.jpg", 20, 30)
    for prec in ("bf16", "fp16"):
        r = predict([str(img), "-o", str(tmp_path / prec)], tiny_ckpt, "--precision", prec,
                    "--json")
        assert r.exit_code == 0, r.output
        used = json.loads(r.stdout)["settings"]["models"]["images"]["precision"]
        warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("WARNING")]
        if prec == "bf16" and cpu_fast("bf16"):
            assert used == "bf16" and warnings == []
        else:
            assert used == "fp32" and len(warnings) == 1 and f"--precision {prec}" in warnings[0]
    assert "fp16 is fast on CUDA and MPS, never on a CPU" in CliRunner().invoke(
        main, ["models"]).output


# ------------------------------------------------------------------------ 5. bench


def test_bench_without_transformers_runs_without_the_peer(tmp_path, monkeypatch) -> None:
    from depthcli.cli import bench

    monkeypatch.setattr(bench, "peer_installed", lambda: False)
    write_image(tmp_path / "imgs" / "p.jpg", 30, 40)
    r = CliRunner().invoke(main, ["bench", "--runs", "1", "--warmup", "0", "--input-size", "28",
                                  "--inputs", str(tmp_path / "imgs"), "--device", "cpu",
                                  "--json"])
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines()[0].startswith("transformers is not installed: benchmarking "
                                               "without the peer")
    assert json.loads(r.stdout)["end_to_end"]["images_per_s"] > 0


# ------------------------------------------------------------------------ 6. files not ours


def test_foreign_files_warned_or_refused_and_names_fixed_per_format(tmp_path,
                                                                   tiny_ckpt) -> None:
    src = tmp_path / "in"
    write_image(src / "x.jpg", 20, 30, seed=1)
    write_image(src / "y.jpg", 20, 30, seed=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.png").write_bytes(b"mine")
    (out / "y.png").write_bytes(b"mine too")
    r = predict([str(src / "y.jpg"), "-o", str(out)], tiny_ckpt, "--no-clobber")
    assert r.exit_code == 1
    assert f"not replacing {out / 'y.png'}" in r.stderr and "--no-clobber" in r.stderr
    assert (out / "y.png").read_bytes() == b"mine too"
    r = predict([str(src / "x.jpg"), "-o", str(out)], tiny_ckpt)
    assert r.exit_code == 0
    assert f"replacing {out / 'x.png'}" in r.stderr and "not a depthcli output" in r.stderr
    assert (out / "x.png").read_bytes() != b"mine"
    r = predict([str(src / "x.jpg"), "-o", str(out)], tiny_ckpt, "--no-clobber")
    assert r.exit_code == 0 and "replacing" not in r.stderr  # ours now: replaced silently
    # adding a format renames nothing: color stays x.png, gray is x_gray.png
    stamp = (out / "x.png").stat().st_mtime_ns
    r = predict([str(src / "x.jpg"), "-o", str(out)], tiny_ckpt, "-f", "color,gray,npy",
                "--skip-existing", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["written"] == 1
    assert (out / "x.png").stat().st_mtime_ns == stamp
    assert (out / "x_gray.png").is_file() and (out / "x.npy").is_file()


# ------------------------------------------------------------------------ 7. broken install


def test_broken_torchvision_is_one_line_with_the_repair(tmp_path, tiny_ckpt) -> None:
    img = write_image(tmp_path / "p.jpg", 20, 30)
    poison = ("import sys\n"
              "class Broken:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name == 'torchvision':\n"
              "            raise RuntimeError('operator torchvision::nms does not exist')\n"
              "sys.meta_path.insert(0, Broken())\n")
    r = run_py(poison + CLI, "predict", str(img), "-o", str(tmp_path / "o"), "--weights",
               str(tiny_ckpt))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "cannot import torchvision" in lines[0] and "torchvision::nms" in lines[0]
    assert "torch and torchvision do not match" in lines[0]
    assert "-m pip install --force-reinstall torch torchvision timm" in lines[0]


# ------------------------------------------------------------------------ 8. summary, logging


def test_summary_and_logging_rules(tmp_path, tiny_ckpt) -> None:
    from test_video import make_video

    (tmp_path / "v").mkdir()
    clip = make_video(tmp_path / "v" / "c.mp4", n=3)
    r = predict([str(clip), "-o", str(tmp_path / "ov"), "-m", "da2-tiny-test"], tiny_ckpt)
    assert r.exit_code == 0, r.output
    line = r.stderr.strip().splitlines()[-1]
    assert "frames/s" in line and "img/s" not in line
    # -v names skipped non-image files; a corrupt file has no traceback below -vv
    d = tmp_path / "d"
    write_image(d / "ok.png", 20, 30)
    (d / "notes.txt").write_text("x")
    (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    r = predict([str(d), "-o", str(tmp_path / "od")], tiny_ckpt, "-v")
    assert r.exit_code == 1
    assert f"{d / 'notes.txt'}: not an image or video file; skipped" in r.stderr
    assert "Traceback" not in r.stderr
    # an empty folder and a glob matching nothing: both one error line and exit 1
    (tmp_path / "empty").mkdir()
    r1 = predict([str(tmp_path / "empty"), "-o", str(tmp_path / "oe")], tiny_ckpt)
    r2 = predict([str(tmp_path / "empty" / "*.jpg"), "-o", str(tmp_path / "oe")], tiny_ckpt)
    assert r1.exit_code == r2.exit_code == 1
    assert "folder holds no image or video files" in r1.stderr
    assert "pattern matched no image or video files" in r2.stderr


def test_progress_total_counts_what_the_run_will_process(tmp_path) -> None:
    from depthcli.cli.predict import _count_inputs
    from depthcli.runs.options import PredictOptions

    root = tmp_path / "in"
    for i in range(3):
        write_image(root / f"i{i}.png", 8, 8, seed=i)
    (root / "depth_out").mkdir()
    write_image(root / "depth_out" / "i0_depth.png", 8, 8)
    opts = PredictOptions(inputs=(str(root),), out_dir=root / "depth_out")
    assert _count_inputs(opts) == 3


def test_tracebacks_only_at_vv(tmp_path, tiny_ckpt) -> None:
    d = tmp_path / "d"
    write_image(d / "ok.png", 20, 30)
    (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    r = predict([str(d), "-o", str(tmp_path / "o")], tiny_ckpt, "-vv")
    assert r.exit_code == 1 and "error:" in r.stderr and "Traceback" in r.stderr
