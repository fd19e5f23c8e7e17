"""Depth for a live source: frames as they come, depth for each as soon as it can, outputs that
are playable while they grow.

Source → `io.live.LiveSource` (a decoder thread, a small queue that drops the oldest frame when
depth falls behind) → one frame at a time through the model (per-frame models with batch 1;
Video Depth Anything in its streaming mode, `engine.stream`) → the writers:

- visual formats (`color`, `gray`, `side`): H.264 in fragmented MP4 (`<stem>.mp4`, a fragment
  per keyframe, one a second: a player opens it while it grows, and a run that is killed keeps
  every finished fragment), or MPEG-TS on stdout with `-o -`, or streamed to `-o URL`
  (MPEG-TS for udp/tcp/srt, FLV for rtmp); a receiver that goes away ends the run with one
  line (`OutputFailed`);
- `npy`: the (T, H, W) stack, its header written at the end (a run that is killed outright
  leaves a header-less file; Ctrl-C/SIGTERM finish it);
- `png16`, `exr`, `pfm`: numbered frames in `<stem>_<format>/`, each complete as it appears.

The value range of visual formats is each frame's own, or fixed with `--video-norm LO,HI` (a
live clip has no end to take a range over). Timestamps are the source's, from 0 at its first
frame, in microseconds; dropped frames leave gaps in time, not black frames.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from .. import outputs
from ..io.live import (
    TIME_BASE,
    LiveSource,
    SourceFailed,
    SourceStalled,
    live_stem,
    output_format,
    output_target,
)
from ..io.video_decode import Frame, error_reason
from ..io.video_encode import x264_options
from ..outputs.resumable import FramesWriter
from ..outputs.sinks import FrameOut
from ..outputs.stacks import RawStack
from .options import parse_norm
from .summary import Summary

if TYPE_CHECKING:
    from ..engine.core import DepthEngine
    from .options import PredictOptions

_logger = logging.getLogger(__name__)
FRAGMENT_S = 1.0  # a keyframe (and an MP4 fragment) every second


@dataclass
class LiveOptions:
    source: str
    timeout: float = 10.0  # --source-timeout
    reconnects: int = 3  # --reconnect
    queue: int = 2  # frames waiting for the model before the oldest is dropped
    to_stdout: bool = False  # -o -: one visual format, MPEG-TS on stdout
    stdout: Any = None  # the binary stream for -o -
    url: str | None = None  # -o URL: one visual format streamed there

    @property
    def streamed(self) -> bool:
        return self.to_stdout or self.url is not None


@dataclass
class LiveSummary(Summary):
    """The run's summary plus what a live source adds: drops, reopens, latency."""

    decoded: int = 0  # frames the source gave (= frames + dropped)
    dropped: int = 0
    reconnects: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    terminated: bool = False  # SIGTERM (exit 143) rather than Ctrl-C (130)

    def line(self) -> str:
        lat = (f", latency {self.latency_ms['mean']:.0f} ms mean / "
               f"{self.latency_ms['p95']:.0f} ms p95" if self.latency_ms else "")
        return (super().line() + f"; dropped {self.dropped} frame(s) (depth slower than the "
                f"source), reopened {self.reconnects} time(s){lat}")


class OutputFailed(Exception):
    """A streamed output (a URL, stdout) cannot take more: the receiver went away."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"{target}: {reason}")
        self.target, self.reason = target, reason


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interruption so that the outputs are finished the same way."""


class _Signals:
    """Ctrl-C and SIGTERM as exceptions, held back while one frame goes to the writers and the
    count: a signal between two writers would leave the mp4 and the frame folder one frame
    apart, and both one ahead of the summary. Outside `held()` a signal raises at once."""

    def __init__(self) -> None:
        self._hold = False
        self._pending: KeyboardInterrupt | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: the defaults stay
                return

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _on_signal(self, signum: int, frame: object) -> None:
        exc = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        if not self._hold:
            raise exc
        self._pending = self._pending or exc

    @contextmanager
    def held(self) -> Iterator[None]:
        self._hold = True
        try:
            yield
        finally:
            self._hold = False
        if self._pending is not None:
            exc, self._pending = self._pending, None
            raise exc


class LiveVideo:
    """H.264 of BGR frames with µs timestamps: fragmented MP4 to a file, MPEG-TS to a binary
    stream, or MPEG-TS/FLV to a URL (`str`; opened, and refused, at the first frame)."""

    def __init__(self, target: Path | str | Any, size: tuple[int, int], rate: Fraction,
                 timeout: float = 10.0) -> None:
        h, w = size
        self.name = str(target) if isinstance(target, (Path, str)) else "stdout"
        if isinstance(target, Path):
            self.container = av.open(str(target), "w", format="mp4", options={
                "movflags": "+frag_keyframe+empty_moov+default_base_moof",
                "flush_packets": "1"})
        elif isinstance(target, str):  # every packet leaves at once, as for a stream
            self.container = av.open(output_target(target, timeout), "w",
                                     format=output_format(target),
                                     options={"flush_packets": "1"})
        else:  # every packet leaves at once: a reader of the stream is not held back
            self.container = av.open(target, "w", format="mpegts",
                                     options={"flush_packets": "1"})
        gop = max(1, round(float(rate) * FRAGMENT_S))
        vs = self.container.add_stream("libx264", rate=rate, options={
            **x264_options(18, "veryfast"), "tune": "zerolatency", "g": str(gop),
            "keyint_min": str(gop)})
        vs.width, vs.height = w, h
        vs.pix_fmt = "yuv420p" if not (w & 1 or h & 1) else "yuv444p"
        vs.time_base = TIME_BASE
        vs.codec_context.time_base = TIME_BASE
        vs.codec_context.colorspace = 6  # BT.601, limited range: what swscale writes
        vs.codec_context.color_range = 1
        self.stream = vs

    def write(self, img: np.ndarray, pts: int) -> None:
        fmt = "gray" if img.ndim == 2 else "bgr24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=fmt)
        frame.pts, frame.time_base = pts, TIME_BASE
        for p in self.stream.encode(frame):
            self.container.mux(p)

    def close(self) -> None:
        try:
            for p in self.stream.encode(None):
                self.container.mux(p)
        finally:
            self.container.close()

    def abandon(self) -> None:
        """Close without the encoder's last frames or a trailer: the receiver is gone."""
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - writing to a broken stream fails again
            pass


def free_stem(out_dir: Path, stem: str, formats: list[str]) -> Path:
    """`OUT/<stem>`, or `OUT/<stem>-2`, ... when an earlier run's outputs are there (a live
    run never replaces them)."""
    n = 1
    while True:
        base = out_dir / (stem if n == 1 else f"{stem}-{n}")
        if not any(p.exists() for p in outputs.video_paths(base, formats).values()):
            return base
        n += 1


class LiveOutputs:
    """Every output of one live run; `close()` leaves each one finished and playable."""

    def __init__(self, opts: PredictOptions, lopts: LiveOptions, size: tuple[int, int],
                 rate: Fraction, vrange: tuple[float, float] | None) -> None:
        self.oopts, self.vrange = opts.output, vrange
        fmts = [f for f in opts.output.formats if outputs.FORMATS[f].video]
        self.videos: list[tuple[str, LiveVideo]] = []
        self.frames: list[FramesWriter] = []
        self.stack: RawStack | None = None
        self.paths: list[Path] = []
        self.need_image = "side" in fmts
        self.streamed = lopts.streamed
        self.failures: list[tuple[str, str]] = []  # (output, reason) of close()
        if lopts.streamed:
            target = lopts.url if lopts.url is not None else lopts.stdout
            self.videos.append((fmts[0], LiveVideo(target, self._size(fmts[0], size), rate,
                                                   lopts.timeout)))
            return
        opts.out_dir.mkdir(parents=True, exist_ok=True)
        base = free_stem(opts.out_dir, live_stem(lopts.source), fmts)
        for f, p in outputs.video_paths(base, fmts).items():
            kind = outputs.FORMATS[f].video
            if kind == "mp4":
                self.videos.append((f, LiveVideo(p, self._size(f, size), rate)))
            elif kind == "npy":
                self.stack = RawStack(p, size, np.float32)
            elif kind == "frames":
                self.frames.append(FramesWriter(f, p, opts.output, vrange))
            else:
                _logger.warning("%s: format %s is not written for live sources", lopts.source, f)
                continue
            self.paths.append(p)

    @staticmethod
    def _size(fmt: str, size: tuple[int, int]) -> tuple[int, int]:
        h, w = size
        return (h, 2 * w + 50) if fmt == "side" else (h, w)

    def write(self, fr: Frame, depth: np.ndarray) -> None:
        for f, v in self.videos:
            img = outputs.encode_visual(f, depth, fr.bgr, self.oopts, self.vrange)
            if not self.streamed:
                v.write(img, fr.pts)
                continue
            try:
                v.write(img, fr.pts)
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                self.videos.remove((f, v))
                v.abandon()
                raise OutputFailed(v.name, error_reason(exc)) from None
        for w in self.frames:
            w.take(FrameOut(fr.index, fr.pts, 0, depth, None))
        if self.stack is not None:
            self.stack.append(depth.astype(np.float32, copy=False))

    def close(self) -> None:
        """Finish every output; what cannot be finished is in `failures` (one line each)."""
        for _, v in self.videos:
            try:
                v.close()
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                v.abandon()  # close the others all the same
                self.failures.append((v.name, error_reason(exc)))
        self.videos.clear()
        if self.stack is not None:
            self.stack.close()
        for w in self.frames:
            w.finish()


def depth_function(est: DepthEngine, size: tuple[int, int], temporal: bool
                   ) -> Callable[[np.ndarray], np.ndarray]:
    """BGR frame → (H, W) depth: VDA streaming, or a per-frame model with batch 1."""
    if temporal:
        from ..engine.stream import Stepper

        return Stepper(est, size)
    return lambda bgr: est.infer_frame(bgr, size)


def run_live(opts: PredictOptions, lopts: LiveOptions, est: DepthEngine,
             summary: LiveSummary) -> None:
    """One live source until its end, a stall, a lost connection, Ctrl-C or SIGTERM; the
    outputs are finished whatever ends it. Failures go to `summary` (one line)."""
    t_start = time.perf_counter()
    norm = parse_norm(opts.video_norm)
    vrange = norm if isinstance(norm, tuple) else None
    if opts.output.render.mode == "fixed" and opts.output.render.vrange is not None:
        vrange = None  # --range LO,HI: the renderer fixes it itself
    src = LiveSource(lopts.source, timeout=lopts.timeout, reconnects=lopts.reconnects,
                     queue_size=lopts.queue, max_pixels=opts.max_pixels)
    signals = _Signals()
    signals.install()
    outs: LiveOutputs | None = None
    latencies: list[float] = []
    try:
        src.open()
        depth_of: Callable[[np.ndarray], np.ndarray] | None = None
        while True:
            fr = src.next_frame()
            if fr is None:
                break
            if outs is None:
                size = (int(fr.bgr.shape[0]), int(fr.bgr.shape[1]))
                depth_of = depth_function(est, size, bool(getattr(est.spec, "temporal", False)))
                rate = src.rate if src.rate else Fraction(30)
                outs = LiveOutputs(opts, lopts, size, Fraction(rate).limit_denominator(1001),
                                   vrange)
            assert depth_of is not None
            depth = depth_of(fr.bgr)
            with signals.held():  # every output and the count: the same frames
                outs.write(fr, depth)
                summary.add_frames(1)
            latencies.append(time.monotonic() - src.arrival(fr))
    except (SourceStalled, SourceFailed) as exc:
        summary.fail(lopts.source, str(exc))
    except OutputFailed as exc:
        summary.fail(exc.target, exc.reason)
    except Terminated:
        summary.interrupted = summary.terminated = True
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        signals.restore()
        src.close()
        if outs is not None:
            outs.close()
            for target, reason in outs.failures:
                if not summary.failed:  # one line: the first thing that went wrong
                    summary.fail(target, reason)
            if outs.paths or not summary.failed:  # a stream that failed was not delivered
                summary.add_written(outs.paths, n=1, video=True)
        summary.dropped = src.stats.dropped
        summary.decoded = src.stats.decoded
        summary.reconnects = src.stats.reconnects
        if latencies:
            lat = np.asarray(latencies) * 1000
            summary.latency_ms = {"mean": round(float(lat.mean()), 1),
                                  "p95": round(float(np.percentile(lat, 95)), 1)}
        summary.seconds = time.perf_counter() - t_start
        if outs is None and not summary.failed and not summary.interrupted:
            summary.fail(lopts.source, "the stream ended before its first frame")
