"""Live sources (`predict tcp://…`): a real stream on loopback, a stall, Ctrl-C; the source's
drop-oldest queue and naming, in process. (`predict - -o -` with SIGTERM: the `stdin` scenario
of tests/live_scenarios.py, run by hand.)

The streams run in a private network namespace whose only interface is loopback (`unshare -n`);
the scenarios are in tests/live_scenarios.py. depthcli runs as a child process there: its exit
codes and signals are what is under test.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NETNS, needs_netns
from depthcli.io.live import LiveSource, is_live, live_stem

ROOT = Path(__file__).resolve().parent.parent


def scenario(name: str, work: Path, ckpt: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    r = subprocess.run([*NETNS, sys.executable, str(ROOT / "tests" / "live_scenarios.py"), name,
                        str(work), str(ckpt)], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=480)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@needs_netns
def test_tcp_stream_that_stalls(tiny_ckpt, tmp_path) -> None:
    """12 frames over tcp, then silence: one line after --source-timeout, exit 1, and the
    fragmented mp4 and the npy stack hold every frame that was processed."""
    res = scenario("stall", tmp_path, tiny_ckpt)
    assert res["rc"] == 1, res["stderr"]
    errors = [ln for ln in res["stderr"].splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].endswith("no frame for 2 s (--source-timeout)")
    summary = json.loads(res["stdout"])
    assert summary["decoded"] == 12 and summary["frames"] + summary["dropped"] == 12  # no lag
    assert summary["frames"] >= 1
    assert res["mp4_frames"] == summary["frames"]
    assert res["npy"] == [summary["frames"], 64, 96]


@needs_netns
def test_tcp_stream_ctrl_c(tiny_ckpt, tmp_path) -> None:
    """SIGINT mid-stream: exit 130, the mp4 plays and has as many frames as png16 wrote."""
    res = scenario("interrupt", tmp_path, tiny_ckpt)
    assert res["rc"] == 130, res["stderr"]
    summary = json.loads(res["stdout"])
    assert summary["interrupted"] and summary["frames"] >= 4
    assert res["png"] == summary["frames"] == res["mp4_frames"]


def test_live_arguments_and_names() -> None:
    for arg in ("rtsp://cam/stream1", "rtmp://h/app/key", "srt://1.2.3.4:9000", "udp://@:1234",
                "tcp://127.0.0.1:5000", "/dev/video0", "-"):
        assert is_live(arg), arg
    for arg in ("clip.mp4", "/dev/sda", "folder/", "file://x.mp4"):
        assert not is_live(arg), arg
    assert live_stem("rtsp://cam.local:554/live/ch1?token=x") == "ch1"
    assert live_stem("tcp://127.0.0.1:5000") == "127.0.0.1_5000"
    assert live_stem("-") == "stdin" and live_stem("/dev/video2") == "video2"


def test_full_queue_drops_the_oldest_frame() -> None:
    """Depth slower than the source: the queue keeps the newest frames, drops are counted, and
    the end of the stream waits behind the frames still queued."""
    src = LiveSource("-", queue_size=2, timeout=0.2)
    for i in range(5):
        src._put((i, 0.0))
    assert src.stats.dropped == 3
    assert [src._q.get_nowait()[0] for _ in range(2)] == [3, 4]
    src._put((5, 0.0))
    src._put((6, 0.0))
    import threading

    t = threading.Thread(target=src._put, args=(object(),))  # an end marker: waits for room
    t.start()
    assert src._q.get(timeout=5)[0] == 5
    t.join(timeout=5)
    assert not t.is_alive() and src.stats.dropped == 3
    with pytest.raises(queue.Empty):
        while True:
            item = src._q.get_nowait()
            assert not isinstance(item, tuple) or item[0] == 6


def test_signals_wait_for_the_frame_being_written() -> None:
    """Ctrl-C or SIGTERM while a frame goes to the writers is raised once the frame is written
    and counted (the flaky case was a png and an mp4 frame one ahead of the summary), and at
    once outside; the handlers are put back afterwards."""
    import signal

    from depthcli.runners.live import Terminated, _Signals

    before = signal.getsignal(signal.SIGINT)
    sig = _Signals()
    sig.install()
    done = []
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            with sig.held():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("written")
                done.append("counted")
        assert done == ["written", "counted"] and not isinstance(info.value, Terminated)
        with pytest.raises(Terminated):
            with sig.held():
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGINT)  # the first signal is the one raised
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # delivered between bytecodes, well before this ends
                pass
            done.append("not reached")
        assert done == ["written", "counted"]
    finally:
        sig.restore()
    assert signal.getsignal(signal.SIGINT) is before
