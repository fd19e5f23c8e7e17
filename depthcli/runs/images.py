"""The local `predict` run: discover → decode → engine → write, with resume, failures, summary.

Wires io, engine and outputs together; holds no model maths and no click. Images stream through
the engine (prefetch threads, shape-bucketed batches) into a bounded writer pool; videos are
collected during discovery and run one after the other afterwards (`runs.video`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import numpy as np

from .. import outputs
from ..engine.core import DepthEngine
from ..engine.threads import Writers
from ..errors import DepthCliError, DiskFullError, InputError, strip_path
from ..io import images, png
from ..io.atomic import is_disk_full, remove_stale_temps
from ..io.images import Discovery, InputItem
from ..io.manifest import Manifest, OutputFolders
from ..io.seqnames import is_pattern
from ..outputs.sequence_out import listed_outputs
from .models import RunModels
from .options import PredictOptions
from .paths import OutputMapper, foreign_files, output_exists, overlaps
from .run import Progress, Report, RunState
from .summary import Summary
from .video_progress import FrameBars

_logger = logging.getLogger(__name__)


class _Run(RunState):
    """One `predict` run: options, models, mapper, and the accounting of `RunState`."""

    def __init__(self, opts: PredictOptions, models: RunModels, report: Report,
                 progress: Progress | None, frame_bars: FrameBars | None = None) -> None:
        self.manifest = Manifest(opts.out_dir)
        super().__init__(report, progress, self.manifest, frame_bars)
        self.opts, self.models = opts, models
        self.state = Discovery(exclude=OutputFolders(opts.out_dir, self.manifest),
                               sequence=opts.sequence)
        fmts = opts.output.formats
        tag = "_depth" if overlaps(opts.out_dir, opts.inputs) else ""
        self.mapper = OutputMapper(opts.out_dir, outputs.output_suffixes(fmts), tag)
        self.videos: list[tuple[InputItem, Path]] = []

    def image_jobs(self) -> Iterator[tuple[tuple[Path, dict[str, Path]],
                                           Callable[[], np.ndarray], Path]]:
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
                if is_pattern(item.src):  # an image sequence: its frame files
                    vpaths = {str(i): p for i, p in enumerate(listed_outputs(
                        item.src, base, list(opts.output.formats), opts.sequence_npy == "frames",
                        opts.sequence_video))}
                if opts.skip_existing:
                    vpaths = {f: p for f, p in vpaths.items() if not output_exists(p)}
                if self.clobber_ok(item.src, vpaths):
                    self.videos.append((item, base))
                continue
            paths = outputs.image_paths(base, opts.output.formats)
            if opts.skip_existing:
                paths = {f: p for f, p in paths.items() if not output_exists(p)}
                if not paths:
                    self.skipped()
                    self.progress(1)
                    continue
            src = item.src
            if not self.clobber_ok(src, paths):
                continue
            yield (src, paths), functools.partial(images.read_image, src, opts.max_pixels), src

    def clobber_ok(self, src: Path, paths: dict[str, Path]) -> bool:
        """Files in the way that are not our outputs of `src`: warned about, or refused."""
        foreign = foreign_files(paths.values(), src, self.manifest)
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

    def write(self, src: Path, paths: dict[str, Path], depth: object, image: object,
              extras: dict[str, object] | None = None) -> None:
        try:
            if self.full.is_set():
                return
            outputs.write_image_outputs(depth, image, paths, self.opts.output, src,  # type: ignore[arg-type]
                                        extras)
            self.summary.add_camera(str(src), extras)
            self.written(list(paths.values()), src)
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
            for (src, _paths), *_ in jobs:
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
                src, paths = cast("tuple[Path, dict[str, Path]]", res.key)  # image_jobs' key
                if res.error is not None:
                    _logger.debug("failure on %s", src, exc_info=res.exc)  # traceback: -vv
                    self.fail(str(src), strip_path(res.error, str(src)))
                    self.progress(1)
                    continue
                writers.submit(self.write, src, paths, res.depth, res.image, res.extras)
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


def run_predict(opts: PredictOptions, models: RunModels | DepthEngine, *, report: Report,
                progress: Progress | None = None, started: float | None = None,
                frame_bars: FrameBars | None = None) -> Summary:
    """Process every input; `report` gets one line per failure; returns the summary.

    `frame_bars` opens a bar in frames for each pass over a video (see `video_progress`).

    `started` (a `time.perf_counter()` value) lets the summary's seconds include what the
    caller did before (start-up, argument checks).
    """
    t0 = started if started is not None else time.perf_counter()
    if not isinstance(models, RunModels):
        models = RunModels.of(models)
    stale = remove_stale_temps(opts.out_dir)
    if stale:
        _logger.info("removed %d temporary files left by an interrupted run", stale)
    run = _Run(opts, models, report, progress, frame_bars)
    try:
        run.run_images()
        run.run_videos()
    except KeyboardInterrupt:
        run.summary.interrupted = True
    finally:
        for path, reason in run.state.errors or []:
            run.fail(path, reason)
        run.manifest.close()
        png.shutdown()  # the deflate threads end with the run
        s = run.summary
        s.not_images = run.state.skipped_other
        s.models = models.used()
        s.load_seconds = models.load_seconds
        s.seconds = time.perf_counter() - t0
    return run.summary
