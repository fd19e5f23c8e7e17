"""Live video sources: network streams, capture devices and stdin, through PyAV.

A live source has no end known in advance, may stall, and may drop and come back. `LiveSource`
decodes it in a thread of its own into a small queue and hands frames out with `next_frame`:

- when depth is slower than the source, the queue is full and the *oldest* waiting frame is
  dropped (counted in `dropped`), so latency stays bounded and memory with it;
- a source that gives no frame for `timeout` seconds is stalled: `SourceStalled`, one line
  (a stalled connection is still open: reopening it would not bring frames back);
- a network source that is lost (a read error, a reset) or ends is reopened, up to
  `reconnects` times in a row (a frame in between starts the count again), each open bounded
  by the same timeout; when it does not come back, a loss ends with `SourceFailed` and an end
  of stream ends the run cleanly, as does the end of a pipe or device.

Frame timing: `Frame.pts` is in `TIME_BASE` (microseconds) counted from the first frame, across
reopens too, so an output's clock never goes back.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from .video_decode import Frame, error_reason

_logger = logging.getLogger(__name__)

SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "rtp", "http", "https")
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
_DEVICE = re.compile(r"^/dev/video\d+$")
TIME_BASE = Fraction(1, 1_000_000)
DEFAULT_TIMEOUT = 10.0
DEFAULT_RECONNECTS = 3
DEFAULT_QUEUE = 2


def is_live(arg: str) -> bool:
    """True for a stream URL (rtsp://, rtmp://, srt://, udp://, tcp://, ...), /dev/videoN, '-'."""
    if arg == "-" or _DEVICE.match(arg):
        return True
    m = _URL.match(arg)
    return bool(m and m.group(1).lower() in SCHEMES)


def is_network(arg: str) -> bool:
    return is_url(arg)


OUTPUT_SCHEMES = ("rtmp", "rtmps", "srt", "udp", "tcp")


def is_url(arg: str) -> bool:
    """`scheme://…` (a folder name never looks like this, and `Path` would fold the `//`)."""
    return bool(_URL.match(arg))


def output_format(url: str) -> str:
    """The container a URL output carries: FLV for RTMP (what RTMP servers take), MPEG-TS for
    udp/tcp/srt (self-synchronising: a receiver can join mid-stream)."""
    return "flv" if url.split(":", 1)[0].lower() in ("rtmp", "rtmps") else "mpegts"


def output_target(url: str, timeout: float) -> str:
    """The URL PyAV opens for writing. PyAV opens an output without an interrupt callback, so
    a tcp receiver that stops reading would block the run for good: tcp URLs get FFmpeg's
    socket timeout (µs) unless they set one."""
    if url.split(":", 1)[0].lower() == "tcp" and not re.search(r"[?&]timeout=", url):
        url += ("&" if "?" in url else "?") + f"timeout={int(timeout * 1e6)}"
    return url


def live_stem(arg: str) -> str:
    """An output name for a source: `stdin`, `video0`, or the URL's last path part / host."""
    if arg == "-":
        return "stdin"
    if _DEVICE.match(arg):
        return arg.rsplit("/", 1)[-1]
    rest = _URL.sub("", arg).split("?", 1)[0].rstrip("/")
    part = rest.rsplit("/", 1)[-1] if "/" in rest else rest
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._") or "live"
    return stem[:80]


class SourceStalled(Exception):
    """The source gave no frame for the timeout (and could not be reopened)."""


class SourceFailed(Exception):
    """The source could not be opened or read (and could not be reopened)."""


@dataclass
class LiveStats:
    decoded: int = 0  # frames that came out of the decoder
    dropped: int = 0  # of which dropped because depth was slower than the source
    reconnects: int = 0  # reopens that worked


_END = object()


class LiveSource:
    """Frames of a live source, decoded in a background thread; see the module docstring."""

    def __init__(self, arg: str, *, timeout: float = DEFAULT_TIMEOUT,
                 reconnects: int = DEFAULT_RECONNECTS, queue_size: int = DEFAULT_QUEUE,
                 max_pixels: int | None = None) -> None:
        self.arg = arg
        self.timeout = timeout
        self.reconnects = reconnects
        self.max_pixels = max_pixels
        self.stats = LiveStats()
        self.rate: Fraction | None = None  # the stream's average frame rate, when it says
        self.size: tuple[int, int] | None = None  # (h, w) of the first frame
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._container: Any = None
        self._t0: float | None = None  # seconds of the first frame (source clock)
        self._offset = 0.0  # added after a reopen, so that time goes on
        self._last = -1
        self._thread: threading.Thread | None = None
        self._arrived = 0.0

    # ---------------------------------------------------------------------- opening

    def _open(self) -> Any:
        """One attempt; PyAV's timeout bounds both the open and each read."""
        opts: dict[str, str] = {}
        fmt = None
        if self.arg == "-":
            try:
                target: Any = f"pipe:{sys.stdin.fileno()}"
            except (AttributeError, OSError, ValueError):
                target = sys.stdin.buffer  # a file object (no descriptor): tests, embedding
        elif _DEVICE.match(self.arg):
            target, fmt = self.arg, "v4l2"
        else:
            target = self.arg
            scheme = self.arg.split(":", 1)[0].lower()
            if scheme.startswith("rtsp"):
                opts["rtsp_transport"] = "tcp"
        return av.open(target, "r", format=fmt, options=opts,
                       timeout=(self.timeout, self.timeout))

    def open(self) -> None:
        """Open the source (SourceFailed with the reason if it cannot be) and start decoding."""
        try:
            self._container = self._open()
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise SourceFailed(f"cannot open ({error_reason(exc)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceFailed("no video stream")
        vs = self._container.streams.video[0]
        self.rate = vs.average_rate or vs.guessed_rate
        self._thread = threading.Thread(target=self._run, name="depthcli-live", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------------- decoding

    def _put(self, item: Any) -> None:
        """Into the queue; when full, the oldest waiting frame goes (counted). The end of the
        stream and errors wait for room instead: the frames before them are still shown."""
        if not isinstance(item, tuple):
            while not self._stop.is_set():
                try:
                    self._q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        while not self._stop.is_set():
            try:
                self._q.put_nowait(item)
                return
            except queue.Full:
                try:
                    old = self._q.get_nowait()
                    if isinstance(old, tuple):
                        self.stats.dropped += 1
                except queue.Empty:
                    pass

    def _frames(self, container: Any) -> Iterator[Any]:
        vs = container.streams.video[0]
        vs.thread_type = "SLICE"  # frame threading would hold back a frame per thread
        yield from container.decode(vs)

    def _convert(self, fr: Any) -> Frame | None:
        if self.max_pixels is not None and fr.width * fr.height > self.max_pixels:
            return None
        img: np.ndarray = fr.to_ndarray(format="bgr24")
        if self.size is None:
            self.size = img.shape[:2]
        elif img.shape[:2] != self.size:
            import cv2

            img = cv2.resize(img, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        t = float(fr.pts * fr.time_base) if fr.pts is not None and fr.time_base else None
        if t is None:
            t = time.monotonic()
        if self._t0 is None:
            self._t0 = t
        us = int(round((t - self._t0 + self._offset) / TIME_BASE))
        us = max(us, self._last + 1)
        self._last = us
        index = self.stats.decoded
        self.stats.decoded += 1
        return Frame(index, us, 0, img)

    def _run(self) -> None:
        container = self._container
        failures = 0
        while not self._stop.is_set():
            reason = "end of stream"
            eof = False
            try:
                for fr in self._frames(container):
                    if self._stop.is_set():
                        break
                    item = self._convert(fr)
                    if item is not None:
                        failures = 0
                        self._put((item, time.monotonic()))
                else:
                    eof = True
            except av.error.ExitError:  # PyAV's read timeout: the source stalled
                self._put(SourceStalled(f"no frame for {self.timeout:g} s (--source-timeout)"))
                return
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                reason = error_reason(exc)
            finally:
                try:
                    container.close()
                except Exception:  # noqa: BLE001 - closing a broken stream
                    pass
            if self._stop.is_set():
                return
            if eof and not is_network(self.arg):
                self._put(_END)  # a pipe or a device ended
                return
            # A network source that ended or dropped: reopen, a bounded number of times in a
            # row. After an EOF that does not come back the stream simply ended.
            container = None
            lost, tries = reason, 0
            while failures < self.reconnects and not self._stop.is_set() and container is None:
                failures += 1
                tries += 1
                _logger.warning("%s: %s; reopening (%d of %d)", self.arg, reason, failures,
                                self.reconnects)
                time.sleep(min(1.0, self.timeout / 4))
                try:
                    container = self._open()
                    self.stats.reconnects += 1
                    self._resync()
                except (av.error.FFmpegError, OSError, ValueError) as exc:
                    reason = error_reason(exc)
            if container is None:
                if eof:
                    self._put(_END)
                elif not tries:
                    self._put(SourceFailed(f"stream lost ({lost})"))
                else:
                    self._put(SourceFailed(f"stream lost ({lost}); {tries} reopen(s) failed "
                                           f"({reason})"))
                return
            with self._lock:
                self._container = container

    def _resync(self) -> None:
        """After a reopen the source clock may restart: continue one frame after the last."""
        step = float(1 / self.rate) if self.rate else 1 / 30
        self._offset = (self._last * float(TIME_BASE)) + step
        self._t0 = None

    # ---------------------------------------------------------------------- consuming

    def next_frame(self) -> Frame | None:
        """The oldest waiting frame; None at the end of the stream. Raises SourceStalled after
        `timeout` s without a frame, SourceFailed when the source is lost for good."""
        try:
            item = self._q.get(timeout=self.timeout)
        except queue.Empty:
            raise SourceStalled(f"no frame for {self.timeout:g} s (--source-timeout)") from None
        if item is _END:
            return None
        if isinstance(item, Exception):
            raise item
        frame, self._arrived = item
        return frame

    def arrival(self, frame: Frame) -> float:
        """When the last frame handed out left the decoder (time.monotonic), for latency."""
        return self._arrived

    def close(self) -> None:
        """Stop decoding; a thread blocked in a read ends at its next timeout (daemon)."""
        self._stop.set()
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        if self._thread is not None:
            self._thread.join(timeout=0.5)
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._container is not None:
                    try:
                        self._container.close()
                    except Exception:  # noqa: BLE001
                        pass

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stdout_binary() -> Any:
    """The process's stdout as a binary stream (`-o -`)."""
    return os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
