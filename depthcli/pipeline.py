"""The `predict` run: inputs → decode → engine → outputs, with resume, failures and a summary.

Wires io, engine and outputs together; holds no model maths and no click.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import outputs
from .engine import DepthEstimator, default_workers
from .errors import DepthCliError, DiskFullError, UnsafeOutputError
from .io import confine, images
from .io.atomic import as_disk_full, is_disk_full, remove_stale_temps
from .io.images import Discovery, InputItem

_logger = logging.getLogger(__name__)


@dataclass
class PredictOptions:
    """Everything `depthcli predict` was asked to do, independent of click."""

    inputs: tuple[str, ...]
    out_dir: Path
    output: outputs.OutputOptions = field(default_factory=outputs.OutputOptions)
    batch_size: int = 1
    workers: int | None = None  # None: default_workers(device)
    skip_existing: bool = False
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    video: dict[str, object] = field(default_factory=dict)  # options for video inputs

    def host_workers(self, device_type: str) -> int:
        """`workers`, or the device's default when not given."""
        return self.workers or default_workers(device_type)


@dataclass
class Summary:
    written: int = 0
    skipped: int = 0
    failed: int = 0
    ignored: int = 0  # non-image files inside folders
    frames: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    @property
    def frame_rate(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        extra = ""
        if self.frames:
            extra = f", {self.frames} video frames ({self.frame_rate:.2f} frames/s)"
        intr = " (interrupted)" if self.interrupted else ""
        return (f"written {self.written}, skipped {self.skipped}, failed {self.failed}, "
                f"not images {self.ignored}{extra}; {self.seconds:.1f} s, "
                f"{self.rate:.2f} img/s{intr}")

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["img_per_s"] = round(self.rate, 4)  # written inputs (a video counts once) per second
        d["frames_per_s"] = round(self.frame_rate, 4)
        d["seconds"] = round(self.seconds, 3)
        d["failures"] = [{"path": p, "reason": r} for p, r in self.failures]
        return d


class OutputMapper:
    """Map input items to output stem paths under -o; two inputs never get the same stem.

    The first claimant of `OUT/rel/stem` gets it; a later one (x.png beside x.jpg, or the same
    relative path from two roots) gets `stem.ext`, then `stem.ext~N`. Discovery order is
    deterministic, so reruns map the same way (which `--skip-existing` relies on). When the
    output folder overlaps an input folder, stems get a `_depth` tag so that outputs do not
    shadow inputs, and an output path equal to its own input is never used.
    Confinement (`depthcli.io.confine`): `rel` is made safe (`..` -> `_up/`), a folder that
    resolves outside -o is refused (UnsafeOutputError), and a name held by a link or special
    file is passed over like a claimed one.
    """

    def __init__(self, out_dir: Path, suffixes: tuple[str, ...], tag: str = "") -> None:
        self.out_dir = out_dir
        self.suffixes = suffixes
        self.tag = tag
        self._claimed: set[str] = set()
        self._root = confine.real_root(out_dir)

    def base(self, item: InputItem) -> Path:
        rel = confine.safe_rel(item.rel)
        why = confine.check_dir(self._root, self.out_dir / rel.parent)
        if why is not None:
            raise UnsafeOutputError(f"{item.src}: {why}")
        stem = rel.with_suffix("").name
        names = [stem + self.tag, rel.name + self.tag]
        n = 2
        while True:
            for name in names:
                base = self.out_dir / rel.parent / name
                key = str(base).casefold()
                if (key not in self._claimed and not self._is_input(base, item.src)
                        and not any(confine.occupied(base.parent / (base.name + s))
                                    for s in self.suffixes)):
                    self._claimed.add(key)
                    return base
            names = [f"{rel.name}~{n}{self.tag}"]
            n += 1

    def _is_input(self, base: Path, src: Path) -> bool:
        try:
            real = src.resolve()
            return any((base.parent / (base.name + s)).resolve() == real for s in self.suffixes)
        except OSError:
            return False


def _overlaps(out_dir: Path, args: tuple[str, ...]) -> bool:
    """True if outputs could land among inputs: -o equal to the folder of an input file, or
    equal to / inside a folder or glob root that is walked."""
    try:
        out = out_dir.resolve()
        for a in args:
            p = Path(a)
            if p.is_dir() or (images._has_magic(a) and not p.exists()):
                root = (p if p.is_dir() else images._glob_root(a)).resolve()
                if out == root or root in out.parents:
                    return True
            elif out == p.resolve().parent:
                return True
    except OSError:
        return False
    return False


def _exists(path: Path) -> bool:
    """Complete output present (writes are atomic, so existence means complete)."""
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def run_predict(
    opts: PredictOptions,
    estimator: DepthEstimator,
    *,
    report: Callable[[str], None],
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """Process every input; `report` gets one line per failure; returns the summary."""
    t0 = time.perf_counter()
    stale = remove_stale_temps(opts.out_dir)
    if stale:
        _logger.info("removed %d temporary files left by an interrupted run", stale)
    summary = Summary()
    state = Discovery()
    fmt = opts.output.formats
    from .video import output_paths as video_paths

    suffixes = tuple(
        {p.name[1:] for p in outputs.output_paths(Path("x"), fmt).values()}
        | {p.name[1:] for p in video_paths(Path("x"), fmt).values()}
    )
    tag = "_depth" if _overlaps(opts.out_dir, opts.inputs) else ""
    mapper = OutputMapper(opts.out_dir, suffixes, tag)
    keep = outputs.needs_image(fmt)
    videos: list[tuple[InputItem, Path]] = []
    lock = threading.Lock()
    full = threading.Event()  # disk full / quota: stop the run, one error line

    def fail(path: str, reason: str) -> None:
        with lock:
            summary.failed += 1
            summary.failures.append((path, reason))
        report(f"error: {reason}" if reason.startswith(path) else f"error: {path}: {reason}")

    def jobs() -> Iterator[tuple[object, Callable[[], object]]]:
        for item in images.discover(opts.inputs, state):
            if full.is_set():
                return
            try:
                base = mapper.base(item)
            except DepthCliError as exc:
                fail(str(item.src), _strip_path(str(exc), str(item.src)))
                continue
            if item.kind == "video":
                videos.append((item, base))
                continue
            paths = outputs.output_paths(base, fmt)
            if opts.skip_existing:
                paths = {f: p for f, p in paths.items() if not _exists(p)}
                if not paths:
                    summary.skipped += 1
                    if progress:
                        progress(1)
                    continue
            src = item.src
            yield (src, paths), (lambda s=src: images.read_image(s, opts.max_pixels))

    workers = opts.host_workers(estimator.device.type)
    writer = ThreadPoolExecutor(max_workers=max(2, workers), thread_name_prefix="depthcli-write")
    slots = threading.BoundedSemaphore(max(4, opts.batch_size * 2, workers * 2))
    futures: list[Future[None]] = []

    def disk_full(exc: BaseException, where: object) -> None:
        """First disk-full error: one line; later ones (writes in flight) are silent."""
        with lock:
            first = not full.is_set()
            full.set()
        if first:
            msg = str(as_disk_full(exc, str(where)))
            fail(msg.split(": ", 1)[0], msg)

    def write(src: Path, paths: dict[str, Path], depth: object, image: object) -> None:
        try:
            if full.is_set():
                return
            outputs.write_image_outputs(depth, image, paths, opts.output, src)  # type: ignore[arg-type]
            with lock:
                summary.written += 1
        except Exception as exc:  # noqa: BLE001 - one output failing must not stop the run
            if is_disk_full(exc):
                disk_full(exc, src)
            else:
                fail(str(src), f"cannot write output: {exc}")
        finally:
            slots.release()
            if progress:
                progress(1)

    try:
        for res in estimator.run(jobs(), batch_size=opts.batch_size, workers=workers,
                                 keep_images=keep):
            if full.is_set():
                break
            src, paths = res.key  # type: ignore[misc]
            if res.error is not None:
                _logger.info("failure on %s", src, exc_info=res.exc)  # traceback with -v
                fail(str(src), _strip_path(res.error, str(src)))
                if progress:
                    progress(1)
                continue
            slots.acquire()
            futures.append(writer.submit(write, src, paths, res.depth, res.image))
            futures = [f for f in futures if not f.done()]
        for item, base in videos:
            if full.is_set():
                break
            try:
                _run_video(item, base, opts, estimator, summary, fail, report)
            except DepthCliError as exc:  # disk full (re-raised by _run_video)
                disk_full(exc, item.src)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        writer.shutdown(wait=True)
        for path, reason in state.errors or []:
            fail(path, reason)
        summary.ignored = state.skipped_other
        summary.seconds = time.perf_counter() - t0
    return summary


def _strip_path(reason: str, path: str) -> str:
    prefix = f"{path}: "
    return reason[len(prefix):] if reason.startswith(prefix) else reason


def _run_video(item: InputItem, base: Path, opts: PredictOptions, est: DepthEstimator,
               summary: Summary, fail: Callable[[str, str], None],
               report: Callable[[str], None]) -> None:
    from . import video

    try:
        rep = video.predict_video(item.src, base, est, opts)
    except DepthCliError as exc:
        if is_disk_full(exc):
            raise
        fail(str(item.src), _strip_path(str(exc), str(item.src)))
        return
    except Exception as exc:  # noqa: BLE001 - a damaged file must cost one line, not the run
        if is_disk_full(exc):
            raise DiskFullError(f"{item.src}: {exc}") from exc
        _logger.info("unexpected failure on %s", item.src, exc_info=True)
        fail(str(item.src), f"cannot process video ({type(exc).__name__}: {exc})")
        return
    if rep.skipped:
        summary.skipped += 1
        return
    summary.frames += rep.frames
    if rep.written:
        summary.written += 1
    for i, reason in enumerate(rep.errors):
        if i == 0:  # one failed input, however many lines describe it
            fail(str(item.src), reason)
        else:
            report(f"error: {item.src}: {reason}")
