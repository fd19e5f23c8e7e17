"""The local `predict` run: plan → decode → engine → write, with resume, failures, summary.

Wires io, engine and outputs together; holds no model maths and no click. The jobs come from
the run's planner (`runs.plan`) and every outcome goes into its tally (`runs.tally.Tally`),
both shared with the Ray engine. Images stream through the engine (prefetch threads,
shape-bucketed batches) into a bounded writer pool; videos are set aside during planning and
run one after the other afterwards (`runs.video`).
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import numpy as np

from .. import outputs
from ..engine.core import DepthEngine
from ..engine.threads import Writers
from ..errors import InputError
from ..io import images, png
from ..io.atomic import is_disk_full
from .models import RunModels
from .options import PredictOptions
from .plan import Job
from .predict import PredictRun
from .summary import Summary
from .tally import Progress, Report, Tally, video_reason
from .video_progress import FrameBars

_logger = logging.getLogger(__name__)


class LocalStrategy:
    """The local engine (`runs.predict.Strategy`): the images stream through the engine, then
    each video runs whole, one after the other."""

    run: Tally  # the tally of the run being executed (`execute`)

    def __init__(self, opts: PredictOptions, models: RunModels) -> None:
        self.opts, self.models = opts, models
        self.videos: list[Job] = []

    def execute(self, jobs: Iterator[Job], run: Tally) -> None:
        self.run = run
        try:
            self.run_images(jobs)
            self.run_videos()
        finally:
            png.shutdown()  # the deflate threads end with the run

    def models_used(self) -> tuple[dict[str, str], float]:
        return self.models.used(), self.models.load_seconds

    def image_jobs(self, jobs: Iterator[Job]) -> Iterator[tuple[Job, Callable[[], np.ndarray],
                                                              Path]]:
        """Engine jobs for the planned images; videos are set aside for later."""
        for job in jobs:
            if job.kind == "video":
                self.videos.append(job)
                continue
            yield job, functools.partial(images.read_image, job.src, self.opts.max_pixels), job.src

    def write(self, job: Job, depth: object, image: object,
              extras: dict[str, object] | None = None) -> None:
        run = self.run
        try:
            if run.full.is_set():
                run.progress(1)
                return
            outputs.write_image_outputs(depth, image, job.paths, self.opts.output,  # type: ignore[arg-type]
                                        job.src, extras)
        except Exception as exc:  # noqa: BLE001 - one output failing must not stop the run
            if is_disk_full(exc):
                run.disk_full(exc, job.src)
                run.progress(1)
            else:
                run.input_failed(job.src, f"cannot write output: {exc}")
            return
        run.image_written(job.src, list(job.paths.values()), extras)

    def run_images(self, planned: Iterator[Job]) -> None:
        """Every image through the engine; the image model loads when the first image comes."""
        run = self.run
        jobs = self.image_jobs(planned)
        first = next(jobs, None)
        if first is None:
            return
        jobs = itertools.chain([first], jobs)
        try:
            est = self.models.for_images()
        except InputError as exc:  # e.g. a video-only model: one line per image, run goes on
            for job, *_ in jobs:
                run.input_failed(job.src, str(exc))
            return
        opts = self.opts
        workers = opts.host_workers(est.device_type)
        writers = Writers(max(2, workers), max(4, opts.batch_size * 2, workers * 2))
        keep = outputs.needs_image(opts.output.formats)
        try:
            for res in est.run(jobs, batch_size=opts.batch_size, workers=workers,
                               keep_images=keep):
                if run.full.is_set():
                    break
                job = cast("Job", res.key)  # image_jobs' key
                if res.error is not None:
                    _logger.debug("failure on %s", job.src, exc_info=res.exc)  # traceback: -vv
                    run.input_failed(job.src, res.error)
                    continue
                writers.submit(self.write, job, res.depth, res.image, res.extras)
        finally:
            writers.close()

    def run_videos(self) -> None:
        """Each video set aside, whole, one after the other (`runs.video.predict_video`)."""
        from .video import predict_video

        run = self.run
        for job in self.videos:
            if run.full.is_set() or run.stop.is_set():
                break
            est = self.models.for_videos()
            try:
                rep = predict_video(job.src, job.base, est, self.opts, run.frame_bars)
            except Exception as exc:  # a damaged file costs one line, not the run
                if is_disk_full(exc):
                    run.disk_full(exc, job.src)
                    run.progress(1)
                    continue
                _logger.debug("failure on %s", job.src, exc_info=True)  # -vv
                run.input_failed(job.src, video_reason(exc, job.src))
                continue
            run.video_done(job.src, frames=rep.frames, written=rep.written,
                           skipped=rep.skipped, errors=rep.errors, paths=rep.paths,
                           clip=rep.clip)


def run_predict(opts: PredictOptions, models: RunModels | DepthEngine, *, report: Report,
                progress: Progress | None = None, started: float | None = None,
                frame_bars: FrameBars | None = None) -> Summary:
    """Process every input on this machine; `report` gets one line per failure; returns the
    summary (`runs.predict.PredictRun` with the local strategy).

    `frame_bars` opens a bar in frames for each pass over a video (see `video_progress`).
    `started` (a `time.perf_counter()` value) lets the summary's seconds include what the
    caller did before (start-up, argument checks).
    """
    if not isinstance(models, RunModels):
        models = RunModels.of(models)
    run = PredictRun(opts, report=report, progress=progress, frame_bars=frame_bars,
                     started=started)
    return run.execute(LocalStrategy(opts, models))
