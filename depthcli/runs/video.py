"""Depth for video files: decode → batch inference → H.264 depth video and raw exports, streamed.

`predict_video(src, base, est, opts)` is called by the predict run for each video input. This
module orchestrates; the parts live beside it: frames become depth in `runs.frame_depth`
(per-frame or temporal windows), the writers are `outputs.resumable`, clip statistics
`outputs.clipstats`, `.npy` stacks `outputs.stacks`, decoding `io.video_decode`, encoding
`io.video_encode` and `io.mp4_segments`, durable progress and resume `runs.video_resume`, the bars
`runs.video_progress`.

Outputs (`base` is the output stem, e.g. OUT/sub/clip):
- visual formats `color`, `gray`, `side` → `<base>.mp4` when only one is asked for, else
  `<base>_<format>.mp4`: H.264 (libx264, yuv420p, crf 18, faststart), which plays in browsers,
  with the source's audio (copied, or re-encoded to AAC when mp4/browsers cannot take it);
- `npy` → `<base>.npy`, float32 (T, H, W), written frame by frame (load with
  `np.load(path, mmap_mode="r")`);
- `png16`, `exr`, `pfm` → a folder `<base>_<format>/` with `000000.png`, `000001.png`, ...
  (frame numbers count decoded frames from 0).
Values follow `depthcli.outputs` (raw: model output at the source size; png16/gray/colour: the
normalised range, near = bright/warm; metric png16: millimetres).
Other per-image formats (point clouds, ...) are not written for videos (a warning says so).

Value range of visual formats (`opts.video_norm`, CLI `--video-norm`):
- `clip` (default): ONE range for the whole clip, so brightness means the same depth in every
  frame (no flicker). Pass 1 infers every frame, writes the raw exports, keeps the network-size
  depth in a temporary file in the video's partial-state folder (float16, float32 when png16
  needs the precision; the `.npy` itself is used instead when it is requested) and the clip's min/max (or
  percentiles, from an evenly spaced subsample of every frame (`outputs.clipstats`: a function of
  the frame and its number, so frame ranges run apart merge exactly), when `--range pLO,HI`). Pass 2
  upsamples each stored frame again (the same bilinear step as pass 1) and encodes the visual
  outputs; only `side` re-decodes the source, for the input frames. Disk use of the temporary
  file: frames x network pixels x 2 bytes (about 0.5 MB a frame at --input-size 518, 16:9).
- `frame`: each frame normalised on its own (the official scripts' behaviour; flickers).
- `LO,HI`: fixed range in output units. An explicit `--range LO,HI` also fixes the range.
Without visual formats (or with a fixed range) there is one pass.

Streaming: a decoder thread → bounded queue → `opts.workers` preprocessing threads (in order) →
batches of `opts.batch_size` frames (or 32-frame windows for temporal models) → the engine →
upsample → one thread per output (render + encode / file writes), each behind a bounded queue. Memory does not grow with video
length (only the per-frame pts, 16 bytes a frame, are kept for pass 2).

Timing: the output keeps the input stream's time base, average frame rate (a Fraction:
30000/1001 stays 30000/1001) and every frame's pts, so it lines up frame for frame; variable
frame rate input keeps its timestamps. mkv/webm store millisecond timestamps, which mp4 keeps
as they are (the average rate read back can then differ from the mkv's nominal rate).

Geometry: rotation metadata (phones) is applied to the frames (90-degree steps, like ffmpeg's
autorotate): depth is computed on the upright picture and every output is upright at the display
size, without rotation metadata. Odd widths/heights: H.264 4:2:0 cannot encode them, so such
mp4 outputs are H.264 High 4:4:4 (yuv444p) at the exact source size (some browsers do not play
4:4:4; even-sized sources stay 4:2:0); raw exports keep the exact size too. A non-square
sample aspect ratio is copied to the mp4 outputs.

Damage: a truncated or partly corrupt file yields every frame that decodes; the problems go to
the report's `errors` (with frame numbers) and the outputs are still complete, playable files.
Not a video / no video stream / no decodable frame → `InputError`.

Resume: every output is written inside the video's hidden partial-state folder
(`-o/.depthcli-partial/<name>/`) and moved to its final name when the video is complete, so a
killed run leaves no partial file under a final name. Progress is made durable at least every
30 s of work (`runs.video_resume`); a rerun with `--skip-existing` and the same settings
continues from the last durable point and writes the same bytes as an uninterrupted run (H.264
in fixed segments, `io.mp4_segments`). After a failure that is not an interruption the folder
is removed.

Measuring memory (peak RSS does not grow with length)::

    python -c "from depthcli.bench.memory import measure_memory; print(measure_memory(WEIGHTS, 1000))"
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import outputs
from ..engine.threads import Producer, Sink, fan_out, prefetch
from ..errors import DepthCliError, InputError
from ..io import sequence as seq
from ..io import video_decode as vio
from ..io.atomic import publish
from ..io.mp4_segments import fsync_dir
from ..outputs.clipstats import ClipStats, ShotStats
from ..outputs.ffv1 import Ffv1Writer
from ..outputs.render import RenderOptions
from ..outputs.resumable import FramesWriter, Mp4Writer, StackWriter, Writer, writer_sink
from ..outputs.sequence_out import NamedFramesWriter, SequenceNames, publish_frames
from ..outputs.sinks import FrameOut
from ..outputs.stacks import RawStack, concat_stacks
from . import clip_report, video_disk
from .frame_depth import frame_depth
from .options import parse_norm
from .paths import output_exists
from .scenecuts import SceneCuts
from .video_progress import FrameBars, VideoProgress, frame_total
from .video_ranges import Span, load_state
from .video_resume import Checkpoints, VideoState, fingerprint, segment_frames, state_folder

if TYPE_CHECKING:
    from ..engine.core import DepthEngine
    from .options import PredictOptions

_logger = logging.getLogger(__name__)

@dataclass
class VideoReport:
    """What happened to one video; `errors` are one-line reasons (the caller adds the path)."""

    frames: int = 0
    written: bool = False
    skipped: bool = False
    errors: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    clip: dict[str, object] | None = None  # a sequence's numbering, the scene cuts found


def predict_video(src: Path, base: Path, est: DepthEngine, opts: PredictOptions,
                  bars: FrameBars | None = None, resume: bool | None = None, *,
                  span: Span | None = None, join: list[Span] | None = None) -> VideoReport:
    """Depth outputs for one video file (see the module docstring); returns a report.

    `resume`: continue a partial state of the same settings (default: with --skip-existing;
    the Ray engine always, so that a video retried after a killed actor continues).
    `span`: only the first pass of that frame range, kept in its own partial-state folder
    (nothing published; the report counts its frames); `join`: the video's ranges, all done,
    taken as its first pass, then the rest as usual (`runs.video_ranges`).

    Raises InputError for inputs that are not videos (or cannot be processed at all).
    """
    src = Path(src)
    oopts = opts.output
    wanted = [f for f in oopts.formats if outputs.FORMATS[f].video]
    dropped = [f for f in oopts.formats if f not in wanted]
    if dropped:
        _logger.warning("%s: format(s) %s are per image and not written for videos", src,
                        ", ".join(dropped))
    if not wanted:
        raise InputError(f"{src}: none of the formats {', '.join(oopts.formats)} can be written "
                         f"for a video (use {', '.join(outputs.VIDEO_FORMATS)})")
    try:
        norm = parse_norm(opts.video_norm)
    except ValueError as exc:
        raise InputError(f"{src}: {exc}") from None
    names: SequenceNames | None = None
    if seq.is_pattern(src):  # an image sequence: probed first, its outputs are named by frame
        info: vio.VideoInfo = seq.probe(src, opts.max_pixels, opts.fps)
        names = SequenceNames.of(info, base, opts.sequence_npy == "frames",  # type: ignore[arg-type]
                                 opts.sequence_video)
        every = names.paths(wanted)
    else:
        every = outputs.video_paths(base, wanted)
    paths = every
    folder = video_folder = state_folder(opts.out_dir, base)
    if span is not None:
        folder = span.folder(folder)
    if opts.skip_existing:  # resume: only the missing outputs are made
        paths = {f: p for f, p in paths.items()
                 if not (names.exists(f, p) if names is not None else output_exists(p))}
        if not paths:
            _logger.info("%s: outputs exist; skipped", src)
            if folder.exists():  # killed between its last rename and the cleanup
                shutil.rmtree(folder, ignore_errors=True)
            return VideoReport(skipped=True)
    if names is None:
        info = vio.probe(src, opts.max_pixels)
    fp = video_fp = fingerprint(src, est, opts, wanted)
    if span is not None:
        fp = span.fingerprint(fp)
    state = VideoState.open(folder, fp, opts.skip_existing if resume is None else resume)
    if state.resumed:
        paths = {f: every[f] for f in state.meta["formats"]}
    try:
        run = _VideoRun(src, paths, est, opts, info, norm, bars, state, names, span)
        if join is not None and not state.resumed:
            try:
                run.join(join, video_folder, video_fp)
            except BaseException as exc:  # the ranges stay whole: a retry joins them again
                state.release() if isinstance(exc, KeyboardInterrupt) else state.remove()
                raise
        return run.run()
    except (DepthCliError, KeyboardInterrupt):
        raise
    except Exception as exc:  # one video failing must not stop the run
        _logger.debug("video failure on %s", src, exc_info=True)
        raise InputError(f"{src}: {vio.error_reason(exc)}") from exc


class _VideoRun:
    """One video through one or two passes; holds the partial outputs and writer threads."""

    def __init__(self, src: Path, paths: dict[str, Path], est: DepthEngine,
                 opts: PredictOptions, info: vio.VideoInfo, norm: str | tuple[float, float],
                 bars: FrameBars | None, state: VideoState,
                 names: SequenceNames | None = None, span: Span | None = None) -> None:
        self.src, self.paths, self.est, self.opts, self.info = src, paths, est, opts, info
        self.span = span  # a frame range only (runs.video_ranges)
        self.first = span.start if span is not None else 0
        self.names = names  # an image sequence's output names (None: a video file)
        self.bars, self.state = bars, state
        self.oopts = opts.output
        ropts = self.oopts.render
        fixed_render = ropts.mode == "fixed" and ropts.vrange is not None
        self.vrange: tuple[float, float] | None = norm if isinstance(norm, tuple) else None
        needs_range = [f for f in paths if outputs.FORMATS[f].video == "mp4"
                       or (f in ("png16", "ffv1") and not self.oopts.metric)]
        self.two_pass = norm == "clip" and not fixed_render and bool(needs_range)
        self.pass2 = needs_range if self.two_pass else []
        self.pass1 = [f for f in paths if f not in self.pass2]
        self.size = (info.height, info.width)
        self.workers = opts.host_workers(est.device_type)
        self.segment = segment_frames()
        self.ckpt = Checkpoints()
        self.pts = array("q")
        self.durations = array("q")
        self.report = VideoReport(paths=list(paths.values()))
        self.sinks: list[Sink] = []  # the running writer threads (aborted on failure)
        # the second pass recomputes the depth instead of storing it (the disk is too small)
        self.recompute = bool(state.meta.get("recompute", False))
        self.detector: SceneCuts | None = None  # --scene-cuts: the first pass's detector

    # --------------------------------------------------------------------- partial outputs

    def _part(self, fmt: str) -> Path:
        """Where the partial output of `fmt` lives in the state folder."""
        kind = outputs.FORMATS[fmt].video
        if self.names is not None and self.names.per_frame(fmt):
            return self.state.folder / fmt
        if fmt == "ffv1":
            return self.state.folder / fmt / "out.mkv"
        if fmt == "npy":
            return self.state.folder / "npy.npy"
        if kind == "mp4":
            return self.state.folder / fmt / "joined.mp4"
        return self.state.folder / fmt

    def _writer(self, fmt: str, vrange: tuple[float, float] | None, *, pending: bool) -> Writer:
        if self.names is not None and self.names.per_frame(fmt):
            info = self.info
            assert isinstance(info, seq.SequenceInfo)
            return NamedFramesWriter(fmt, self.state.folder / fmt, self.names, info.first,
                                     self.oopts, vrange)
        if fmt == "ffv1":
            return Ffv1Writer(self.state.folder / fmt, self.info, self.oopts, vrange)
        if outputs.FORMATS[fmt].video == "mp4":
            return Mp4Writer(fmt, self.state.folder / fmt, self.info, self.oopts, vrange,
                             segment=self.segment, pending=pending, first=self.first,
                             join=self.span is None)
        return FramesWriter(fmt, self.state.folder / fmt, self.oopts, vrange, first=self.first)

    def _store_dtype(self) -> type:
        return np.float32 if {"png16", "ffv1"} & set(self.pass2) else np.float16

    def _meta(self, phase: str, **extra: object) -> dict[str, object]:
        return {"phase": phase, "formats": list(self.paths), **extra}

    def _timing(self) -> dict[str, np.ndarray]:
        return {"pts": np.array(self.pts, np.int64), "dur": np.array(self.durations, np.int64)}

    def _checkpoint(self, writers: list[Writer], meta: dict[str, object],
                    arrays: dict[str, np.ndarray]) -> None:
        """Every writer's frames durable, then the state that names them; then old pending
        frames may go."""
        t0 = time.perf_counter()
        for s in self.sinks:
            s.drain()
        meta = {**meta, "writers": {w.name: w.sync() for w in writers}}
        self.state.save(meta, {**self._timing(), **arrays})
        for w in writers:
            if isinstance(w, Mp4Writer):
                w.committed()
        _logger.debug("%s: durable at frame %s of %s (%.0f ms)", self.src.name, meta["done"],
                      meta["phase"], 1000 * (time.perf_counter() - t0))

    # ------------------------------------------------------------------------------- run

    def run(self) -> VideoReport:
        phase = self.state.meta.get("phase", "pass1")
        try:
            if not self.state.resumed:  # before the first frame: does the mode fit the disk?
                self.recompute = video_disk.check(
                    self.src, self.opts.out_dir, self.state.folder, self.est, self.size,
                    self._frame_total()[0], list(self.paths), self.pass1, self.pass2,
                    two_pass=self.two_pass, segment=self.segment)
            if phase == "pass1":
                self._pass1()
            if self.span is not None:  # a frame range: its first pass is all
                self.state.release()
                self.report.frames = int(self.state.meta.get("frames", 0))
                return self.report
            if phase in ("pass1", "pass2") and self.two_pass:
                self._pass2()
            self._publish()
        except BaseException as exc:
            for s in self.sinks:
                s.abort()
            if isinstance(exc, KeyboardInterrupt):  # interrupted: the state is kept
                self.state.release()
            else:
                self.state.remove()
            raise
        self.report.written = True
        return self.report

    def _frame_total(self) -> tuple[int, bool]:
        """Frames to expect (declared or estimated); a range's own."""
        total, estimated = frame_total(self.info)
        if self.span is not None:
            total = max(0, self.span.frames(total))
        return total, estimated

    def _frames(self, log: vio.DecodeLog | None, skip: int) -> Producer[vio.Frame]:
        frames = seq.iter_frames(self.info, log, skip) if isinstance(self.info, seq.SequenceInfo) \
            else vio.iter_frames(self.info, log, skip)
        if self.span is not None and self.span.end is not None:
            frames = itertools.islice(frames, max(0, self.span.end - skip))
        return Producer(frames,
                        maxsize=self.opts.batch_size + 2 * self.workers, name="depthcli-decode")

    def _pass1(self) -> None:
        st = self.state
        writers: list[Writer] = [self._writer(f, self.vrange, pending=True) for f in self.pass1
                                 if f != "npy" or (self.names is not None
                                                   and self.names.per_frame(f))]
        npy: StackWriter | None = None
        if "npy" in self.paths and not (self.names is not None and self.names.per_frame("npy")):
            npy = StackWriter("npy", self._part("npy"), self.size, np.float32,
                              lambda it: it.depth, first=self.first)
            writers.append(npy)
        store: StackWriter | None = None
        if self.two_pass and npy is None and not self.recompute:
            store = StackWriter("store", st.folder / "store.raw", None, self._store_dtype(),
                                lambda a: a, first=self.first)
            writers.append(store)
        if self.opts.scene_cuts is not None:
            self.detector = SceneCuts(self.opts.scene_cuts)
        stats: ClipStats | ShotStats | None = None
        if self.two_pass:
            stats = ShotStats(self.oopts.render, self.detector.cuts) if self.detector \
                else ClipStats(self.oopts.render)
        log = self._infer("pass1", "pass 1/2" if self.two_pass else "frames", writers, store,
                          stats, "side" in self.pass1)
        if self.span is not None:  # a range: what the join needs, nothing published
            arrays = {**self._timing(), **({f"stats_{k}": v for k, v in stats.state().items()}
                                           if isinstance(stats, ClipStats) else {})}
            self.state.save(self._meta("range", done=self.first + len(self.pts),
                                       frames=len(self.pts), errors=log.lines(),
                                       recompute=self.recompute, ranged=[w.name for w in writers]),
                            arrays)
            return
        if not self.pts:
            raise InputError(f"{self.src}: no decodable video frames")
        extra: dict[str, object] = {"frames": len(self.pts), "errors": log.lines(),
                                    "recompute": self.recompute}
        if self.detector is not None:
            extra["cuts"] = list(self.detector.cuts)
            clip_report.log_cuts(self.src.name, self.detector.cuts, self.info, self.pts)
        if self.two_pass:
            assert stats is not None
            vrange = stats.value_range()
            _logger.info("%s: clip value range %.6g .. %.6g", self.src.name, *vrange)
            extra["vrange"] = list(vrange)
            if isinstance(stats, ShotStats):
                extra["shot_ranges"] = [list(r) for r in stats.ranges()]
            extra["source"] = "npy" if npy is not None else "store"
            if npy is not None or store is not None:
                extra["source_dtype"] = np.dtype((npy or store).dtype).str  # type: ignore[union-attr]
        self.state.save(self._meta("pass2" if self.two_pass else "publish", done=0, **extra),
                        self._timing())

    def _infer(self, phase: str, label: str, writers: list[Writer], store: Writer | None,
               stats: ClipStats | ShotStats | None, keep_image: bool) -> vio.DecodeLog:
        """A pass through the model (the first pass, or the second in recompute mode): frames
        → depth → writers, durable every checkpoint, continued from the saved state."""
        st = self.state
        first = phase == "pass1"
        cuts = self.detector if first else (
            SceneCuts(self.opts.scene_cuts) if self.opts.scene_cuts is not None else None)
        strategy = frame_depth(self.est, self.size, batch=self.opts.batch_size,
                               workers=self.workers, cuts=cuts, temporal=self.opts.temporal)
        done = self.first if first else 0
        if st.resumed and st.meta.get("phase") == phase and "writers" in st.meta:
            done = int(st.meta["done"])
            for w in writers:
                got = w.resume(st.meta["writers"][w.name])
                if got != done:
                    raise RuntimeError(f"partial {w.name} holds {got} frames, not {done}")
            if first:
                self.pts.extend(int(v) for v in st.arrays["pts"])
                self.durations.extend(int(v) for v in st.arrays["dur"])
            if stats is not None:
                stats.restore(_sub(st.arrays, "stats_"))
            strategy.restore(_sub(st.arrays, "win_"))
            _logger.info("%s: resuming at frame %d", self.src.name, done)
        elif not first:  # a second pass starting: whatever a killed attempt left goes
            for w in writers:
                w.resume({"count": 0, "segments": 0})
        store_sink = None
        outs: list[Sink] = []
        for w in writers:
            sink = writer_sink(w, indexed=w is not store)
            self.sinks.append(sink)
            if w is store:
                store_sink = sink
            else:
                outs.append(sink)
        base_meta = {k: v for k, v in st.meta.items() if k not in ("phase", "writers", "done")}
        log = vio.DecodeLog(self.src)
        total = self._frame_total() if first else (len(self.pts), False)
        prog = VideoProgress(self.src.name, label, total, self.bars, start=done - self.first)
        producer = self._frames(log, done)
        self.ckpt.start(done)
        try:
            for fr, full, compact in strategy.depths(producer):
                if stats is not None:
                    stats.update(full, fr.index)
                if store_sink is not None:
                    store_sink.put(compact)
                if outs:
                    fan_out(outs, FrameOut(fr.index, fr.pts, fr.duration, full,
                                           fr.bgr if keep_image else None,
                                           self._shot_range(fr.index)))
                if first:
                    self.pts.append(fr.pts)
                    self.durations.append(fr.duration)
                done += 1
                prog.step()
                if self.ckpt.due(done):
                    carried = strategy.state(done)
                    if carried is not None:
                        arrays = {f"win_{k}": v for k, v in carried.items()}
                        if stats is not None:
                            arrays.update({f"stats_{k}": v for k, v in stats.state().items()})
                        meta = self._meta(phase, done=done, recompute=self.recompute) if first \
                            else {**base_meta, "phase": phase, "done": done}
                        self._checkpoint(writers, meta, arrays)
                        self.ckpt.start(done)
        finally:
            producer.close()
            prog.close()
        for s in self.sinks:
            s.finish()
        self.sinks = []
        prog.done()
        return log

    def _pass2_recompute(self) -> None:
        """The second pass without stored depth: the model runs again (twice the compute)."""
        st = self.state
        vrange = (float(st.meta["vrange"][0]), float(st.meta["vrange"][1]))
        writers = [self._writer(f, vrange, pending=True) for f in self.pass2]
        meta = {k: v for k, v in st.meta.items() if k not in ("phase", "writers", "done")}
        self._infer("pass2", "pass 2/2", writers, None, None, "side" in self.pass2)
        self.state.save({**meta, "phase": "publish", "done": 0}, self._timing())

    def _pass2(self) -> None:
        st = self.state
        if not len(self.pts):
            self.pts.extend(int(v) for v in st.arrays["pts"])
            self.durations.extend(int(v) for v in st.arrays["dur"])
        if st.meta.get("recompute"):
            self._pass2_recompute()
            return
        vrange = (float(st.meta["vrange"][0]), float(st.meta["vrange"][1]))
        src_path = self._part("npy") if st.meta["source"] == "npy" else st.folder / "store.raw"
        source = RawStack.existing(src_path, np.dtype(st.meta["source_dtype"]))
        lowres = st.meta["source"] == "store"
        strategy = frame_depth(self.est, self.size, batch=self.opts.batch_size,
                               workers=self.workers, temporal=self.opts.temporal) \
            if lowres else None
        writers = [self._writer(f, vrange, pending=False) for f in self.pass2]
        saved = st.meta.get("writers", {}) if st.meta.get("phase") == "pass2" else {}
        start = min(w.resume(saved.get(w.name, {"count": 0, "segments": 0})) for w in writers)
        self.sinks = [writer_sink(w) for w in writers]
        read = source.reader()
        prog = VideoProgress(self.src.name, "pass 2/2", (source.count, False), self.bars,
                             start=start)
        producer = self._frames(None, start) if "side" in self.pass2 else None
        images = iter(producer) if producer is not None else None
        missing: int | None = None

        def load(i: int) -> np.ndarray:
            d = read(i)
            if strategy is not None and strategy.lowres:
                return strategy.expand(d.astype(np.float32))
            return d.astype(np.float32, copy=False)

        meta = {k: v for k, v in st.meta.items() if k not in ("phase", "writers", "done")}
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="depthcli-load")
        self.ckpt.start(start)
        try:
            for i, fut in prefetch(load, range(start, source.count), pool, 2 * self.workers,
                                   ordered=True):
                image = None
                if images is not None:
                    fr = next(images, None)
                    if fr is None and missing is None:
                        missing = i
                    image = fr.bgr if fr is not None else np.zeros((*self.size, 3), np.uint8)
                fan_out(self.sinks, FrameOut(i, self.pts[i], self.durations[i], fut.result(),
                                             image, self._shot_range(i)))
                prog.step()
                if self.ckpt.due(i + 1):
                    self._checkpoint(writers, {**meta, "phase": "pass2", "done": i + 1}, {})
                    self.ckpt.start(i + 1)
        finally:
            if producer is not None:
                producer.close()
            pool.shutdown(wait=True, cancel_futures=True)
            read.close()  # type: ignore[attr-defined]
            prog.close()
        for s in self.sinks:
            s.finish()
        self.sinks = []
        prog.done()
        if missing is not None:
            meta["errors"] = [*meta.get("errors", []),
                              f"side: the input frames from frame {missing} on could not be "
                              "decoded again; they are black"]
        self.state.save({**meta, "phase": "publish", "done": 0}, self._timing())

    def join(self, spans: list[Span], video_folder: Path, video_fp: str) -> None:
        """The finished frame ranges of this video as its first pass (`runs.video_ranges`):
        afterwards the state folder holds what `_pass1` leaves, byte for byte."""
        parts = []
        for sp in spans:
            got = load_state(sp.folder(video_folder))
            if got is None or got[0].get("phase") != "range" or \
                    got[0].get("fingerprint") != sp.fingerprint(video_fp):
                raise RuntimeError(f"frame range {sp.index + 1} of {sp.count} is not done")
            parts.append((sp, sp.folder(video_folder), *got))
        counts = [int(meta["frames"]) for _, _, meta, _ in parts]
        for (sp, _, _, _), n, later in zip(parts, counts, counts[1:], strict=False):
            planned = sp.frames(0)
            if n != planned and later:  # a range ended early, yet the next has frames
                raise RuntimeError(f"frame range {sp.index + 1} has {n} of {planned} frames")
        for _, _, _, arrays in parts:
            self.pts.extend(int(v) for v in arrays["pts"])
            self.durations.extend(int(v) for v in arrays["dur"])
        if not self.pts:
            raise InputError(f"{self.src}: no decodable video frames")
        self.recompute = any(bool(meta.get("recompute")) for _, _, meta, _ in parts)
        live = [(sp, folder) for (sp, folder, _, _), n in zip(parts, counts, strict=True) if n]
        st = self.state.folder
        npy = "npy" in self.paths
        for f in self.pass1:
            if f == "npy":
                concat_stacks(self._part("npy"), [fo / "npy.npy" for _, fo in live], np.float32)
            elif outputs.FORMATS[f].video == "mp4":  # one pass: segments renumbered, joined
                w = self._writer(f, self.vrange, pending=False)
                assert isinstance(w, Mp4Writer)
                for sp, fo in live:
                    base = sp.start // self.segment
                    for seg in sorted((fo / f).glob("seg*.pkt")):
                        _link(seg, st / f / f"seg{base + int(seg.stem[3:]):06d}.pkt")
                w.mp4.segments = math.ceil(len(self.pts) / self.segment)
                w.mp4.join(w.out)
            else:  # frame files, named by the clip's frame numbers already
                (st / f).mkdir(parents=True, exist_ok=True)
                for _, fo in live:
                    for p in sorted((fo / f).iterdir()):
                        _link(p, st / f / p.name)
        extra: dict[str, object] = {"frames": len(self.pts), "errors": parts[-1][2]["errors"],
                                    "recompute": self.recompute}
        if self.two_pass:
            stats = ClipStats.merge(self.oopts.render, [
                _restored(self.oopts.render, _sub(arrays, "stats_")) for *_, arrays in parts])
            vrange = stats.value_range()
            _logger.info("%s: clip value range %.6g .. %.6g", self.src.name, *vrange)
            extra["vrange"] = list(vrange)
            extra["source"] = "npy" if npy else "store"
            if npy:
                extra["source_dtype"] = np.dtype(np.float32).str
            elif not self.recompute:
                dtype = self._store_dtype()
                concat_stacks(st / "store.raw", [fo / "store.raw" for _, fo in live], dtype)
                extra["source_dtype"] = np.dtype(dtype).str
        self.state.save(self._meta("pass2" if self.two_pass else "publish", done=0, **extra),
                        self._timing())
        for d in (st / f for f in self.pass1 if (st / f).is_dir()):  # the links durable
            fsync_dir(d)
        for _, folder, _, _ in parts:  # their frames are the video's now
            shutil.rmtree(folder, ignore_errors=True)
        _logger.info("%s: %d frame ranges joined (%d frames)", self.src.name, len(parts),
                     len(self.pts))

    def _shot_range(self, index: int) -> tuple[float, float] | None:
        return clip_report.shot_range(self.state.meta, index)

    def _publish(self) -> None:
        """Every finished output to its final name, then the state folder goes."""
        meta = self.state.meta
        if not len(self.pts) and "pts" in self.state.arrays:
            self.pts.extend(int(v) for v in self.state.arrays["pts"])
        published: list[Path] = []
        for f, dst in self.paths.items():
            part = self._part(f)
            if not part.exists():
                continue
            if self.names is not None and self.names.per_frame(f):
                published += publish_frames(part, dst.parent)
            else:
                publish(part, dst)
                published.append(dst)
        if self.names is not None:
            self.report.paths = published
        self.report.clip = clip_report.clip_entry(meta, self.info, self.pts)
        self.report.frames = int(meta.get("frames", len(self.pts)))
        self.report.errors.extend(meta.get("errors", []))
        for left in self.state.folder.parent.glob(f"{self.state.folder.name}.range*of*"):
            shutil.rmtree(left, ignore_errors=True)  # ranges of a split run of other settings
        self.state.remove()


def _sub(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _link(src: Path, dst: Path) -> None:
    """`src` also as `dst` (a hard link; a copy where links are refused): a join killed half
    way leaves its ranges whole, and the retry starts the join again."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _restored(ropts: RenderOptions, state: dict[str, np.ndarray]) -> ClipStats:
    stats = ClipStats(ropts)
    stats.restore(state)
    return stats
