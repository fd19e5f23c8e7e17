"""`depthcli predict --engine ray`: the local job, run by Ray Data across a cluster.

The run is the local engine's (`runs.predict.PredictRun`): its planner discovers inputs
(streaming) and decides every output name and skip, and its tally turns the result rows into
the summary and error lines, so these are the local ones by construction; this module is the
Ray strategy only. Rows go to Ray Data in chunks (the first after at most a second of discovery, so a huge tree starts
at once; then up to `RayOptions.chunk` rows while discovery runs ahead in a thread):

    rows -> read + decode + preprocess (CPU tasks) -> model (actor pool, one DepthEngine
    per actor, one GPU each when the cluster has GPUs) -> render + encode + atomic write
    (CPU tasks) -> one small result row per input back to the driver (summary, progress)

A long video of a per-frame model, with two or more actors, goes as frame ranges instead, one
row each (`runs.video_ranges`: planned here, run on the actors one row a call, joined by
the range that finishes last into the local run's bytes).

Ray Data's streaming executor bounds memory (backpressure between operators). Faults: actors
restart and their tasks are retried, tasks are retried; a row that still does not come back
is run once more in a fresh dataset, then reported as failed. Writes are atomic, so a retried
input rewrites the same bytes and a killed writer leaves no partial file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.data

from .. import outputs
from ..engine.spec import EngineSpec
from ..errors import DepthCliError
from ..io.atomic import remove_stale_temps
from ..io.seqnames import is_pattern
from .options import PredictOptions, RayOptions
from .plan import Job
from .predict import PredictRun
from .ray_stages import ModelStage, read_stage, write_stage
from .summary import Summary
from .tally import Progress, Report, Tally
from .video_ranges import Span, cleanup, plan, splittable

__all__ = ["EngineSpec", "RayOptions", "run_predict_ray"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolPlan:
    """The actor pool decided from the cluster's resources (see `plan_pool`)."""

    actors: int
    actor_cpus: float
    actor_gpus: float
    device: str


def plan_pool(cfg: EngineSpec, ropts: RayOptions, nodes: list[dict[str, float]]) -> PoolPlan:
    """Size the model actor pool for `nodes` (each node's total Ray resources).

    GPUs (unless --device cpu): one actor per GPU, 1 CPU each. CPU only: each node keeps
    min(1, cpus/2) CPUs for read/write tasks and gives the rest to actors: an actor that takes
    every CPU starves the reads and the pipeline stalls (measured: 2 actors on 2 CPUs hung).
    """
    gpus = sum(n.get("GPU", 0.0) for n in nodes)
    if cfg.device == "cuda" and gpus < 1:
        raise ValueError("--device cuda: the Ray cluster has no GPUs")
    if cfg.device in ("auto", "cuda") and gpus >= 1:
        actors = ropts.actors or int(gpus)
        return PoolPlan(actors, ropts.actor_cpus or 1.0, 1.0, "cuda")
    if cfg.device == "mps":
        raise ValueError("--device mps cannot be used with --engine ray")
    cpus = [n.get("CPU", 0.0) for n in nodes if n.get("CPU", 0.0) > 0] or [1.0]
    spare = [c - min(1.0, c / 2) for c in cpus]
    per_actor = ropts.actor_cpus or max(0.5, min(spare))
    actors = ropts.actors or max(1, sum(int(s // per_actor) for s in spare))
    return PoolPlan(actors, per_actor, 0.0, "cpu")


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Connect to `address` / $RAY_ADDRESS, or start a local instance and stop it after.

    An already initialised Ray (Python API use) is used as it is and left running.
    """
    if ray.is_initialized():
        yield
        return
    addr = address or os.environ.get("RAY_ADDRESS") or None
    quiet = dict(logging_level=logging.WARNING, log_to_driver=False)
    if addr:
        ray.init(address=addr, **quiet)
    else:
        # "local": always a new instance. A bare ray.init() would join whatever `ray start`
        # cluster /tmp/ray/ray_current_cluster names (another user's, or a dead one: a hang).
        ray.init(address="local", include_dashboard=False, **quiet)
    try:
        yield
    finally:
        ray.shutdown()


def _configure_ray_data() -> None:
    """Progress is ours (one bar, on the driver); Ray Data's own bars and banners are off."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    ctx.execution_options.verbose_progress = False
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


# ------------------------------------------------------------------------------ driver: rows

class _Feed:
    """Planning in a driver thread: the run's jobs (`runs.plan.Planner`, as for the local
    engine) -> rows. The queue is bounded, so discovery never runs more than a chunk ahead of
    the cluster.
    """

    _END = object()

    def __init__(self, opts: PredictOptions, jobs: Iterator[Job], results: _Results,
                 ropts: RayOptions) -> None:
        self.opts, self.jobs, self.results, self.ropts = opts, jobs, results, ropts
        self.q: queue.Queue[Any] = queue.Queue(maxsize=max(1, ropts.chunk))
        self.stop = threading.Event()
        self.actors = 1  # model actors: a long per-frame video is split over them (`split`)
        self.temporal = False  # the video model is a temporal one: never split
        self.segment = 0  # H.264 segment length the ranges were planned on
        self.token = uuid.uuid4().hex[:12]  # this run's join markers (runs.video_ranges)
        self.thread = threading.Thread(target=self._run, name="depthcli-discover", daemon=True)

    def _rows(self) -> Iterator[dict[str, Any]]:
        for job in self.jobs:
            row = {"idx": job.idx, "src": str(job.src), "kind": job.kind, "base": str(job.base),
                   "paths": "{}", "rk": -1, "rn": 0, "r0": 0, "r1": -1, "spans": "[]",
                   "seg": 0, "token": self.token}
            self.results.planned[job.idx] = list(job.paths.values())
            if job.kind == "video":
                spans = self._split(job.src)
                if spans:
                    self.results.ranges[job.idx] = len(spans)
                    listed = json.dumps([[sp.start, -1 if sp.end is None else sp.end]
                                         for sp in spans])
                    for sp in spans:
                        yield {**row, "kind": "range", "spans": listed, "seg": self.segment,
                               **sp.as_row()}
                    continue
            else:
                row["paths"] = json.dumps({f: str(p) for f, p in job.paths.items()})
            yield row

    def _split(self, src: Path) -> list[Span]:
        """The frame ranges of a video to split over the actors (runs.video_ranges)."""
        from ..io import video_decode as vio
        from .video_progress import frame_total
        from .video_resume import segment_frames

        fmt = [f for f in self.opts.output.formats if outputs.FORMATS[f].video]
        if self.actors < 2 or not splittable(
                self.temporal, fmt, metric=self.opts.output.metric,
                scene_cuts=self.opts.scene_cuts, sequence=is_pattern(src)):
            return []
        try:
            total, estimated = frame_total(vio.probe(src, self.opts.max_pixels))
        except Exception:  # noqa: BLE001 - not splittable; the actor reports what is wrong
            return []
        self.segment = segment_frames()
        spans = plan(total, estimated, self.actors, self.segment, self.opts.batch_size)
        if spans:
            _logger.info("%s: %d frames in %d ranges over %d actors", src, total, len(spans),
                         self.actors)
        return spans

    def _run(self) -> None:
        try:
            for row in self._rows():
                while not self.stop.is_set():
                    with contextlib.suppress(queue.Full):
                        self.q.put(row, timeout=0.2)
                        break
                if self.stop.is_set():
                    return
            self.q.put(self._END)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
            self.q.put(exc)

    def chunks(self) -> Iterator[list[dict[str, Any]]]:
        """Lists of rows: the first after <= first_chunk_s, later ones up to `chunk` rows."""
        self.thread.start()
        deadline = time.monotonic() + self.ropts.first_chunk_s
        done = False
        while not done:
            rows: list[dict[str, Any]] = []
            while len(rows) < self.ropts.chunk:
                wait = max(0.0, deadline - time.monotonic()) if rows else None
                try:
                    got = self.q.get(timeout=wait) if wait is None or wait > 0 else self.q.get_nowait()
                except queue.Empty:
                    break
                if got is self._END:
                    done = True
                    break
                if isinstance(got, BaseException):
                    raise got
                rows.append(got)
            deadline = time.monotonic()  # later chunks: whatever discovery has ready
            if rows:
                yield rows


# --------------------------------------------------------------------------- driver: results

class _Results:
    """Result rows -> the run's tally (`Tally`), with the calls the local strategies make.

    What is Ray's own here is only the transport: a split video's ranges are gathered until
    the last one is back, and an image's planned files travel as the row's key.
    """

    def __init__(self, run: Tally, kinds: set[str]) -> None:
        self.run = run
        self.lock = threading.Lock()
        self.kinds = kinds  # "images" / "videos" processed (the summary's models)
        self.planned: dict[int, list[Path]] = {}  # idx -> the job's files (the journal's)
        self.ranges: dict[int, int] = {}  # split videos: idx -> frame ranges
        self.range_rows: dict[int, list[dict[str, Any]]] = {}

    def add(self, row: dict[str, Any]) -> None:
        if row["kind"] == "range":
            self._range(row)
            return
        src, status, error = str(row["src"]), str(row["status"]), str(row["error"])
        with self.lock:
            self.kinds.add(f"{row['kind']}s")
        paths = self.planned.pop(int(row["idx"]), [])
        if row["kind"] == "video":
            if status == "failed":
                self.run.input_failed(src, error)
            else:
                self._video(src, json.loads(str(row["vreport"])), paths)
            return
        if status == "written":
            camera = json.loads(str(row["camera"])) if row.get("camera") else None
            self.run.image_written(src, paths, camera)
        else:
            self.run.input_failed(src, error)

    def _video(self, src: str, report: dict[str, Any], planned: list[Path]) -> None:
        """A video's report (a split one's has no paths: its planned files, the same)."""
        paths = [Path(p) for p in report["paths"]] if "paths" in report else planned
        self.run.video_done(src, frames=int(report["frames"]), written=bool(report["written"]),
                            skipped=bool(report["skipped"]), errors=list(report["errors"]),
                            paths=paths, clip=report.get("clip"))

    def _range(self, row: dict[str, Any]) -> None:
        """A frame range of a split video; the video's outcome once all its ranges are back."""
        idx = int(row["idx"])
        with self.lock:
            got = self.range_rows.setdefault(idx, [])
            got.append(row)
            if len(got) < self.ranges.get(idx, 1):
                return
            del self.range_rows[idx]
            self.kinds.add("videos")
        planned = self.planned.pop(idx, [])
        src = str(row["src"])
        failed = [r for r in got if str(r["status"]) == "failed"]
        reports = [json.loads(str(r["vreport"])) for r in got if str(r["vreport"])]
        if failed:
            self.run.input_failed(src, str(failed[0]["error"]))
        elif not reports:
            self.run.input_failed(src, "its frame ranges were done but not joined")
        else:
            if reports[0]["written"]:
                self.run.split_video()
            self._video(src, reports[0], planned)

    def lost(self, row: dict[str, Any], why: str) -> None:
        """A row Ray did not bring back, twice: its input fails."""
        self.planned.pop(int(row["idx"]), None)
        self.run.input_failed(str(row["src"]), f"not processed on the Ray cluster: {why}")


# ---------------------------------------------------------------------------- driver: dataset

def _dataset(rows: list[dict[str, Any]], opts: PredictOptions, cfg: EngineSpec,
             video_cfg: EngineSpec | None, plan: PoolPlan, ropts: RayOptions,
             per_row: bool = False) -> Any:
    """rows -> read (tasks) -> model (actor pool) -> write (tasks): a lazy Ray Dataset.

    `per_row`: one row per model call and one call per actor at a time (the frame ranges of
    split videos: each range its own actor, not batched with the next)."""
    prep = cfg.preprocess()
    task = dict(num_cpus=ropts.task_cpus)  # Ray retries a task whose worker died (3 times)
    # Any: Ray's stubs type map_batches functions as one-argument callables (no fn_kwargs)
    ds: Any = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
    ds = ds.map_batches(read_stage, batch_size=1, batch_format="numpy", fn_kwargs=dict(
        prep=prep, max_pixels=opts.max_pixels, keep_image=outputs.needs_image(opts.output.formats)),
        **task)
    ds = ds.map_batches(
        ModelStage, batch_size=1 if per_row else max(1, opts.batch_size), batch_format="numpy",
        fn_constructor_kwargs=dict(cfg=cfg, opts=opts, prep=prep, video_cfg=video_cfg),
        compute=ray.data.ActorPoolStrategy(
            size=plan.actors, max_tasks_in_flight_per_actor=1 if per_row else None),
        # Ray Data's actor defaults, max_restarts=-1 and max_task_retries=-1: a killed actor
        # comes back and its batches rerun (named remote args are deprecated in Ray 2.60).
        num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus)
    return ds.map_batches(write_stage, batch_size=1, batch_format="numpy",
                          fn_kwargs=dict(output=opts.output), **task)


def _run_chunk(rows: list[dict[str, Any]], results: _Results, build: Callable[[list[dict[str, Any]]], Any]) -> None:
    """Run one chunk; rows that do not come back get one more run, then an error line."""
    pending = {(r["idx"], r["rk"]): r for r in rows}
    last: BaseException | None = None
    for _attempt in range(2):
        try:
            for out in build(list(pending.values())).iter_rows():
                key = (int(out["idx"]), int(out.get("rk", -1)))
                if pending.pop(key, None) is not None:  # retried duplicates dropped
                    results.add(out)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - Ray gave up on part of the run; redo the rest
            _logger.warning("Ray run failed (%s); %d input(s) left", exc, len(pending))
            last = exc
        if not pending:
            return
    lost = {r["idx"]: r for r in pending.values()}  # a split video: one line, not one a range
    for r in lost.values():
        results.lost(r, str(last).splitlines()[0] if last else "lost")


class RayStrategy:
    """The Ray engine (`runs.predict.Strategy`): the run's jobs as rows through Ray Data."""

    def __init__(self, opts: PredictOptions, cfg: EngineSpec, ropts: RayOptions,
                 video_cfg: EngineSpec | None = None) -> None:
        self.opts, self.cfg, self.ropts, self.video_cfg = opts, cfg, ropts, video_cfg
        self.kinds: set[str] = set()  # "images" / "videos" processed

    def models_used(self) -> tuple[dict[str, str], float]:
        names = {"images": self.cfg.model, "videos": (self.video_cfg or self.cfg).model}
        return {k: names[k] for k in ("images", "videos") if k in self.kinds}, 0.0

    def execute(self, jobs: Iterator[Job], run: Tally) -> None:
        """Raises DepthCliError when the cluster cannot run the job at all (no GPU for
        --device cuda)."""
        opts, cfg, video_cfg, ropts = self.opts, self.cfg, self.video_cfg, self.ropts
        results = _Results(run, self.kinds)
        feed = _Feed(opts, jobs, results, ropts)
        try:
            with connected(ropts.address):
                _configure_ray_data()
                nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
                try:
                    plan = plan_pool(cfg, ropts, nodes)
                except ValueError as exc:
                    raise DepthCliError(str(exc)) from None
                threads = None if plan.device != "cpu" else max(1, math.floor(plan.actor_cpus))
                run_cfg = cfg.on(plan.device, threads)
                run_vcfg = video_cfg.on(plan.device, threads) if video_cfg is not None else None
                _logger.info("Ray pool: %s", plan)
                from ..models.registry import get_spec

                feed.actors = plan.actors
                feed.temporal = bool(get_spec((video_cfg or cfg).model).temporal)
                for rows in feed.chunks():
                    whole = [r for r in rows if r["kind"] != "range"]
                    ranges = [r for r in rows if r["kind"] == "range"]
                    if ranges and opts.batch_size <= 1:  # one row a call anyway: one dataset,
                        whole, ranges = [], ranges + whole  # the long ranges first
                    if whole:
                        _run_chunk(whole, results,
                                   lambda rs: _dataset(rs, opts, run_cfg, run_vcfg, plan, ropts))
                    if ranges:
                        _run_chunk(ranges, results, lambda rs: _dataset(
                            rs, opts, run_cfg, run_vcfg, plan, ropts, per_row=True))
        finally:
            feed.stop.set()
            cleanup(opts.out_dir, feed.token)
            remove_stale_temps(opts.out_dir)  # temporaries of killed workers (ours are done)


def run_predict_ray(
    opts: PredictOptions,
    cfg: EngineSpec,
    ropts: RayOptions | None = None,
    *,
    report: Report,
    progress: Progress | None = None,
    video_cfg: EngineSpec | None = None,
    started: float | None = None,
) -> Summary:
    """The local `run_predict` (same run object: same outputs, lines and summary) with the
    Ray strategy.

    Raises DepthCliError when the cluster cannot run the job at all (no GPU for --device cuda).
    """
    run = PredictRun(opts, report=report, progress=progress, started=started)
    return run.execute(RayStrategy(opts, cfg, ropts or RayOptions(), video_cfg))
