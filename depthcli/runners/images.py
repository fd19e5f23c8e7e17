"""The local `predict` run: discover → decode → engine → write, with resume, failures, summary.

Wires io, engine and outputs together; holds no model maths and no click. Images stream through
the engine (prefetch threads, shape-bucketed batches) into a bounded writer pool; videos are
collected during discovery and run one after the other afterwards (`runners.video`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import outputs
from ..engine import DepthEstimator
from ..errors import DepthCliError, DiskFullError, InputError, strip_path
from ..io import images
from ..io.atomic import as_disk_full, is_disk_full, remove_stale_temps
from ..io.images import Discovery, InputItem
from ..io.manifest import Manifest, OutputFolders
from ..threads import Writers
from .options import Estimators, PredictOptions, Summary
from .paths import OutputMapper, foreign_files, output_exists, overlaps

_logger = logging.getLogger(__name__)

Report = Callable[[str], None]
Progress = Callable[[int], None]


class _Run:
    """One `predict` run's shared state: options, models, mapper, summary, reporting."""

    def __init__(self, opts: PredictOptions, models: Estimators, report: Report,
                 progress: Progress | None) -> None:
        self.opts, self.models, self.report = opts, models, report
        self.progress = progress or (lambda n: None)
        self.summary = Summary()
        self.journal = Manifest(opts.out_dir)  # what depthcli wrote in -o (io.manifest)
        self.state = Discovery(exclude=OutputFolders(opts.out_dir, self.journal))
        fmts = opts.output.formats
        tag = "_depth" if overlaps(opts.out_dir, opts.inputs) else ""
        self.mapper = OutputMapper(opts.out_dir, outputs.output_suffixes(fmts), tag)
        self.videos: list[tuple[InputItem, Path]] = []
        self.full = threading.Event()  # disk full / over quota: the run stops, one error line

    def fail(self, path: str, reason: str) -> None:
        self.summary.fail(path, reason)
        self.report(f"error: {reason}" if reason.startswith(path) else f"error: {path}: {reason}")

    def disk_full(self, exc: BaseException, where: object) -> None:
        """The first disk-full error is one line; later ones (writes in flight) are silent."""
        with self.summary._lock:
            first = not self.full.is_set()
            self.full.set()
        if first:
            msg = str(as_disk_full(exc, str(where)))
            self.fail(msg.split(": ", 1)[0], msg)

    def image_jobs(self) -> Iterator[tuple[object, Callable[[], object]]]:
        """Engine jobs for the images still to do; videos are set aside for later."""
        opts = self.opts
        for item in images.discover(opts.inputs, self.state):
            if self.full.is_set():
                return
            try:
                base = self.mapper.base(item)
            except DepthCliError as exc:  # its output would leave -o: refused, the run goes on
                self.fail(str(item.src), strip_path(str(exc), str(item.src)))
                self.progress(1)
                continue
            if item.kind == "video":
                vpaths = outputs.video_paths(base, opts.output.formats)
                if opts.skip_existing:
                    vpaths = {f: p for f, p in vpaths.items() if not output_exists(p)}
                if self.clobber_ok(item.src, vpaths):
                    self.videos.append((item, base))
                continue
            paths = outputs.image_paths(base, opts.output.formats)
            if opts.skip_existing:
                paths = {f: p for f, p in paths.items() if not output_exists(p)}
                if not paths:
                    self.summary.skipped += 1
                    self.progress(1)
                    continue
            src = item.src
            if not self.clobber_ok(src, paths):
                continue
            yield (src, paths), (lambda s=src: images.read_image(s, opts.max_pixels))

    def clobber_ok(self, src: Path, paths: dict[str, Path]) -> bool:
        """Files in the way that are not our outputs of `src`: warned about, or refused."""
        foreign = foreign_files(paths.values(), src, self.journal)
        if not foreign:
            return True
        names = ", ".join(str(p) for p in foreign)
        if self.opts.no_clobber:
            self.fail(str(src), f"not replacing {names}: not a depthcli output of this input "
                                "(--no-clobber)")
            self.progress(1)
            return False
        _logger.warning("%s: replacing %s, which is not a depthcli output of this input "
                        "(--no-clobber refuses)", src, names)
        return True

    def write(self, src: Path, paths: dict[str, Path], depth: object, image: object) -> None:
        try:
            if self.full.is_set():
                return
            outputs.write_image_outputs(depth, image, paths, self.opts.output, src)  # type: ignore[arg-type]
            self.journal.add(paths.values(), src)
            self.summary.add_written(list(paths.values()))
        except Exception as exc:  # noqa: BLE001 - one output failing must not stop the run
            if is_disk_full(exc):
                self.disk_full(exc, src)
            else:
                self.fail(str(src), f"cannot write output: {exc}")
        finally:
            self.progress(1)

    def run_images(self) -> None:
        """Every image through the engine; the image model loads when the first image comes."""
        jobs = self.image_jobs()
        first = next(jobs, None)
        if first is None:
            return
        jobs = itertools.chain([first], jobs)
        try:
            est = self.models.for_images()
        except InputError as exc:  # e.g. a video-only model: one line per image, run goes on
            for (src, _paths), _load in jobs:
                self.fail(str(src), str(exc))
                self.progress(1)
            return
        opts = self.opts
        workers = opts.host_workers(est.device.type)
        writers = Writers(max(2, workers), max(4, opts.batch_size * 2, workers * 2))
        keep = outputs.needs_image(opts.output.formats)
        try:
            for res in est.run(jobs, batch_size=opts.batch_size, workers=workers,
                               keep_images=keep):
                if self.full.is_set():
                    break
                src, paths = res.key  # type: ignore[misc]
                if res.error is not None:
                    _logger.debug("failure on %s", src, exc_info=res.exc)  # traceback: -vv
                    self.fail(str(src), strip_path(res.error, str(src)))
                    self.progress(1)
                    continue
                writers.submit(self.write, src, paths, res.depth, res.image)
        finally:
            writers.close()

    def run_videos(self) -> None:
        from .video import run_video

        for item, base in self.videos:
            if self.full.is_set():
                break
            try:
                run_video(item, base, self.opts, self.models.for_videos(), self)
            except DiskFullError as exc:
                self.disk_full(exc, item.src)


def run_predict(opts: PredictOptions, models: Estimators | DepthEstimator, *, report: Report,
                progress: Progress | None = None, started: float | None = None) -> Summary:
    """Process every input; `report` gets one line per failure; returns the summary.

    `started` (a `time.perf_counter()` value) lets the summary's seconds include what the
    caller did before (start-up, argument checks).
    """
    t0 = started if started is not None else time.perf_counter()
    if not isinstance(models, Estimators):
        models = Estimators.of(models)
    stale = remove_stale_temps(opts.out_dir)
    if stale:
        _logger.info("removed %d temporary files left by an interrupted run", stale)
    run = _Run(opts, models, report, progress)
    try:
        run.run_images()
        run.run_videos()
    except KeyboardInterrupt:
        run.summary.interrupted = True
    finally:
        for path, reason in run.state.errors or []:
            run.fail(path, reason)
        run.journal.close()
        s = run.summary
        s.not_images = run.state.skipped_other
        s.models = models.used()
        s.load_seconds = models.load_seconds
        s.seconds = time.perf_counter() - t0
    return run.summary
