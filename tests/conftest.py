"""Shared fixtures: recipe checkpoints built on the fly, sample paths, small generated images."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

# Under pytest-xdist (pyproject's addopts: one worker per core) each worker runs torch on one
# thread: two workers with a thread per core each would oversubscribe the cores. Set before torch
# is imported, so that subprocesses inherit it too.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# OpenCV's Intel IPP picks its code by CPU, and its AVX-512 uint8 INTER_CUBIC resize rounds some
# exact .5 ties the other way: on an AVX-512 EPYC 14 of the golden inputs' subpixels came out
# 1 apart from an AVX2 CPU's, which moved da3-small at 504 by 1.2-1.9e-4 of the range, the
# official code's output as much as ours (ours vs official there: <= 7e-6). The golden files
# were made with IPP's AVX2 code, so the tests use it everywhere (before cv2 is imported; the
# subprocesses inherit it). depthcli itself uses what the machine's OpenCV picks, as the
# official code does.
os.environ.setdefault("OPENCV_IPP", "avx2")

import cv2
import numpy as np
import pytest
import torch

from recipe import recipe_state_dict

ROOT = Path(__file__).resolve().parent.parent

# Command-line tests run the torch backend unless they name one: the default (`auto`) converts
# each checkpoint to OpenVINO once, which tests/test_backends.py covers on its own.
os.environ.setdefault("DEPTHCLI_BACKEND", "torch")
# the tests write EXR inputs with cv2 themselves (depthcli enables the codec for its own calls)
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
SHARED = ROOT.parent / "shared"


# Tests that share expensive process-wide state run in one xdist worker: the ONNX export memo
# (tests/runtime_helpers.py: each golden graph is exported once), the OpenVINO conversions of the
# golden models (one cache folder), the Depth Anything 3 module's memoised models, the one
# OpenVINO conversion of the golden video model, the offline hub-cache commands (one process
# for all of test_weights.py), the one int8 quantisation of test_int8.py, the one conversion
# of test_warm.py, and the Ray
# scenarios, which must not start two Ray instances at once (they share /tmp/ray). The rest
# is spread test by test. Done by a
# scheduler of our own (xdist's hook) rather than `--dist loadgroup`: pytest 9.2 ignores the
# node-id suffix by which xdist 3.8 marks a group, so its groups are silently split.
_XDIST_GROUPS = {"test_backends.py": "onnx", "test_export.py": "onnx", "test_ray.py": "ray",
                 "test_da3.py": "da3", "test_vda_runtime.py": "vda-runtime",
                 "test_weights.py": "weights", "test_int8.py": "int8", "test_warm.py": "warm"}
# The golden tests that share network forwards (tests/forward_memo.py): the API and CLI parity
# of da2-small; the relative and metric Video Depth Anything.
_NAME_GROUPS = {("test_model.py", "test_golden_parity"): "golden",
                ("test_vda.py", "test_golden_parity"): "vda-golden"}


def xdist_group(nodeid: str) -> str | None:
    """The worker group of a test node id (None: any worker)."""
    path, _, name = nodeid.partition("::")
    for (file, prefix), named in _NAME_GROUPS.items():
        if Path(path).name == file and name.startswith(prefix):
            return named
    group = _XDIST_GROUPS.get(Path(path).name)
    if group == "onnx" and "openvino" in name:
        return "openvino"
    return group


# The order work is handed out in: longest first, so that the last minutes do not leave a core
# idle behind one long test (the groups, then the single tests that take longest: 10-40 s each
# on the 2-core machine, then the rest in collection order). The Ray scenarios go first: they
# are the longest unit (~2 min) and use about 1.4 cores; beside a worker that keeps the other
# core busy they took 129 s vs 118 s alone (2-core EPYC, `python -c "while True: pass"` beside
# them), whereas run last they left a core idle for ~1.5 min. (Before Ray's workers ran at
# nice 0, RAY_worker_niceness in tests/test_ray.py, they starved beside the other worker.)
_GROUP_ORDER = ("ray", "onnx", "openvino", "golden", "vda-golden", "vda-runtime", "da3",
                "weights", "int8", "warm")
_SLOW_FIRST = (
    "tests/test_predict.py::test_sigkill_then_skip_existing_completes",
    "tests/test_robust.py::test_fuzz_small_corpus",
    "tests/test_bench.py::test_startup_steps",
    "tests/test_predict.py::test_messy_folder_subprocess_exit_code",
    "tests/test_robust.py::test_two_processes_same_output",
    "tests/test_predict.py::test_ctrl_c_stops_cleanly",
    "tests/test_autoplan.py::test_first_run_torch_then_cache",
    "tests/test_bench.py::test_bench_backends_side_by_side",
    "tests/test_model.py::test_matches_transformers_at_518",
)


def _rank(nodeid: str) -> tuple[int, int]:
    """(place, tie-break): test_export.py's part of the "onnx" group goes before
    test_backends.py's, so that test_backends.py's two groups stay side by side (its
    module-scoped fixtures are set up once where one worker runs both)."""
    group = xdist_group(nodeid)
    if group is not None:
        return _GROUP_ORDER.index(group), int("test_export.py" not in nodeid)
    for i, prefix in enumerate(_SLOW_FIRST):
        if nodeid.startswith(prefix):
            return len(_GROUP_ORDER) + i, 0
    return len(_GROUP_ORDER) + len(_SLOW_FIRST), 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest work first (see `_rank`); stable otherwise. xdist hands out scopes in collection
    order (loadscopereorder is off, below); every worker sorts alike."""
    items.sort(key=lambda it: _rank(it.nodeid))


@pytest.hookimpl(optionalhook=True)  # no unknown-hook error where xdist is absent (-p no:xdist)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's scope scheduling with our groups as scopes, single tests else, in `_rank` order."""
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # keep the collection order set above

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid) or nodeid

    return GroupScheduling(config, log)


# Anything that listens (Ray, a test stream server) runs in a private network namespace whose
# only interface is loopback (root): nothing there can reach, or be reached from, another machine.
def ctrl_c_able(argv: list[str]) -> list[str]:
    """`argv` (a Python command) started with SIGINT at its default, whatever the test runner's.

    A process started in the background by a non-interactive shell (`cmd &`, as a CI harness
    may) has SIGINT ignored, every child inherits that, and Python then leaves Ctrl-C ignored
    (rightly: depthcli keeps it so). The tests that press Ctrl-C start their child like a
    terminal would: a one-line interpreter restores the default and execs the command.
    """
    assert argv[0] == sys.executable, argv
    reset = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
             "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
    return [sys.executable, "-c", reset, *argv[1:]]


def in_own_process(func: Callable[..., None], *args: str, timeout: float = 120) -> None:
    """Run `func(*args)` (a module-level function of a test file) in a new interpreter.

    For tests that signal their own process: in an xdist worker a signal the test meant to
    catch twice ended the worker instead (CI runs of 2026-12-01/02), and with it the whole
    run (--max-worker-restart=0). A fresh process has Python's own handlers and no threads of
    earlier tests; the test's assertions fail the child, and the child's output fails the test.
    """
    code = ("import sys\n"
            f"sys.path[:0] = [{str(ROOT / 'tests')!r}, {str(ROOT)!r}]\n"
            f"from {func.__module__} import {func.__name__} as f\n"
            "f(*sys.argv[1:])\nprint('in_own_process: ok')\n")
    r = subprocess.run(ctrl_c_able([sys.executable, "-c", code, *args]), capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("in_own_process: ok"), \
        f"{func.__name__} failed in its own process (exit {r.returncode}):\n{r.stdout}\n{r.stderr}"


NETNS = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']


@functools.cache
def _netns_ok() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    try:
        r = subprocess.run([*NETNS, "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


needs_netns = pytest.mark.skipif(not _netns_ok(),
                                 reason="no loopback-only network namespace (unshare -n)")


def official_keys(model_name: str) -> list[tuple[str, list[int]]]:
    """The official checkpoint's (key, shape) list for a registry model (depthcli.checkpoints.layouts)."""
    from depthcli.checkpoints.layouts import official_keys as keys_of
    from depthcli.models import DepthAnything, get_spec
    from depthcli.models.video_depth_anything import VideoDepthAnything

    spec = get_spec(model_name)
    with torch.device("meta"):  # names and shapes only: no storage, no random init
        return keys_of(VideoDepthAnything(spec) if spec.temporal else DepthAnything(spec))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    d = shared_dir / "golden"
    if not (d / "keys.json").is_file():
        pytest.skip("../shared/golden is absent")
    return d


@pytest.fixture(scope="session")
def samples_dir(shared_dir: Path) -> Path:
    d = shared_dir / "samples"
    if not d.is_dir():
        pytest.skip("../shared/samples is absent")
    return d


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ckpt")


def make_checkpoint(path: Path, model_name: str = "da2-small", salt: str = "t") -> Path:
    """Write recipe weights (salted: other random weights) as an official-layout .pth."""
    torch.save(recipe_state_dict(official_keys(model_name), salt), path)
    return path


@pytest.fixture(scope="session")
def small_ckpt(ckpt_dir: Path) -> Path:
    """ViT-S official-layout checkpoint with random recipe weights (da2-small / da1-small / metric)."""
    return make_checkpoint(ckpt_dir / "vits.pth")


@pytest.fixture(scope="session")
def tiny_ckpt(ckpt_dir: Path) -> Path:
    """`da2-tiny-test` (4-block ViT, narrow head) official-layout checkpoint: for tests of
    plumbing (files, names, exit codes, engines), where ViT-S would only cost time."""
    return make_checkpoint(ckpt_dir / "vitt.pth", "da2-tiny-test")


@pytest.fixture(scope="session")
def tiny_vda_ckpt(ckpt_dir: Path) -> Path:
    """`vda-tiny-test`: Video Depth Anything's code path (temporal modules) at toy cost."""
    return make_checkpoint(ckpt_dir / "vitt_vda.pth", "vda-tiny-test")


@pytest.fixture(scope="session")
def golden_keys(golden_dir: Path) -> dict:
    return json.loads((golden_dir / "keys.json").read_text())


def write_image(path: Path, h: int, w: int, seed: int = 0, channels: int = 3,
                dtype: type = np.uint8) -> Path:
    """A smooth, non-constant test image (random noise would make depth degenerate)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / (7 + c) + yy / (11 + 3 * c) + rng.uniform(0, 3))
                     for c in range(channels)], axis=-1)
    top = 65535 if dtype == np.uint16 else 255
    img = ((base * 0.5 + 0.5) * top).astype(dtype)
    if channels == 1:
        img = img[:, :, 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path
