"""Ray scenarios for tests/test_ray.py, run inside a loopback-only network namespace.

    unshare -n sh -c 'ip link set lo up && python tests/ray_scenarios.py SCENARIO WORKDIR CKPT'

Each scenario builds its inputs under WORKDIR, runs `depthcli predict` with the local engine and
with `--engine ray`, asserts, and exits 0 (an AssertionError's traceback says what differed).
Kept out of pytest's process on purpose: Ray binds every interface it finds, and the test
process lives in the machine's network namespace.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ROOT, write_image
from depthcli.cli import main

COMMON = ["--model", "da2-tiny-test", "--input-size", "56", "--device", "cpu", "--threads", "1",
          "-f", "npy,color", "--json", "-q"]


def build_tree(root: Path, n_extra: int = 0, video: bool = True, bad: bool = True) -> Path:
    """Several sizes, subfolders, a bad file, a non-image and (optionally) a short video."""
    write_image(root / "a" / "x.jpg", 40, 60, seed=1)
    write_image(root / "a" / "x.png", 50, 30, seed=2)  # same stem: x.png.npy
    write_image(root / "b" / "c" / "z.png", 33, 47, seed=3)
    write_image(root / "top.png", 64, 64, seed=4)
    for i in range(n_extra):
        write_image(root / f"d{i % 3}" / f"e{i:03d}.png", 40 + (i % 4) * 8, 56, seed=10 + i)
    if bad:
        (root / "bad.png").write_bytes(os.urandom(200))
        (root / "notes.txt").write_text("not an image")
    if video:
        from test_video import make_video

        (root / "v").mkdir(parents=True, exist_ok=True)
        make_video(root / "v" / "clip.mp4", n=6)
    return root


def cli(args: list[str], ckpt: Path, env: dict[str, str] | None = None,
        last: tuple[str, ...] = ()) -> tuple[int, dict, list[str]]:
    """In-process `depthcli predict`: (exit code, JSON summary, error lines); `last` wins."""
    r = CliRunner().invoke(main, ["predict", *args, "--weights", str(ckpt), *COMMON, *last],
                           env=env)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    errors = sorted(ln for ln in r.stderr.splitlines() if ln.startswith("error:"))
    return r.exit_code, json.loads(r.stdout.strip().splitlines()[-1]), errors


def counts(summary: dict) -> dict:
    return {k: summary[k] for k in ("written", "skipped", "failed", "not_images", "frames")}


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def journal(path: Path) -> dict[str, str]:
    """An output journal's records (io.manifest): lines come in completion order."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["o"]: r["s"] for r in rows if "o" in r}


def same_outputs(a: Path, b: Path) -> None:
    """Same names; npy within 1e-5 of the range; the same journal records; every other file
    byte for byte."""
    assert files(a) == files(b), (sorted(files(a) ^ files(b)))
    assert not [f for f in files(a) if f.endswith(".tmp")]
    for rel in sorted(files(a)):
        if rel.endswith(".depthcli-outputs"):
            assert journal(a / rel) == journal(b / rel), rel
        elif rel.endswith(".npy"):
            x, y = np.load(a / rel), np.load(b / rel)
            assert x.shape == y.shape, rel
            assert np.abs(x - y).max() <= 1e-5 * max(float(x.max() - x.min()), 1e-12), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def parity(work: Path, ckpt: Path) -> None:
    """Local engine vs `--engine ray` on a Ray instance the command starts and stops."""
    src = build_tree(work / "in")
    code_l, sum_l, err_l = cli([str(src), "-o", str(work / "local")], ckpt)
    code_r, sum_r, err_r = cli([str(src), "-o", str(work / "ray"), "--engine", "ray"], ckpt,
                               env={"RAY_ADDRESS": ""})
    assert code_l == code_r == 1, (code_l, code_r)
    assert counts(sum_l) == counts(sum_r), (sum_l, sum_r)
    assert err_l == err_r and len(err_r) == 1, (err_l, err_r)
    same_outputs(work / "local", work / "ray")


def _kill_outputs(out: Path, names: list[str]) -> None:
    for n in names:
        (out / n).unlink()


def cluster2(work: Path, ckpt: Path) -> None:
    """A simulated 2-node cluster; then --skip-existing finishing runs across the engines."""
    from ray.cluster_utils import Cluster

    src = build_tree(work / "in", n_extra=6)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 200 << 20, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2, object_store_memory=200 << 20)
        cluster.wait_for_nodes()
        ray_args = ["--engine", "ray", "--ray-address", cluster.address]
        code_l, sum_l, _ = cli([str(src), "-o", str(work / "local")], ckpt)
        code_r, sum_r, _ = cli([str(src), "-o", str(work / "ray"), *ray_args], ckpt)
        assert code_l == code_r == 1 and counts(sum_l) == counts(sum_r), (sum_l, sum_r)
        same_outputs(work / "local", work / "ray")
        gone = ["a/x.npy", "b/c/z.png", "v/clip.npy"]
        _kill_outputs(work / "local", gone)  # ray finishes a local run ...
        code, summ, _ = cli([str(src), "-o", str(work / "local"), "--skip-existing", *ray_args],
                            ckpt)
        assert summ["written"] == 3 and summ["skipped"] == sum_l["written"] - 3, summ
        _kill_outputs(work / "ray", gone)  # ... and the local engine a ray run
        code, summ, _ = cli([str(src), "-o", str(work / "ray"), "--skip-existing"], ckpt)
        assert summ["written"] == 3 and summ["skipped"] == sum_l["written"] - 3, summ
        same_outputs(work / "local", work / "ray")
    finally:
        cluster.shutdown()


# ------------------------------------------------------------------- killed actor, ray start

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(root: int) -> list[int]:
    """Pids under `root` (children of children...), from /proc: only processes we started."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _model_actors(root: int) -> list[int]:
    pids = []
    for pid in _descendants(root):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"ModelStage" in cmd:
            pids.append(pid)
    return pids


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _start_head(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`ray start --head ... --block` on 127.0.0.1 in its own process group (stopped by pgid)."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--include-dashboard", "false", "--block"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    _wait(up, 60, "ray start")
    return head


def _stop(head: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(head.pid, sig)
            head.wait(timeout=15)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def killed_actor(work: Path, ckpt: Path) -> None:
    """RAY_ADDRESS -> a `ray start` cluster; the model actor SIGKILLed mid-run: exit 0, all files."""
    src = build_tree(work / "in", n_extra=40, video=False, bad=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    port = _free_port()
    head = _start_head(port, env)
    try:
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        args = [str(src), "-o", str(work / "ray"), "--weights", str(ckpt), *COMMON,
                "--input-size", "112", "--engine", "ray"]
        run = subprocess.Popen([sys.executable, "-m", "depthcli", "predict", *args], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait(lambda: bool(_model_actors(head.pid)) or run.poll() is not None, 120, "an actor")
        out = work / "ray"
        _wait(lambda: len(list(out.rglob("*.npy"))) >= 2 or run.poll() is not None, 120, "outputs")
        victims = _model_actors(head.pid)
        assert run.poll() is None and victims, "the run ended before the actor could be killed"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        done_at_kill = len(list(out.rglob("*.npy")))
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-3000:]
        summary = json.loads(stdout.strip().splitlines()[-1])
        n = sum(1 for p in src.rglob("*.png")) + sum(1 for p in src.rglob("*.jpg"))
        assert summary["written"] == n and summary["failed"] == 0, summary
        assert done_at_kill < n, "the kill came after the last output"
    finally:
        _stop(head)
    code, _, _ = cli([str(src), "-o", str(work / "local")], ckpt, last=("--input-size", "112"))
    assert code == 0
    same_outputs(work / "local", work / "ray")
    print(f"killed {victims} with {done_at_kill}/{n} inputs done")


SCENARIOS = {"parity": parity, "cluster2": cluster2, "killed_actor": killed_actor}

if __name__ == "__main__":
    name, work, ckpt = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    faulthandler.dump_traceback_later(float(os.environ.get("DEPTHCLI_SCENARIO_TIMEOUT", 420)),
                                      exit=True)  # a hang shows where, then fails
    t0 = time.perf_counter()
    SCENARIOS[name](work, ckpt)
    print(f"{name}: ok in {time.perf_counter() - t0:.1f} s")
