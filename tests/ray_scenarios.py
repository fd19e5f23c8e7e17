"""Ray scenarios for tests/test_ray.py, run inside a loopback-only network namespace.

    unshare -n sh -c 'ip link set lo up && python tests/ray_scenarios.py NAME[,NAME] WORKDIR CKPT'

Each scenario (in WORKDIR/NAME) builds its inputs under WORKDIR, runs `depthcli predict` with the local engine and
with `--engine ray`, asserts, and exits 0 (an AssertionError's traceback says what differed).
Kept out of pytest's process on purpose: Ray binds every interface it finds, and the test
process lives in the machine's network namespace.
"""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import cv2
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


_T0 = time.perf_counter()


def lap(what: str) -> None:
    """Seconds since the scenario started, on stdout: where a slow scenario spends its time."""
    # sys.__stdout__: a lap from a thread while CliRunner holds sys.stdout still gets out
    print(f"{time.perf_counter() - _T0:7.1f} s  {what}", file=sys.__stdout__, flush=True)


def counts(summary: dict) -> dict:
    return {k: summary[k] for k in ("written", "skipped", "failed", "not_images", "frames")}


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def journal(path: Path) -> dict[str, str]:
    """An output journal's records (io.manifest): lines come in completion order."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["o"]: r["s"] for r in rows if "o" in r}


def _same_picture(a: Path, b: Path, rel: str) -> None:
    """A colour map from depth within the npy tolerance below: byte for byte, or where a
    rounding of the depth moved a pixel across a level, one level on a few pixels (a run with
    killed actors once gave one such image of 52; the engines' depth is otherwise bitwise
    equal, `parity`)."""
    if (a / rel).read_bytes() == (b / rel).read_bytes():
        return
    x, y = (cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.int32) for p in (a / rel, b / rel))
    assert x.shape == y.shape, rel
    moved = np.abs(x - y).max(axis=-1) if x.ndim == 3 else np.abs(x - y)
    print(f"{rel}: {int((moved > 0).sum())} of {moved.size} pixels one level apart",
          file=sys.__stdout__)
    assert moved.max() <= 1 and (moved > 0).mean() <= 0.01, (rel, int(moved.max()))


def same_outputs(a: Path, b: Path) -> None:
    """Same names; npy within 1e-5 of the range; the same journal records; colour maps equal
    (`_same_picture`); every other file byte for byte."""
    assert files(a) == files(b), (sorted(files(a) ^ files(b)))
    assert not [f for f in files(a) if f.endswith(".tmp")]
    for rel in sorted(files(a)):
        if rel.endswith(".depthcli-outputs"):
            assert journal(a / rel) == journal(b / rel), rel
        elif rel.endswith(".npy"):
            x, y = np.load(a / rel), np.load(b / rel)
            assert x.shape == y.shape, rel
            assert np.abs(x - y).max() <= 1e-5 * max(float(x.max() - x.min()), 1e-12), rel
        elif rel.endswith(".png") and "_png16" not in rel:
            _same_picture(a, b, rel)
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def parity(work: Path, ckpt: Path) -> None:
    """Local engine vs `--engine ray` on a Ray instance the command starts and stops, with two
    model actors: a 20-frame per-frame video (segments of 4 frames, AAC audio) is split into
    two frame ranges, one per actor, and joined into the local run's bytes (npy included)."""
    from test_video import make_video

    src = build_tree(work / "in")
    make_video(src / "v" / "long.mp4", n=20, audio="aac")
    env = {"DEPTHCLI_SEGMENT_FRAMES": "4"}
    fmt = ("-f", "npy,color,png16")
    code_l, sum_l, err_l = cli([str(src), "-o", str(work / "local")], ckpt, env=env, last=fmt)
    lap("local run")
    code_r, sum_r, err_r = cli([str(src), "-o", str(work / "ray"), "--engine", "ray",
                                "--ray-actors", "2", "--ray-actor-cpus", "0.5"], ckpt,
                               env={**env, "RAY_ADDRESS": ""}, last=fmt)
    lap("ray run")
    assert code_l == code_r == 1, (code_l, code_r)
    assert counts(sum_l) == counts(sum_r), (sum_l, sum_r)
    assert err_l == err_r and len(err_r) == 1, (err_l, err_r)
    assert sum_r.get("split_videos") == 1 and "split_videos" not in sum_l, sum_r
    same_outputs(work / "local", work / "ray")
    for rel in ("v/long.npy", "v/long.mp4"):  # the split video: every byte
        assert (work / "local" / rel).read_bytes() == (work / "ray" / rel).read_bytes(), rel
    assert len(list((work / "ray" / "v" / "long_png16").iterdir())) == 20
    assert not (work / "ray" / ".depthcli-partial").exists()


def _kill_outputs(out: Path, names: list[str]) -> None:
    for n in names:
        (out / n).unlink()


# ------------------------------------------------- a `ray start` cluster of two nodes, killed actor

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


def _model_actors(roots: list[int]) -> list[int]:
    pids = []
    for pid in (p for r in roots for p in _descendants(r)):
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


def _ray_start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`ray start ... --block` on 127.0.0.1 in its own process group (stopped by pgid)."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    return subprocess.Popen(
        [ray_bin, "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
         "--object-store-memory", str(200 << 20), "--block"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_nodes(address: str, n: int, timeout: float) -> None:
    """Until `n` nodes are alive: one driver connection polled (a connection per poll cost
    ~1 s of CPU each)."""
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        _wait(lambda: sum(1 for node in ray.nodes() if node.get("Alive")) >= n, timeout,
              f"{n} Ray nodes")
    finally:
        ray.shutdown()


def _stop(node: subprocess.Popen[bytes]) -> None:
    """SIGKILL a `ray start` node and every process under it (a graceful stop costs ~15 s)."""
    for pid in [*_descendants(node.pid), node.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    node.wait(timeout=30)


class _Killer(threading.Thread):
    """SIGKILLs every model actor under `roots` once two outputs more than `more_than` exist
    (while the run goes on)."""

    def __init__(self, out: Path, roots: list[int], more_than: int = 0) -> None:
        super().__init__(daemon=True)
        self.out, self.roots, self.more_than = out, roots, more_than
        self.done = threading.Event()  # set by the caller when the run has returned
        self.victims: list[int] = []
        self.done_at_kill = -1

    def run(self) -> None:
        while not self.done.is_set() and len(list(self.out.rglob("*.npy"))) < self.more_than + 2:
            time.sleep(0.05)
        if self.done.is_set():
            return
        self.victims = _model_actors(self.roots)
        lap(f"outputs appear: killing {self.victims}")
        for pid in self.victims:
            os.kill(pid, signal.SIGKILL)
        self.done_at_kill = len(list(self.out.rglob("*.npy")))


def cluster(work: Path, ckpt: Path) -> None:
    """Two `ray start` nodes reached through $RAY_ADDRESS finish an interrupted local run
    (--skip-existing) while their model actors are SIGKILLed mid-run: the uninterrupted local
    run's files, error lines and exit code. Then the local engine finishes a ray run."""
    src = build_tree(work / "in", n_extra=48)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes = [_ray_start(["--head", "--port", str(port), "--include-dashboard", "false"], env)]
    try:
        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        _wait(up, 60, "ray start --head")
        lap("head up")
        nodes.append(_ray_start(["--address", address], env))
        _wait_for_nodes(address, 2, 60)
        lap("two nodes")
        size = ("--input-size", "112")  # enough work per input for the kill to land mid-run
        local, out = work / "local", work / "ray"
        code_l, sum_l, err_l = cli([str(src), "-o", str(local)], ckpt, last=size)
        assert code_l == 1 and len(err_l) == 1 and sum_l["failed"] == 1, (code_l, err_l, sum_l)
        lap("local run")
        # an interrupted local run: 6 images done, the rest (the video too) left to the cluster
        shutil.copytree(local, out)
        kept = {"a/x", "a/x.png", "top", "d0/e000", "d1/e001", "d2/e002"}  # output bases
        for f in files(out):
            if not f.endswith(".depthcli-outputs") and f.rsplit(".", 1)[0] not in kept:
                (out / f).unlink()
        killer = _Killer(out, [n.pid for n in nodes], more_than=len(kept))
        killer.start()
        code_r, sum_r, err_r = cli([str(src), "-o", str(out), "--engine", "ray",
                                    "--skip-existing"], ckpt, env={"RAY_ADDRESS": address},
                                   last=size)
        killer.done.set()
        killer.join()
        lap("ray run killed and done")
        assert killer.victims, "the run ended before the actors could be killed"
        assert (code_r, err_r) == (code_l, err_l), (code_r, err_r, sum_r)
        assert sum_r["skipped"] == len(kept), sum_r
        assert sum_r["written"] == sum_l["written"] - len(kept), (sum_l, sum_r)
        assert sum_r["failed"] == 1 and sum_r["frames"] == sum_l["frames"], (sum_l, sum_r)
        assert killer.done_at_kill < sum_l["written"], "the kill came after the last output"
        same_outputs(local, out)
        print(f"killed {len(killer.victims)} model actors with {killer.done_at_kill}/"
              f"{sum_l['written']} inputs done")
    finally:
        for node in reversed(nodes):
            _stop(node)
        lap("nodes stopped")
    gone = ["a/x.npy", "b/c/z.png", "v/clip.npy"]
    _kill_outputs(out, gone)  # the local engine finishes a ray run
    _, summ, _ = cli([str(src), "-o", str(out), "--skip-existing"], ckpt, last=size)
    assert summ["written"] == 3 and summ["skipped"] == sum_l["written"] - 3, summ
    same_outputs(local, out)


SCENARIOS = {"parity": parity, "cluster": cluster}


def run_scenarios(names: list[str], work: Path, ckpt: Path) -> int:
    """Run the scenarios one after the other in this process (one interpreter and one import
    of torch/Ray for all of them); each prints `NAME: ok` or its traceback. Exit 1 if any
    failed."""
    global _T0
    failed = 0
    for name in names:
        (work / name).mkdir(parents=True, exist_ok=True)
        # a hang shows where, then fails (each scenario its own limit)
        faulthandler.dump_traceback_later(
            float(os.environ.get("DEPTHCLI_SCENARIO_TIMEOUT", 420)), exit=True)
        _T0 = time.perf_counter()
        try:
            SCENARIOS[name](work / name, ckpt)
        except BaseException:  # noqa: BLE001 - reported, the next scenario still runs
            failed += 1
            print(f"{name}: FAILED", flush=True)
            traceback.print_exc()
            sys.stderr.flush()
        else:
            print(f"{name}: ok in {time.perf_counter() - _T0:.1f} s", flush=True)
        finally:
            faulthandler.cancel_dump_traceback_later()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_scenarios(sys.argv[1].split(","), Path(sys.argv[2]), Path(sys.argv[3])))
