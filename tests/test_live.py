"""Live sources (`predict tcp://…`): a real stream on loopback, a stall, Ctrl-C; a source that
drops and comes back while the depth streams to `-o tcp://…`, ended by SIGTERM; a drop with
`--reconnect 0`, a receiver that goes away or is not there; URL usage errors, FLV for rtmp, the
source's drop-oldest queue and naming, in process. (`predict - -o -` with SIGTERM: the `stdin`
scenario of tests/live_scenarios.py, run by hand.)

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
import signal_checks

from conftest import NETNS, in_own_process, needs_netns
from depthcli.io.live import LiveSource, is_live, live_stem

ROOT = Path(__file__).resolve().parent.parent


def scenario(name: str, work: Path, ckpt: Path | str) -> dict:
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


def errors_of(run: dict) -> list[str]:
    assert "Traceback" not in run["stderr"], run["stderr"]
    return [ln for ln in run["stderr"].splitlines() if ln.startswith("error:")]


@needs_netns
def test_reconnect_url_output_sigterm_and_failures(tiny_ckpt, tmp_path) -> None:
    """One scenario (one depthcli child, three runs in process: one test, so that xdist does
    not run the scenario twice):

    - 8 frames, a reset, the source back: with --reconnect 1 the run goes on (one reopen in
      the summary), the receiver of `-o tcp://…` gets the frames of both connections with
      increasing timestamps; SIGTERM → exit 143, the stream finished (the receiver sees its
      end) and every frame counted in the summary decodes there;
    - --reconnect 0 and a reset: `stream lost`, exit 1, the mp4 and npy hold the frames done;
    - a receiver that resets mid-stream, or none listening: `error: URL: reason`, exit 1."""
    runs = scenario("reconnect", tmp_path, tiny_ckpt)
    run = runs["sigterm"]
    assert run["waited"] and run["rc"] == 143, run["stderr"]
    assert errors_of(run) == []
    summary = json.loads(run["stdout"])
    assert summary["reconnects"] == 1 and summary["terminated"] and summary["interrupted"]
    assert summary["settings"]["output"].startswith("tcp://127.0.0.1:")
    pts = run["pts"]
    assert len(pts) == summary["frames"] >= 14  # the first connection had 8
    # decoded: processed, dropped, or still waiting (queue of 2, one in hand) at SIGTERM
    assert 0 <= summary["decoded"] - summary["frames"] - summary["dropped"] <= 3
    assert summary["decoded"] > 8
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), pts
    assert run["ended"] == "eof"
    assert sum("reopening (1 of 1)" in ln for ln in run["stderr"].splitlines()) == 1

    drop = runs["drop"]
    assert drop["rc"] == 1
    [line] = errors_of(drop)
    assert line.startswith("error: tcp://127.0.0.1:")
    assert line.endswith(": stream lost (Connection reset by peer)")
    summary = json.loads(drop["stdout"])
    assert summary["reconnects"] == 0 and summary["decoded"] <= 8 and summary["frames"] >= 1
    assert drop["mp4_frames"] == drop["npy"][0] == summary["frames"]
    gone = runs["gone"]
    assert gone["rc"] == 1 and gone["ended"] == "reset"
    [line] = errors_of(gone)
    assert line in (f"error: {gone['url']}: Broken pipe",
                    f"error: {gone['url']}: Connection reset by peer"), line
    refused = runs["refused"]
    assert refused["rc"] == 1
    assert errors_of(refused) == [f"error: {refused['url']}: Connection refused"]
    assert json.loads(refused["stdout"])["frames"] == 0


@pytest.mark.parametrize("args, message", [
    (["tcp://127.0.0.1:9", "-o", "udp://127.0.0.1:9", "-f", "npy"],
     "-o udp://127.0.0.1:9 streams one visual format (color, gray or side) as MPEG-TS; npy is "
     "written to a folder"),
    (["tcp://127.0.0.1:9", "-o", "rtmp://127.0.0.1/app/k", "-f", "color,png16"],
     "as FLV; png16 is written to a folder"),
    (["tcp://127.0.0.1:9", "-o", "srt://127.0.0.1:9", "-f", "color", "-f", "gray"],
     "give exactly one -f"),
    (["tcp://127.0.0.1:9", "-o", "rtsp://127.0.0.1/live", "-f", "color"],
     "depth streams to rtmp://, rtmps://, srt://, udp://, tcp:// (or - for stdout)"),
    (["clip.mp4", "-o", "udp://127.0.0.1:9", "-f", "color"],
     "only a live source streams to a URL"),
])
def test_url_output_usage_errors(args, message, tmp_path) -> None:
    """What cannot be streamed to a URL is a usage error before anything starts (the missing
    weights file would be the next usage error: nothing is loaded or opened)."""
    from click.testing import CliRunner

    from depthcli.cli import main

    r = CliRunner().invoke(main, ["predict", *args, "--weights", str(tmp_path / "none.pth")])
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.stderr.split()), r.stderr


def test_url_output_formats_and_flv(tmp_path, monkeypatch) -> None:
    """rtmp gets FLV (H.264 with its global header), the others MPEG-TS; tcp URLs get a socket
    timeout; the FLV stream reads back with every frame and the source's timestamps."""
    from fractions import Fraction

    import av
    import numpy as np

    from depthcli.io import live as io_live
    from depthcli.runs import live as runner

    assert io_live.output_format("rtmp://h/app/key") == "flv"
    assert {io_live.output_format(u) for u in ("udp://h:1", "tcp://h:1", "srt://h:1")} == {
        "mpegts"}
    assert io_live.output_target("tcp://h:1", 2.5) == "tcp://h:1?timeout=2500000"
    assert io_live.output_target("tcp://h:1?tcp_nodelay=1", 1) == (
        "tcp://h:1?tcp_nodelay=1&timeout=1000000")
    assert io_live.output_target("tcp://h:1?timeout=5", 1) == "tcp://h:1?timeout=5"
    assert io_live.output_target("udp://h:1", 1) == "udp://h:1"
    monkeypatch.setattr(runner, "output_format", lambda url: "flv")
    path = tmp_path / "x.flv"
    video = runner.LiveVideo(str(path), (64, 96), Fraction(25))
    for i in range(6):
        video.write(np.full((64, 96), 40 * i, np.uint8), [0, 40_000, 80_000, 200_000, 240_000,
                                                           280_000][i])
    video.close()
    with av.open(str(path)) as c:
        assert c.format.name == "flv" and c.streams.video[0].codec_context.name == "h264"
        got = [round(float(f.pts * f.time_base), 3) for f in c.decode(video=0)]
    assert got == [0.0, 0.04, 0.08, 0.2, 0.24, 0.28]


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
    once outside; the handlers are put back afterwards (tests/signal_checks.py, in a process of
    its own)."""
    in_own_process(signal_checks.held_signals)
