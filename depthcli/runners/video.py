"""Depth for video files: decode → batch inference → H.264 depth video and raw exports, streamed.

`predict_video(src, base, est, opts)` is called by the predict run for each video input. This
module orchestrates; the parts live beside it: frames become depth in `runners.frame_depth`
(per-frame or temporal windows), the writers are `outputs.sinks`, clip statistics
`outputs.clipstats`, `.npy` stacks `outputs.stacks`, decoding/encoding `io.video`.

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
  depth in a temporary file in the output folder (float16, float32 when png16 needs the
  precision; the `.npy` itself is used instead when it is requested) and the clip's min/max (or
  percentiles, from an evenly spaced subsample of every frame, when `--range pLO,HI`). Pass 2
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
Not a video / no video stream / no decodable frame → `InputError`. All outputs are written under
temporary names in their folder and renamed when complete, so a killed run leaves no partial
file under a final name (temporaries are `.<name>.<random>.tmp`, which discovery ignores).

Measuring memory (peak RSS does not grow with length)::

    python -c "from depthcli.bench.memory import measure_memory; print(measure_memory(WEIGHTS, 1000))"
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import outputs
from ..errors import DepthCliError, InputError, strip_path
from ..io import video as vio
from ..io.atomic import as_disk_full, atomic_dir, atomic_path, is_disk_full
from ..outputs.clipstats import ClipStats
from ..outputs.sinks import FrameOut, frames_sink, mp4_sink, stack_sink, visual_sink
from ..outputs.stacks import RawStack
from ..threads import Producer, Sink, fan_out, prefetch
from .frame_depth import FrameDepth, frame_depth
from .options import parse_norm
from .paths import output_exists
from .video_progress import FrameBars, VideoProgress, frame_total

if TYPE_CHECKING:
    from ..engine import DepthEstimator
    from ..io.images import InputItem
    from .options import PredictOptions
    from .run import RunState

_logger = logging.getLogger(__name__)

@dataclass
class VideoReport:
    """What happened to one video; `errors` are one-line reasons (the caller adds the path)."""

    frames: int = 0
    written: bool = False
    skipped: bool = False
    errors: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


def run_video(item: InputItem, base: Path, opts: PredictOptions, est: DepthEstimator,
              run: RunState) -> None:
    """One video of a `predict` run: outputs, then its lines in the run's summary."""
    try:
        rep = predict_video(item.src, base, est, opts, run.frame_bars)
    except DepthCliError as exc:
        if is_disk_full(exc):
            raise as_disk_full(exc, item.src) from exc
        run.fail(str(item.src), strip_path(str(exc), str(item.src)))
        return
    except Exception as exc:  # a damaged file must cost one line, not the run
        if is_disk_full(exc):
            raise as_disk_full(exc, item.src) from exc
        _logger.debug("unexpected failure on %s", item.src, exc_info=True)  # -vv
        run.fail(str(item.src), f"cannot process video ({type(exc).__name__}: {exc})")
        return
    finally:
        run.progress(1)
    if rep.skipped:
        run.skipped()
        return
    run.frames(rep.frames)
    if rep.written:
        run.written(rep.paths, item.src, video=True)
    for i, reason in enumerate(rep.errors):
        if i == 0:  # one failed input, however many lines describe it
            run.fail(str(item.src), reason)
        else:
            run.error_line(str(item.src), reason)


def predict_video(src: Path, base: Path, est: DepthEstimator, opts: PredictOptions,
                  bars: FrameBars | None = None) -> VideoReport:
    """Depth outputs for one video file (see the module docstring); returns a report.

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
    paths = outputs.video_paths(base, wanted)
    if opts.skip_existing:  # resume: only the missing outputs are made
        paths = {f: p for f, p in paths.items() if not output_exists(p)}
        if not paths:
            _logger.info("%s: outputs exist; skipped", src)
            return VideoReport(skipped=True)
    info = vio.probe(src, opts.max_pixels)
    try:
        return _VideoRun(src, paths, est, opts, info, norm, bars).run()
    except (DepthCliError, KeyboardInterrupt):
        raise
    except Exception as exc:  # one video failing must not stop the run
        _logger.debug("video failure on %s", src, exc_info=True)
        raise InputError(f"{src}: {vio.error_reason(exc)}") from exc


class _VideoRun:
    """One video through one or two passes; holds the temporaries and writer threads."""

    def __init__(self, src: Path, paths: dict[str, Path], est: DepthEstimator,
                 opts: PredictOptions, info: vio.VideoInfo,
                 norm: str | tuple[float, float], bars: FrameBars | None = None) -> None:
        self.src, self.paths, self.est, self.opts, self.info = src, paths, est, opts, info
        self.bars = bars
        self.oopts = opts.output
        ropts = self.oopts.render
        fixed_render = ropts.mode == "fixed" and ropts.vrange is not None
        self.vrange: tuple[float, float] | None = norm if isinstance(norm, tuple) else None
        needs_range = [f for f in paths if outputs.FORMATS[f].video == "mp4"
                       or (f == "png16" and not self.oopts.metric)]
        self.two_pass = norm == "clip" and not fixed_render and bool(needs_range)
        self.pass2 = needs_range if self.two_pass else []
        self.pass1 = [f for f in paths if f not in self.pass2]
        self.size = (info.height, info.width)
        self.workers = opts.host_workers(est.device.type)
        self.pts = array("q")
        self.durations = array("q")
        self.report = VideoReport(paths=list(paths.values()))

    def _temp(self, stack: contextlib.ExitStack, fmt: str) -> Path:
        dst = self.paths[fmt]
        if outputs.FORMATS[fmt].video == "frames":
            return stack.enter_context(atomic_dir(dst))
        return stack.enter_context(atomic_path(dst))

    @staticmethod
    def _abort_on_error(stack: contextlib.ExitStack, sinks: list[Sink]) -> None:
        """Registered after the temporaries: on failure, stop threads before files go."""
        def cleanup(exc_type: object, exc: object, tb: object) -> bool:
            if exc_type is not None:
                for s in sinks:
                    s.abort()
            return False

        stack.push(cleanup)

    def _pass1_sinks(self, stack: contextlib.ExitStack, tmps: dict[str, Path],
                     sinks: list[Sink]) -> tuple[RawStack | None, RawStack | None]:
        """Writers of pass 1 (into `sinks`); returns the npy stack and the pass-2 store."""
        for f in self.pass1:
            if outputs.FORMATS[f].video == "mp4":
                sinks.append(mp4_sink(f, tmps[f], self.info, self.oopts, self.vrange))
            elif outputs.FORMATS[f].video == "frames":
                sinks.append(frames_sink(f, tmps[f], self.oopts, self.vrange))
        npy: RawStack | None = None
        if "npy" in self.paths:
            npy = RawStack(tmps["npy"], self.size, np.float32)
            sinks.append(stack_sink("npy", npy, lambda it: it.depth))
        store: RawStack | None = None
        if self.two_pass and npy is None:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{self.src.name}.{os.getpid()}.",
                                            suffix=".depth.tmp",
                                            dir=self.paths[self.pass2[0]].parent)
            os.close(fd)
            stack.callback(_unlink, Path(tmp_name))
            precise = "png16" in self.pass2
            store = RawStack(Path(tmp_name), None, np.float32 if precise else np.float16)
            sinks.append(stack_sink("store", store, lambda it: it))
        return npy, store

    def run(self) -> VideoReport:
        with contextlib.ExitStack() as stack:
            tmps = {f: self._temp(stack, f) for f in self.paths}
            sinks: list[Sink] = []
            self._abort_on_error(stack, sinks)
            npy, store = self._pass1_sinks(stack, tmps, sinks)
            stats = ClipStats(self.oopts.render) if self.two_pass else None
            strategy = frame_depth(self.est, self.size, batch=self.opts.batch_size,
                                   workers=self.workers,
                                   need_full=any(s.name != "store" for s in sinks))
            self._pass1(strategy, sinks, stats, store)
            if self.report.frames == 0:
                raise InputError(f"{self.src}: no decodable video frames")
            if self.two_pass:
                assert stats is not None
                vrange = stats.value_range()
                _logger.info("%s: clip value range %.6g .. %.6g", self.src.name, *vrange)
                source = npy if npy is not None else store
                assert source is not None
                p2: list[Sink] = []
                self._abort_on_error(stack, p2)
                p2 += [visual_sink(f, tmps[f], self.info, self.oopts, vrange) for f in self.pass2]
                self._pass2(p2, source, strategy if source is store else None)
            self.report.written = True
        return self.report

    def _frames(self, log: vio.DecodeLog | None) -> Producer[vio.Frame]:
        return Producer(vio.iter_frames(self.info, log),
                        maxsize=self.opts.batch_size + 2 * self.workers, name="depthcli-decode")

    def _pass1(self, strategy: FrameDepth, sinks: list[Sink], stats: ClipStats | None,
               store: RawStack | None) -> None:
        log = vio.DecodeLog(self.src)
        keep_image = "side" in self.pass1
        outs = [s for s in sinks if s.name != "store"]
        store_sink = next((s for s in sinks if s.name == "store"), None)
        prog = VideoProgress(self.src.name, "pass 1/2" if self.two_pass else "frames",
                             frame_total(self.info), self.bars)
        producer = self._frames(log)
        try:
            for fr, full, compact in strategy.depths(producer):
                if stats is not None:
                    stats.update(torch.from_numpy(full) if full is not None
                                 else strategy.frame_tensor(compact))
                if store_sink is not None:
                    store_sink.put(compact.float().cpu().numpy())
                if full is not None:
                    fan_out(outs, FrameOut(fr.index, fr.pts, fr.duration, full,
                                           fr.bgr if keep_image else None))
                self.pts.append(fr.pts)
                self.durations.append(fr.duration)
                prog.step()
        finally:
            producer.close()
            prog.close()
        for s in sinks:
            s.finish()
        prog.done()
        self.report.frames = len(self.pts)
        self.report.errors.extend(log.lines())

    def _pass2(self, sinks: list[Sink], source: RawStack, strategy: FrameDepth | None) -> None:
        read = source.reader()
        prog = VideoProgress(self.src.name, "pass 2/2", (source.count, False), self.bars)
        producer = self._frames(None) if "side" in self.pass2 else None  # input frames again
        images = iter(producer) if producer is not None else None
        missing: int | None = None

        def load(i: int) -> np.ndarray:
            d = read(i)
            if strategy is not None and strategy.lowres:
                return strategy.expand(torch.from_numpy(d.astype(np.float32)))
            return d.astype(np.float32, copy=False)

        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="depthcli-load")
        try:
            for i, fut in prefetch(load, range(source.count), pool, 2 * self.workers,
                                   ordered=True):
                image = None
                if images is not None:
                    fr = next(images, None)
                    if fr is None and missing is None:
                        missing = i
                    image = fr.bgr if fr is not None else np.zeros((*self.size, 3), np.uint8)
                fan_out(sinks, FrameOut(i, self.pts[i], self.durations[i], fut.result(), image))
                prog.step()
        finally:
            if producer is not None:
                producer.close()
            pool.shutdown(wait=True, cancel_futures=True)
            read.close()  # type: ignore[attr-defined]
            prog.close()
        for s in sinks:
            s.finish()
        prog.done()
        if missing is not None:
            self.report.errors.append(f"side: the input frames from frame {missing} on could not "
                                      "be decoded again; they are black")


def _unlink(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        p.unlink()
