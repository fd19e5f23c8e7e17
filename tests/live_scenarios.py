"""Live-source scenarios for tests/test_live.py, each run in a loopback-only network namespace.

    python live_scenarios.py SCENARIO WORK WEIGHTS   → one JSON line on stdout

This process is the source: a PyAV writer of H.264 MPEG-TS (96x64), serving on
tcp://127.0.0.1:PORT?listen=1 or writing into depthcli's stdin; depthcli runs as a child
process (signals and exit codes are what is tested).

- `stall`: 12 frames, then the connection stays open and silent → `--source-timeout 2`;
- `interrupt`: frames until depthcli has written 4 of them, then SIGINT;
- `stdin`: `predict - -o -` (MPEG-TS in, MPEG-TS out), SIGTERM after 2 frames came out;
- `reconnect`: a source that serves 8 frames, drops (a reset) and comes back; depthcli with
  `--reconnect 1` streams gray depth to `-o tcp://…` (a receiver here), SIGTERM once the
  receiver has frames of both connections. Meanwhile this process loads depthcli itself and
  then runs three failures in process (one torch import for the three): the source drops with
  `--reconnect 0`; the receiver goes away mid-stream; no receiver at all.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FPS = 25


def clip_frame(t: int, h: int = 64, w: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.clip(60 + 120 * xx / w + 40 * np.sin(yy / 9 + t / 4)
                  + 80 * np.exp(-((xx - 20 - 2 * (t % 40)) ** 2 + (yy - h / 2) ** 2) / 90), 0, 255)
    g = img.astype(np.uint8)
    return np.stack([g, np.roll(g, 7, axis=1), 255 - g], -1)


def serve(url: str, frames: int) -> None:
    """Write `frames` frames at FPS to `url` (`-`: stdout), then stay silent (a stall) until
    killed. A process of its own: PyAV holds the GIL while it waits for a client."""
    target: Any = sys.stdout.buffer if url == "-" else url
    try:
        with av.open(target, "w", format="mpegts", options={"flush_packets": "1"}) as c:
            s = c.add_stream("libx264", rate=Fraction(FPS),
                             options={"tune": "zerolatency", "preset": "ultrafast", "g": "5"})
            s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
            t0 = time.monotonic()
            for i in range(frames):
                fr = av.VideoFrame.from_ndarray(clip_frame(i), format="rgb24")
                fr.pts = i
                for p in s.encode(fr):
                    c.mux(p)
                time.sleep(max(0.0, t0 + (i + 1) / FPS - time.monotonic()))
            time.sleep(60)
    except (OSError, av.error.FFmpegError, ValueError):
        pass  # the reader went away


class _Chunks:
    """A write-only file for PyAV: what each frame's packets became, sent by the caller."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b: bytes) -> int:
        self.data += b
        return len(b)

    def take(self) -> bytes:
        out, self.data = bytes(self.data), bytearray()
        return out


def serve_drops(plan: list[int]) -> None:
    """A source that drops and comes back: one listening socket on loopback (its port on
    stdout) for the whole run; the n-th connection gets `plan[n]` frames at FPS, from a fresh
    muxer whose clock restarts at 0 (a restarted camera), then a reset (RST: the connection is
    lost, not ended). After the plan, the listening socket closes (the source is gone)."""
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        print(lsock.getsockname()[1], flush=True)
        for n_conn, frames in enumerate(plan):
            conn, _ = lsock.accept()
            out = _Chunks()
            try:
                with av.open(out, "w", format="mpegts", options={"flush_packets": "1"}) as c:
                    s = c.add_stream("libx264", rate=Fraction(FPS), options={
                        "tune": "zerolatency", "preset": "ultrafast", "g": "5"})
                    s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
                    t0 = time.monotonic()
                    for i in range(frames):
                        fr = av.VideoFrame.from_ndarray(clip_frame(i + 50 * n_conn),
                                                        format="rgb24")
                        fr.pts = i
                        for p in s.encode(fr):
                            c.mux(p)
                        conn.sendall(out.take())
                        time.sleep(max(0.0, t0 + (i + 1) / FPS - time.monotonic()))
                    time.sleep(0.2)  # the last frames reach the reader before the reset
            except OSError:
                pass  # the reader went away
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()


class Receiver:
    """The far end of `-o tcp://127.0.0.1:PORT`: one connection on loopback, its bytes kept in
    a file; `reset_after` bytes → a reset (a receiver that goes away)."""

    def __init__(self, path: Path, reset_after: int | None = None) -> None:
        self.path, self.reset_after = path, reset_after
        self.ended: str | None = None  # "eof" (the sender closed), "reset", or the error
        self._lsock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._lsock.getsockname()[1])
        self.url = f"tcp://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._lsock:
            conn, _ = self._lsock.accept()
        size = 0
        with conn, open(self.path, "wb") as f:
            while True:
                try:
                    b = conn.recv(65536)
                except OSError as exc:
                    self.ended = str(exc)
                    return
                if not b:
                    self.ended = "eof"
                    return
                f.write(b)
                f.flush()
                size += len(b)
                if self.reset_after is not None and size >= self.reset_after:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.ended = "reset"
                    return

    def pts(self) -> list[float]:
        """The timestamps (s) of the frames received so far."""
        return ts_pts(self.path)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def ts_pts(path: Path) -> list[float]:
    try:
        with av.open(io.BytesIO(path.read_bytes()), format="mpegts") as c:
            return [float(f.pts * f.time_base) for f in c.decode(video=0)]
    except (av.error.FFmpegError, ValueError, OSError):
        return []


def drops_server(*plan: int) -> tuple[subprocess.Popen, int]:
    srv = subprocess.Popen([sys.executable, __file__, "serve-drops", *map(str, plan)],
                           stdout=subprocess.PIPE, text=True)
    assert srv.stdout is not None
    return srv, int(srv.stdout.readline())  # listening once the port is out


SMALL = ["--model", "da2-tiny-test", "--input-size", "56", "--source-timeout", "20", "--json"]
# (a generous timeout: no run here waits for it; a starved machine must not fire it)


def reconnect(work: Path, weights: str) -> dict[str, Any]:
    srv, port = drops_server(8, 100_000)
    rx = Receiver(work / "received.ts")
    p = depthcli([f"tcp://127.0.0.1:{port}", "-o", rx.url, "-f", "gray", "--weights", weights,
                  "--reconnect", "1", *SMALL], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 text=True)
    from depthcli.cli import main  # the import (torch) while the child imports its own

    # 8 frames at most from the first connection: 14 are frames of both
    got = wait_for(lambda: len(rx.pts()) >= 14, every=0.2)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=240)
    rx.join(timeout=60)
    srv.kill()
    srv.wait()
    res = {"rc": p.returncode, "stdout": stdout, "stderr": stderr, "waited": got,
           "pts": rx.pts(), "ended": rx.ended}
    return {"sigterm": res, **failures(work, weights, main)}


def failures(work: Path, weights: str, main: Any) -> dict[str, Any]:
    """Three runs in this process, against one source: its first connection drops after 8
    frames (a reset), the next two serve until the reader goes."""
    from click.testing import CliRunner

    os.environ["DEPTHCLI_BACKEND"] = "torch"
    srv, port = drops_server(8, 100_000, 100_000)
    src = f"tcp://127.0.0.1:{port}"
    common = ["--weights", weights, *SMALL]

    def run(*args: str) -> dict[str, Any]:
        r = CliRunner().invoke(main, ["predict", src, *args, *common])
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception
        return {"rc": r.exit_code, "stdout": r.stdout, "stderr": r.stderr}

    res: dict[str, Any] = {}
    out = work / "drop"
    res["drop"] = run("-o", str(out), "-f", "color", "-f", "npy", "--reconnect", "0")
    res["drop"]["mp4_frames"] = mp4_frames(out / f"127.0.0.1_{port}.mp4")
    res["drop"]["npy"] = list(np.load(out / f"127.0.0.1_{port}.npy").shape)
    rx = Receiver(work / "gone.ts", reset_after=2000)
    res["gone"] = run("-o", rx.url, "-f", "color", "--reconnect", "0")
    res["gone"]["url"], res["gone"]["ended"] = rx.url, rx.ended
    nobody = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    res["refused"] = run("-o", nobody, "-f", "gray", "--reconnect", "0")
    res["refused"]["url"] = nobody
    srv.kill()
    srv.wait()
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server(url: str, frames: int, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "serve", url, str(frames)], **kw)


def depthcli(args: list[str], **kw: Any) -> subprocess.Popen:
    env = {**os.environ, "DEPTHCLI_BACKEND": "torch",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "depthcli", "predict", *args], env=env,
                            cwd=ROOT, **kw)


def wait_for(cond: Any, limit: float = 240, every: float = 0.05) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(every)
    return False


def mp4_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def tcp(work: Path, weights: str, name: str) -> dict[str, Any]:
    port = free_port()
    src = server(f"tcp://127.0.0.1:{port}?listen=1", 12 if name == "stall" else 10_000)
    out = work / name
    fmts = ["-f", "color", "-f", "npy"] if name == "stall" else ["-f", "color", "-f", "png16"]
    time.sleep(0.5)  # the listening socket is up long before depthcli has imported torch
    p = depthcli([f"tcp://127.0.0.1:{port}", "-o", str(out), "--model", "da2-tiny-test",
                  "--weights", weights, "--source-timeout", "2", "--reconnect", "0", "--json",
                  *fmts], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if name == "interrupt":
        png = out / f"127.0.0.1_{port}_png16"
        wait_for(lambda: png.is_dir() and len(list(png.glob("*.png"))) >= 4)
        p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=240)
    src.kill()
    src.wait()
    res: dict[str, Any] = {"rc": p.returncode, "stdout": stdout, "stderr": stderr,
                           "files": sorted(f.name for f in out.iterdir()) if out.exists() else []}
    mp4 = out / f"127.0.0.1_{port}.mp4"
    res["mp4_frames"] = mp4_frames(mp4) if mp4.exists() else None
    if name == "stall":
        npy = out / f"127.0.0.1_{port}.npy"
        res["npy"] = list(np.load(npy).shape) if npy.exists() else None
    else:
        res["png"] = len(list((out / f"127.0.0.1_{port}_png16").glob("*.png")))
    return res


def stdin(work: Path, weights: str) -> dict[str, Any]:
    src = server("-", 10_000, stdout=subprocess.PIPE)
    err = open(work / "stderr.txt", "w+b")  # read back below
    out = work / "out.ts"
    with open(out, "wb") as sink:
        p = depthcli(["-", "-o", "-", "--model", "da2-tiny-test", "--weights", weights, "-f",
                      "gray", "--json"], stdin=src.stdout, stdout=sink, stderr=err)
    assert src.stdout is not None
    src.stdout.close()  # depthcli holds it now

    def frames_out() -> int:
        try:
            with av.open(io.BytesIO(out.read_bytes()), format="mpegts") as c:
                return sum(1 for _ in c.decode(video=0))
        except (av.error.FFmpegError, ValueError):
            return 0

    wait_for(lambda: out.stat().st_size > 0 and frames_out() >= 2, every=0.5)
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=240)
    src.kill()
    src.wait()
    err.seek(0)
    return {"rc": rc, "stderr": err.read().decode(), "frames_out": frames_out(),
            "bytes": out.stat().st_size}


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    if sys.argv[1] == "serve-drops":
        serve_drops([int(n) for n in sys.argv[2:]])
        sys.exit(0)
    scenario, work, weights = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if scenario == "reconnect":
        result = reconnect(work, weights)
    else:
        result = stdin(work, weights) if scenario == "stdin" else tcp(work, weights, scenario)
    print(json.dumps(result))
