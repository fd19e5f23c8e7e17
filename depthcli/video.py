"""Depth for video files: decode → batch inference → H.264 depth video and raw exports, streamed.

`predict_video(src, base, est, opts)` is called by the predict pipeline for each video input.

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

Value range of visual formats (`opts.video["norm"]`, CLI `--video-norm`):
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
batches of `opts.batch_size` frames → `forward_batch` → upsample → one thread per output
(render + encode / file writes), each behind a bounded queue. Memory does not grow with video
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

    python -c "from depthcli.video import measure_memory; print(measure_memory(WEIGHTS, 1000))"
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import outputs, render
from .errors import DepthCliError, InputError
from .io import video as vio
from .io.atomic import atomic_path
from .io.png import encode_png
from .transforms import upsample

if TYPE_CHECKING:
    from .engine import DepthEstimator
    from .pipeline import PredictOptions

_logger = logging.getLogger(__name__)

VISUAL_FORMATS = ("color", "gray", "side")
SEQUENCE_FORMATS = {"png16": ".png", "exr": ".exr", "pfm": ".pfm"}
LOG_EVERY_S = 10.0
PERCENTILE_SAMPLE = 1 << 18  # values kept for clip percentiles
_END = object()


@dataclass
class VideoReport:
    """What happened to one video; `errors` are one-line reasons (the caller adds the path)."""

    frames: int = 0
    written: bool = False
    skipped: bool = False
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- names, options

def output_paths(base: Path, formats: Iterable[str]) -> dict[str, Path]:
    """Final output per format: mp4 files, the npy file, or frame folders (see module doc)."""
    formats = list(formats)
    visual = [f for f in formats if f in VISUAL_FORMATS]
    paths: dict[str, Path] = {}
    for f in formats:
        if f in VISUAL_FORMATS:
            name = base.name + (".mp4" if len(visual) == 1 else f"_{f}.mp4")
        elif f == "npy":
            name = base.name + ".npy"
        elif f in SEQUENCE_FORMATS:
            name = f"{base.name}_{f}"
        else:
            continue
        paths[f] = base.parent / name
    return paths


def parse_norm(value: object) -> str | tuple[float, float]:
    """'clip' | 'frame' | 'LO,HI' → 'clip' | 'frame' | (lo, hi); ValueError otherwise."""
    text = str(value if value is not None else "clip").strip().lower()
    if text in ("clip", "", "auto"):
        return "clip"
    if text == "frame":
        return "frame"
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"video norm {value!r}: use clip, frame or LO,HI") from None
    if not hi > lo:
        raise ValueError(f"video norm {value!r}: HI must be above LO")
    return lo, hi


def _exists(path: Path) -> bool:
    """A finished output is present (every output is renamed into place when complete)."""
    try:
        if path.suffix in (".mp4", ".npy"):
            return path.is_file() and path.stat().st_size > 0
        return path.is_dir()
    except OSError:
        return False


# ------------------------------------------------------------------------------- plumbing

class _Producer:
    """Runs an iterator in a thread, handing items over through a bounded queue."""

    def __init__(self, it: Iterable[Any], maxsize: int, name: str) -> None:
        self._it = it
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        it = iter(self._it)
        try:
            for item in it:
                if not self._put(item):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._error = exc
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
            self._put(_END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._q.get()
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        self._thread.join(timeout=10)


class _Worker:
    """A thread that applies `handle` to items from a bounded queue, in order.

    After a failure it drops the remaining items (so producers never block) and `put` /
    `finish` re-raise the failure in the caller's thread.
    """

    def __init__(self, name: str, handle: Callable[[Any], None], maxsize: int = 4,
                 finish: Callable[[], None] | None = None,
                 abort: Callable[[], None] | None = None) -> None:
        self.name = name
        self._handle = handle
        self._finish = finish
        self._abort = abort
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, maxsize))
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"depthcli-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _END:
                break
            if self.error is not None:
                continue
            try:
                self._handle(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                self.error = exc
        if self.error is None and self._finish is not None:
            try:
                self._finish()
            except BaseException as exc:  # noqa: BLE001
                self.error = exc

    def put(self, item: Any) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise RuntimeError(f"{self.name} writer stopped") from self.error

    def finish(self) -> None:
        """Drain, run the `finish` step (close files), and raise any failure."""
        self._q.put(_END)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        if self.error is None:
            self.error = RuntimeError("aborted")
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        with contextlib.suppress(queue.Full):
            self._q.put_nowait(_END)
        self._thread.join(timeout=30)
        if self._abort is not None:
            with contextlib.suppress(Exception):
                self._abort()


def _ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], pool: ThreadPoolExecutor,
                 ahead: int) -> Iterator[tuple[Any, Any]]:
    """(item, fn(item)) in input order, with up to `ahead` calls running in `pool`."""
    pending: deque[tuple[Any, Future[Any]]] = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= ahead:
                it, fut = pending.popleft()
                yield it, fut.result()
        while pending:
            it, fut = pending.popleft()
            yield it, fut.result()
    finally:
        for _, fut in pending:
            fut.cancel()


class _Progress:
    def __init__(self, name: str, label: str, total: int) -> None:
        self.name, self.label, self.total = name, label, total
        self.t0 = self.last = time.perf_counter()
        self.n = 0

    def step(self) -> None:
        self.n += 1
        now = time.perf_counter()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            of = f"/{self.total}" if self.total else ""
            _logger.info("%s: %s %d%s frames, %.1f fps", self.name, self.label, self.n, of,
                         self.n / (now - self.t0))

    def done(self) -> None:
        dt = time.perf_counter() - self.t0
        _logger.info("%s: %s %d frames in %.1f s (%.1f fps)", self.name, self.label, self.n, dt,
                     self.n / dt if dt > 0 else 0.0)


# ---------------------------------------------------------------------------- raw stacks

class RawStack:
    """A (T, H, W) array written one frame at a time to a `.npy` file, T unknown in advance.

    The header is reserved up front and written with the real T at `close()`; frames go through
    plain file writes/reads (not a memory map), so resident memory stays flat however long the
    clip.
    """

    HEADER = 128  # bytes reserved for the .npy header (64-byte aligned)

    def __init__(self, path: Path, shape: tuple[int, int] | None,
                 dtype: np.dtype[Any] | type) -> None:
        self.path = path
        self.shape = shape  # None: taken from the first frame
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.count = 0
        self._f = open(path, "w+b")  # noqa: SIM115 - closed in close()/abort()
        self._f.write(b"\0" * self.HEADER)

    @property
    def frame_bytes(self) -> int:
        return int(np.prod(self.shape or (0,))) * self.dtype.itemsize

    def append(self, arr: np.ndarray) -> None:
        if self.shape is None:
            self.shape = (int(arr.shape[0]), int(arr.shape[1]))
        if arr.shape != self.shape:
            raise ValueError(f"depth frame {arr.shape} does not match {self.shape}")
        self._f.write(np.ascontiguousarray(arr, dtype=self.dtype).tobytes())
        self.count += 1

    def _header(self) -> bytes:
        d = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
             "shape": (self.count, *(self.shape or (0, 0)))}
        body = repr(d).encode("latin1")
        pad = self.HEADER - 10 - len(body) - 1
        if pad < 0:
            raise ValueError("npy header does not fit")
        return b"\x93NUMPY\x01\x00" + (self.HEADER - 10).to_bytes(2, "little") + body + \
            b" " * pad + b"\n"

    def close(self) -> None:
        """Write the header with the final frame count; the file stays readable."""
        if self._f.closed:
            return
        self._f.flush()
        self._f.seek(0)
        self._f.write(self._header())
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def abort(self) -> None:
        self._f.close()

    def reader(self) -> Callable[[int], np.ndarray]:
        """Frame i as a fresh array (pread: nothing stays mapped)."""
        fd = os.open(self.path, os.O_RDONLY)
        n, dt, shape, fb = self.count, self.dtype, self.shape, self.frame_bytes

        def read(i: int) -> np.ndarray:
            if not 0 <= i < n:
                raise IndexError(i)
            buf = os.pread(fd, fb, self.HEADER + i * fb)
            if len(buf) != fb:
                raise OSError(f"short read at frame {i}")
            return np.frombuffer(buf, dtype=dt).reshape(shape).copy()

        read.close = lambda: os.close(fd)  # type: ignore[attr-defined]
        return read


@contextlib.contextmanager
def atomic_dir(dst: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `dst`; it replaces `dst` only if the block succeeds."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.{os.getpid()}.", suffix=".tmp",
                                dir=dst.parent))
    try:
        yield tmp
        old: Path | None = None
        if dst.is_dir() and not dst.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.{os.getpid()}.", suffix=".old.tmp",
                                        dir=dst.parent))
            os.replace(dst, old / "x")
        elif dst.exists() or dst.is_symlink():
            dst.unlink()
        os.chmod(tmp, 0o777 & ~_umask())
        os.replace(tmp, dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# ------------------------------------------------------------------------------ clip stats

class ClipStats:
    """Running value range of a clip: exact min/max, or percentiles of a bounded subsample."""

    def __init__(self, ropts: render.RenderOptions) -> None:
        self.percentile = ropts.mode == "percentile"
        self.percentiles = ropts.percentiles
        self.lo = float("inf")
        self.hi = float("-inf")
        self.per_frame = 4096
        self.samples: list[np.ndarray] = []
        self.size = 0
        self.stride = 1  # sample every stride-th frame once per_frame is down to one value
        self.seen = 0

    def update(self, depth: torch.Tensor) -> None:
        flat = depth.reshape(-1)
        fin = flat[torch.isfinite(flat)]
        if fin.numel() == 0:
            return
        if not self.percentile:
            lo, hi = torch.aminmax(fin)
            self.lo = min(self.lo, float(lo))
            self.hi = max(self.hi, float(hi))
            return
        self.seen += 1
        if (self.seen - 1) % self.stride:
            return
        step = max(1, fin.numel() // self.per_frame)
        s = fin[::step][: self.per_frame].float().cpu().numpy()
        self.samples.append(s)
        self.size += s.size
        if self.size > PERCENTILE_SAMPLE:  # thin every frame alike: all frames weigh the same
            if self.per_frame > 1:
                self.samples = [a[::2].copy() for a in self.samples]
                self.per_frame //= 2
            else:  # one value a frame: halve the frames instead (bounded, O(1) amortised)
                self.samples = self.samples[::2]
                self.stride *= 2
            self.size = sum(a.size for a in self.samples)

    def value_range(self) -> tuple[float, float]:
        if self.percentile:
            if not self.samples:
                return 0.0, 1.0
            lo, hi = np.percentile(np.concatenate(self.samples), self.percentiles)
            return float(lo), float(hi)
        if self.lo > self.hi:
            return 0.0, 1.0
        return self.lo, self.hi


# --------------------------------------------------------------------------------- outputs

@dataclass
class _Item:
    index: int
    pts: int
    duration: int
    depth: np.ndarray  # (H, W) float32 at the source (display) size
    image: np.ndarray | None  # BGR input frame, for `side`


def _mp4_worker(fmt: str, tmp: Path, info: vio.VideoInfo, oopts: outputs.OutputOptions,
                vrange: tuple[float, float] | None) -> _Worker:
    w = info.width * 2 + 50 if fmt == "side" else info.width
    writer = vio.VideoWriter(tmp, w, info.height, info)

    def handle(it: _Item) -> None:
        img = outputs.encode_visual(fmt, it.depth, it.image, oopts, vrange)
        writer.write(img, it.pts, it.duration)

    return _Worker(fmt, handle, finish=writer.close, abort=writer.abort)


def _seq_worker(fmt: str, folder: Path, oopts: outputs.OutputOptions,
                vrange: tuple[float, float] | None) -> _Worker:
    ext = SEQUENCE_FORMATS[fmt]

    def handle(it: _Item) -> None:
        if fmt == "png16":
            data = encode_png(outputs.encode_visual(fmt, it.depth, None, oopts, vrange))
        elif fmt == "exr":
            data = outputs.exr_bytes(it.depth)
        else:
            data = outputs.pfm_bytes(it.depth)
        (folder / f"{it.index:06d}{ext}").write_bytes(data)

    return _Worker(fmt, handle)


def _stack_worker(name: str, stack: RawStack, get: Callable[[Any], np.ndarray]) -> _Worker:
    return _Worker(name, lambda it: stack.append(get(it)), maxsize=8, finish=stack.close,
                   abort=stack.abort)


def _fan_out(workers: list[_Worker], item: Any) -> None:
    for w in workers:
        w.put(item)


# -------------------------------------------------------------------------------- pipeline

def predict_video(src: Path, base: Path, est: DepthEstimator, opts: PredictOptions) -> VideoReport:
    """Depth outputs for one video file (see the module docstring); returns a report.

    Raises InputError for inputs that are not videos (or cannot be processed at all).
    """
    src = Path(src)
    oopts = opts.output
    wanted = [f for f in oopts.formats if f in VISUAL_FORMATS or f == "npy" or
              f in SEQUENCE_FORMATS]
    dropped = [f for f in oopts.formats if f not in wanted]
    if dropped:
        _logger.warning("%s: format(s) %s are per image and not written for videos", src,
                        ", ".join(dropped))
    if not wanted:
        raise InputError(f"{src}: none of the formats {', '.join(oopts.formats)} can be written "
                         "for a video (use color, gray, side, npy, png16, exr or pfm)")
    try:
        norm = parse_norm((opts.video or {}).get("norm", "clip"))
    except ValueError as exc:
        raise InputError(f"{src}: {exc}") from None
    paths = output_paths(base, wanted)
    if opts.skip_existing:  # resume: only the missing outputs are made
        paths = {f: p for f, p in paths.items() if not _exists(p)}
        if not paths:
            _logger.info("%s: outputs exist; skipped", src)
            return VideoReport(skipped=True)

    info = vio.probe(src, opts.max_pixels)
    try:
        return _Run(src, paths, est, opts, info, norm).run()
    except (DepthCliError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - one video failing must not stop the run
        _logger.debug("video failure on %s", src, exc_info=True)
        raise InputError(f"{src}: {vio._reason(exc)}") from exc


class _Run:
    """One video through one or two passes; holds the temporaries and worker threads."""

    def __init__(self, src: Path, paths: dict[str, Path], est: DepthEstimator,
                 opts: PredictOptions, info: vio.VideoInfo,
                 norm: str | tuple[float, float]) -> None:
        self.src, self.paths, self.est, self.opts, self.info = src, paths, est, opts, info
        self.oopts = opts.output
        ropts = self.oopts.render
        fixed_render = ropts.mode == "fixed" and ropts.vrange is not None
        self.vrange: tuple[float, float] | None = norm if isinstance(norm, tuple) else None
        needs_range = [f for f in paths
                       if f in VISUAL_FORMATS or (f == "png16" and not self.oopts.metric)]
        self.two_pass = norm == "clip" and not fixed_render and bool(needs_range)
        self.pass2 = needs_range if self.two_pass else []
        self.pass1 = [f for f in paths if f not in self.pass2]
        self.size = (info.height, info.width)
        self.batch = max(1, int(opts.batch_size))
        self.workers = opts.host_workers(est.device.type)
        self.pts = array("q")
        self.durations = array("q")
        self.report = VideoReport()

    # ---------------------------------------------------------------- temporaries

    def _temp(self, stack: contextlib.ExitStack, fmt: str) -> Path:
        dst = self.paths[fmt]
        if fmt in SEQUENCE_FORMATS:
            return stack.enter_context(atomic_dir(dst))
        return stack.enter_context(atomic_path(dst))

    def _abort_on_error(self, stack: contextlib.ExitStack, workers: list[_Worker]) -> None:
        """Registered after the temporaries: on failure, stop threads before files go."""
        def cleanup(exc_type: Any, exc: Any, tb: Any) -> bool:
            if exc_type is not None:
                for w in workers:
                    w.abort()
            return False

        stack.push(cleanup)

    # ------------------------------------------------------------------------ run

    def run(self) -> VideoReport:
        name = self.src.name
        with contextlib.ExitStack() as stack:
            tmps = {f: self._temp(stack, f) for f in self.paths}
            store: RawStack | None = None
            workers: list[_Worker] = []
            self._abort_on_error(stack, workers)
            vr = self.vrange
            for f in self.pass1:
                if f in VISUAL_FORMATS:
                    workers.append(_mp4_worker(f, tmps[f], self.info, self.oopts, vr))
                elif f in SEQUENCE_FORMATS:
                    workers.append(_seq_worker(f, tmps[f], self.oopts, vr))
            npy: RawStack | None = None
            if "npy" in self.paths:
                npy = RawStack(tmps["npy"], self.size, np.float32)
                workers.append(_stack_worker("npy", npy, lambda it: it.depth))
            stats = ClipStats(self.oopts.render) if self.two_pass else None
            if self.two_pass and npy is None:
                fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.",
                                                suffix=".depth.tmp",
                                                dir=self.paths[self.pass2[0]].parent)
                os.close(fd)
                stack.callback(_unlink, Path(tmp_name))
                precise = "png16" in self.pass2
                store = RawStack(Path(tmp_name), None, np.float32 if precise else np.float16)
                workers.append(_stack_worker("store", store, lambda it: it))

            self._pass1(workers, stats, store)
            if self.report.frames == 0:
                raise InputError(f"{self.src}: no decodable video frames")

            if self.two_pass:
                assert stats is not None
                vrange = stats.value_range()
                _logger.info("%s: clip value range %.6g .. %.6g", name, *vrange)
                source = npy if npy is not None else store
                assert source is not None
                p2: list[_Worker] = []
                self._abort_on_error(stack, p2)
                for f in self.pass2:
                    if f in VISUAL_FORMATS:
                        p2.append(_mp4_worker(f, tmps[f], self.info, self.oopts, vrange))
                    else:
                        p2.append(_seq_worker(f, tmps[f], self.oopts, vrange))
                self._pass2(p2, source, lowres=source is store)
            self.report.written = True
        return self.report

    def _frames(self, log: vio.DecodeLog | None) -> _Producer:
        return _Producer(vio.iter_frames(self.info, log), maxsize=self.batch + 2 * self.workers,
                         name="depthcli-decode")

    def _pass1(self, workers: list[_Worker], stats: ClipStats | None,
               store: RawStack | None) -> None:
        est, info = self.est, self.info
        log = vio.DecodeLog(self.src)
        need_full = any(f != "store" for f in (w.name for w in workers))
        keep_image = "side" in self.pass1
        prog = _Progress(self.src.name, "pass 1/2" if self.two_pass else "frames", info.frames)
        align = est.spec.upsample_align_corners
        producer = self._frames(log)
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="depthcli-prep")
        batch: list[tuple[vio.Frame, np.ndarray]] = []

        def flush() -> None:
            if not batch:
                return
            try:
                out = est.forward_batch(np.stack([x for _, x in batch]))
            except Exception as exc:
                raise RuntimeError(f"inference failed at frame {batch[0][0].index}: "
                                   f"{vio._reason(exc)}") from exc
            for (fr, _), d in zip(batch, out):
                full = est.postprocess(d, self.size) if need_full else None
                if stats is not None:
                    stats.update(torch.from_numpy(full) if full is not None
                                 else upsample(d[None], self.size, align)[0])
                if store is not None:
                    workers[-1].put(d.float().cpu().numpy())  # the store is the last worker
                if full is not None:
                    item = _Item(fr.index, fr.pts, fr.duration, full,
                                 fr.bgr if keep_image else None)
                    _fan_out([w for w in workers if w.name != "store"], item)
                self.pts.append(fr.pts)
                self.durations.append(fr.duration)
                prog.step()
            batch.clear()

        try:
            for fr, x in _ordered_map(lambda f: est.preprocess(f.bgr), producer, pool,
                                      ahead=self.batch + self.workers):
                batch.append((fr, x))
                if len(batch) >= self.batch:
                    flush()
            flush()
        finally:
            producer.close()
            pool.shutdown(wait=True, cancel_futures=True)
        for w in workers:
            w.finish()
        prog.done()
        self.report.frames = len(self.pts)
        self.report.errors.extend(log.lines())

    def _pass2(self, workers: list[_Worker], source: RawStack, *, lowres: bool) -> None:
        est = self.est
        read = source.reader()
        n = source.count
        prog = _Progress(self.src.name, "pass 2/2", n)
        images: Iterator[vio.Frame] | None = None
        producer: _Producer | None = None
        if "side" in self.pass2:
            producer = self._frames(None)
            images = iter(producer)
        missing: int | None = None

        def load(i: int) -> np.ndarray:
            d = read(i)
            if lowres:
                return est.postprocess(torch.from_numpy(d.astype(np.float32)), self.size)
            return d

        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="depthcli-load")
        try:
            for i, depth in _ordered_map(load, range(n), pool, ahead=2 * self.workers):
                image = None
                if images is not None:
                    fr = next(images, None)
                    if fr is None:
                        if missing is None:
                            missing = i
                        image = np.zeros((*self.size, 3), np.uint8)
                    else:
                        image = fr.bgr
                _fan_out(workers, _Item(i, self.pts[i], self.durations[i], depth, image))
                prog.step()
        finally:
            if producer is not None:
                producer.close()
            pool.shutdown(wait=True, cancel_futures=True)
            read.close()  # type: ignore[attr-defined]
        for w in workers:
            w.finish()
        prog.done()
        if missing is not None:
            self.report.errors.append(f"side: the input frames from frame {missing} on could not "
                                      "be decoded again; they are black")


def _unlink(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        p.unlink()


# ------------------------------------------------------------------------------ measuring

def measure_memory(weights: str | os.PathLike[str], frames: int, *,
                   size: tuple[int, int] = (320, 240), input_size: int = 70,
                   formats: tuple[str, ...] = ("color",),
                   workdir: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """Peak RSS of `depthcli predict` on a synthetic `frames`-frame clip, in a fresh process.

    Returns {"frames", "seconds", "peak_rss_mb"}; compare a short and a long clip to check that
    memory does not grow with length.
    """
    import json
    import subprocess
    import sys

    code = f"""
import json, resource, sys, time
from fractions import Fraction
from pathlib import Path
import av, numpy as np
from click.testing import CliRunner
from depthcli.cli import main
w, h, n = {size[0]}, {size[1]}, {frames}
wd = Path(sys.argv[1])
src = wd / "synthetic.mp4"
with av.open(str(src), "w") as c:
    s = c.add_stream("libx264", rate=Fraction(30000, 1001)); s.width, s.height = w, h
    s.pix_fmt = "yuv420p"
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.stack([(np.sin(xx / 9 + i / 7) * 100 + 128), (yy + 2 * i) % 256,
                        np.full_like(xx, i % 256)], -1).astype(np.uint8)
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
args = ["predict", str(src), "-o", str(wd / "out"), "--weights", sys.argv[2], "-q",
        "--input-size", "{input_size}", "--device", "cpu"]
for f in {list(formats)!r}:
    args += ["-f", f]
r = CliRunner().invoke(main, args)
assert r.exit_code == 0, r.output
print(json.dumps({{"frames": n, "seconds": round(time.perf_counter() - t0, 2),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_run_mb": base / 1024}}))
"""
    with tempfile.TemporaryDirectory(dir=workdir) as wd:
        out = subprocess.run([sys.executable, "-c", code, wd, str(weights)], check=True,
                             capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
