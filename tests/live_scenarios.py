"""Live-source scenarios for tests/test_live.py, each run in a loopback-only network namespace.

    python live_scenarios.py SCENARIO WORK WEIGHTS   → one JSON line on stdout

This process is the source: a PyAV writer of H.264 MPEG-TS (96x64), serving on
tcp://127.0.0.1:PORT?listen=1 or writing into depthcli's stdin; depthcli runs as a child
process (signals and exit codes are what is tested).

- `stall`: 12 frames, then the connection stays open and silent → `--source-timeout 2`;
- `interrupt`: frames until depthcli has written 4 of them, then SIGINT;
- `stdin`: `predict - -o -` (MPEG-TS in, MPEG-TS out), SIGTERM after 2 frames came out.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
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
    scenario, work, weights = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    result = stdin(work, weights) if scenario == "stdin" else tcp(work, weights, scenario)
    print(json.dumps(result))
