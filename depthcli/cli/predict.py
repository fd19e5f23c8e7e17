"""`depthcli predict`: options → PredictOptions → the run → summary and exit code."""

from __future__ import annotations

import json
import logging
import sys
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import DepthCliError
from ..models.registry import DEFAULT_MODEL, DEFAULT_VIDEO_MODEL, ModelSpec
from . import STARTED, preflight
from .common import (
    ModelSettings,
    Progress,
    check_device,
    estimator_loader,
    model_options,
    setup_logging,
    silence_opencv,
    spec_or_usage,
)
from .live import live_input, run_live_command, stream_target
from .runtime import require_torch_stack

if TYPE_CHECKING:
    from ..outputs import PointCloudOptions
    from ..runs.options import RayOptions

FORMAT_NAMES = ("color", "gray", "png16", "npy", "pfm", "exr", "side", "ply", "conf", "sky",
                "ffv1")
CMAP_NAMES = ("spectral_r", "spectral", "inferno", "magma", "viridis", "plasma", "turbo",
              "cividis", "jet", "twilight", "gray")

EPILOG = """\b
Examples:
  depthcli predict photo.jpg                      # depth_out/photo.png (colour map)
  depthcli predict photos/ -o depth -f color,npy  # a folder, mirrored under depth/
  depthcli predict list.txt "shots/**/*.jpg"      # a list file and a glob
  depthcli predict clip.mp4 -f color,npy          # a depth video + (T, H, W) float32 npy
  depthcli predict photos/ -m da2-metric-indoor-small -f png16,ply   # metres, point clouds
  depthcli predict photos/ --weights depth_anything_v2_vits.pth      # a downloaded file
  depthcli predict photos/ --skip-existing        # resume an interrupted run
  depthcli predict "shot/plate.####.exr" -f exr,ffv1 --fps 25   # an image sequence as a clip
  depthcli predict edit.mp4 --scene-cuts -f color # each shot aligned on its own
  depthcli predict photos/ -m da3-small -f npy,conf --output-size network --json

Exit codes: 0 all written, 1 some input failed, 2 usage error, 130 interrupted.
"""


def _parse_range(text: str) -> dict[str, object]:
    """'auto' | 'pLO,HI' (percentiles) | 'LO,HI' (fixed, output units)."""
    t = text.strip().lower()
    if t in ("auto", "minmax", ""):
        return {"mode": "minmax"}
    try:
        if t.startswith("p"):
            lo, hi = (float(v) for v in t[1:].split(","))
            if not 0 <= lo < hi <= 100:
                raise ValueError
            return {"mode": "percentile", "percentiles": (lo, hi)}
        lo, hi = (float(v) for v in t.split(","))
        if not hi > lo:
            raise ValueError
        return {"mode": "fixed", "vrange": (lo, hi)}
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: use 'auto', 'p2,98' (percentiles from 0 to 100) or 'LO,HI' "
            "(fixed range, HI above LO)", param_hint="--range",
        ) from None


def _formats(values: tuple[str, ...]) -> tuple[str, ...]:
    from ..outputs import parse_formats

    try:
        return parse_formats(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--format") from None


def _out_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"{path} exists and is not a folder; give a folder (it is "
                                 "created if missing)", param_hint="-o/--output")
    return path


def _models(model: str | None, weights: Path | None) -> tuple[str, str]:
    """(image model, video model): videos default to the temporal model when nothing is named."""
    if model is None:
        return DEFAULT_MODEL, (DEFAULT_MODEL if weights is not None else DEFAULT_VIDEO_MODEL)
    return model, model


def _check_da3_formats(fmts: tuple[str, ...], spec: ModelSpec) -> None:
    """conf needs an any-view Depth Anything 3 model, sky a monocular/metric one."""
    da3 = spec.da3
    if "conf" in fmts and not (da3 is not None and da3.any_view):
        raise click.UsageError(f"--format conf needs an any-view Depth Anything 3 model "
                               f"(da3-small, -base, -large, -giant); {spec.name} has no confidence")
    if "sky" in fmts and not (da3 is not None and not da3.any_view):
        raise click.UsageError(f"--format sky needs da3-mono-large or da3-metric-large; "
                               f"{spec.name} predicts no sky")


def _check_point_cloud(fmts: tuple[str, ...], spec: ModelSpec, pc: PointCloudOptions,
                       quiet: bool) -> None:
    if "ply" in fmts and spec.output != "metric" and pc.assume_scale is None:
        if spec.da3 is not None and spec.da3.any_view:
            return  # relative depth with a predicted camera: points up to one global scale
        raise click.UsageError(
            f"--format ply needs metric depth, and {spec.name} predicts relative inverse depth, "
            "which has no scale; use a da2-metric-* model, or pass --assume-scale S to treat "
            "S / output as metres"
        )
    log = logging.getLogger("depthcli")
    if pc.assume_scale is not None and spec.output == "metric":
        log.warning("--assume-scale is ignored: %s predicts metres already", spec.name)
    if pc.focal_px is not None and pc.fov_deg is not None:
        log.warning("--focal-px and --fov-deg both given; --focal-px wins")
    given = (pc.focal_px, pc.fov_deg, pc.cx, pc.cy, pc.assume_scale)
    if any(v is not None for v in given) and "ply" not in fmts:
        log.warning("point-cloud options have no effect without --format ply")
    if "ply" in fmts and not quiet:  # the intrinsics used are part of the result: show them
        logging.getLogger("depthcli.outputs.pointcloud").setLevel(logging.INFO)


@click.command(epilog=EPILOG)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", type=click.Path(), default="depth_out",
              show_default=True,
              help="Output folder (created if missing); the input tree is mirrored under it. "
                   "Live sources also: - (MPEG-TS on stdout) or a URL (rtmp://, srt://, "
                   "udp://, tcp://) to stream one visual format to.")
@model_options(default_model=None)
@click.option("--format", "-f", "formats", multiple=True, default=("color",), show_default=True,
              help=f"Output formats, repeatable or comma-separated: {', '.join(FORMAT_NAMES)}.")
@click.option("--cmap", default="spectral_r", show_default=True, type=click.Choice(CMAP_NAMES, case_sensitive=False),
              help="Colour map of color/side outputs.")
@click.option("--range", "range_", default="auto", show_default=True,
              help="Value range of visual formats: auto (per-image min-max), pLO,HI "
                   "(percentiles), LO,HI (fixed, in output units).")
@click.option("--invert", is_flag=True, help="Swap near/far in visual formats.")
@click.option("--output-size", type=click.Choice(["input", "network"]), default="input",
              show_default=True,
              help="input: every format at the input image's size (bilinear upsampling of the "
                   "network output); network: the network-size output as the model gives it.")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=1, show_default=True,
              help="Inputs per forward pass (images of the same network size are batched; "
                   "video frames per pass for per-frame models).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Decode/preprocess threads and output writers [default: 2 when the model "
                   "runs on the CPU (it uses every core already), min(8, cores) on a GPU].")
@click.option("--skip-existing", is_flag=True,
              help="Do not recompute inputs whose outputs already exist (resume a run).")
@click.option("--no-clobber", is_flag=True,
              help="Never replace a file in -o that is not depthcli's output of the same input "
                   "(without it: replaced, with a warning naming it).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=178_956_970, show_default=True,
              help="Refuse images (and video frames) larger than this, from the header.")
@click.option("--video-norm", default="clip", show_default=True,
              help="Videos: clip (one range for the whole clip), frame, or LO,HI.")
@click.option("--sequence", is_flag=True,
              help="Folders given are image sequences: each run of numbered frames "
                   "(plate.1001.png, ...) is one clip (patterns plate.####.exr / plate.%04d.png "
                   "are always).")
@click.option("--fps", "fps_", default=None, metavar="RATE",
              help="Frame rate of image sequences (24, 25, 30000/1001, 23.976) [default: 24].")
@click.option("--sequence-npy", type=click.Choice(["stack", "frames"]), default="stack",
              show_default=True,
              help="npy of an image sequence: one (T, H, W) stack, or one file per frame.")
@click.option("--sequence-video", is_flag=True,
              help="Image sequences: color, gray, side as an H.264 video at --fps instead of "
                   "numbered PNGs.")
@click.option("--scene-cuts", is_flag=True,
              help="Videos and sequences: detect hard cuts and restart the temporal model "
                   "(and the colour range) at each shot.")
@click.option("--scene-threshold", type=click.FloatRange(min=0, min_open=True), default=27.0,
              show_default=True,
              help="--scene-cuts: mean HSV difference (0-255) between two frames that is a cut.")
@click.option("--temporal", type=click.Choice(["window", "stream"]), default="window",
              show_default=True,
              help="Video Depth Anything: window (32-frame windows, aligned; the official "
                   "offline mode) or stream (one frame in, one depth out; the official "
                   "streaming mode, torch backend).")
@click.option("--source-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True,
              help="Live sources: seconds without a frame before the run stops (one line).")
@click.option("--reconnect", type=click.IntRange(min=0), default=3, show_default=True,
              help="Live network sources: reopen a dropped stream up to N times in a row.")
@click.option("--ply-stride", type=click.IntRange(min=1), default=1, show_default=True,
              help="ply: keep every N-th pixel in each direction.")
@click.option("--focal-px", type=click.FloatRange(min=0, min_open=True), default=None,
              help="ply: focal length in pixels.")
@click.option("--fov-deg", type=click.FloatRange(min=0, max=180, min_open=True, max_open=True),
              default=None, help="ply: horizontal field of view in degrees.")
@click.option("--cx", type=float, default=None, help="ply: principal point x [default: centre].")
@click.option("--cy", type=float, default=None, help="ply: principal point y [default: centre].")
@click.option("--assume-scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="ply with a relative model: treat SCALE / output as metres (an assumption).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this machine; ray: a Ray cluster (pip install 'depthcli[ray]').")
@click.option("--ray-address", default=None,
              help="Ray cluster address [default: $RAY_ADDRESS, else a local instance for the "
                   "run].")
@click.option("--ray-actors", type=click.IntRange(min=1), default=None,
              help="Ray: model actors [default: one per GPU; on CPUs, per node's spare CPUs].")
@click.option("--ray-actor-cpus", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Ray: CPUs per model actor (its torch threads on CPU) [default: 1 with GPUs; "
                   "a node's CPUs less 1 for the read/write tasks].")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary (with the settings used) as JSON on stdout.")
@click.option("--list-outputs", is_flag=True,
              help="List every file written (in --json, and on stderr with -v).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, errors only.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug, with tracebacks).")
def predict(inputs: tuple[str, ...], out_dir: str, model: str | None, weights: Path | None,
            input_size: int | None, device: str, precision: str, calibrate: Path | None,
            backend: str, max_depth: float | None, threads: int | None, compile_: bool,
            channels_last: bool,
            formats: tuple[str, ...], cmap: str, range_: str, invert: bool, output_size: str,
            batch_size: int, workers: int | None, skip_existing: bool, no_clobber: bool,
            max_pixels: int, video_norm: str, sequence: bool, fps_: str | None,
            sequence_npy: str, sequence_video: bool, scene_cuts: bool, scene_threshold: float,
            temporal: str, source_timeout: float, reconnect: int,
            ply_stride: int, focal_px: float | None, fov_deg: float | None, cx: float | None,
            cy: float | None, assume_scale: float | None, engine: str, ray_address: str | None,
            ray_actors: int | None, ray_actor_cpus: float | None, as_json: bool,
            list_outputs: bool, quiet: bool, verbose: int) -> None:
    """Predict depth for images, folders (recursive), .txt lists, globs and videos.

    Outputs mirror the input tree under -o; nothing is ever written outside it.
    """
    from .. import outputs
    from ..outputs import render
    from ..runs.models import RunModels
    from ..runs.options import PredictOptions, RayOptions

    setup_logging(verbose, quiet)
    fmts = _formats(formats)
    image_model, video_model = _models(model, weights)
    spec = spec_or_usage(image_model)
    spec_or_usage(video_model)
    video_norm = _check_video_norm(video_norm)
    pc = outputs.PointCloudOptions(ply_stride=ply_stride, focal_px=focal_px, fov_deg=fov_deg,
                                   cx=cx, cy=cy, assume_scale=assume_scale)
    _check_point_cloud(fmts, spec, pc, quiet)
    _check_da3_formats(fmts, spec)
    ropts = render.RenderOptions(cmap=cmap, invert=invert, **_parse_range(range_))  # type: ignore[arg-type]
    check_device(device)
    live = live_input(inputs)  # rtsp://, tcp://, /dev/videoN, - ...: cli/live.py
    stream_to = stream_target(out_dir, live, fmts)  # -o - / -o URL (live sources only)
    out_path = Path(out_dir) if stream_to else _out_dir(Path(out_dir))
    kinds, open_ended = preflight.explicit_kinds(inputs) if not live else (set(), False)
    preflight.check_weights_file(weights)
    preflight.check_backend(backend, device)
    preflight.check_int8(precision, backend, device, calibrate, engine)
    if precision == "int8" and "video" in kinds and spec_or_usage(video_model).temporal:
        raise click.BadParameter(f"{video_model} is a temporal video model, which is not "
                                 "quantised; use --precision fp32 for videos, or an image model "
                                 "(--model da2-small) for per-frame depth",
                                 param_hint="--precision int8")
    if temporal == "stream" and backend not in ("auto", "torch"):
        raise click.UsageError("--temporal stream runs on the torch backend (--backend torch)")
    if temporal == "stream" and scene_cuts:
        raise click.UsageError("--scene-cuts works with --temporal window (the streaming cache "
                               "is not restarted at cuts)")
    preflight.check_fit(fmts, spec, kinds, open_ended)
    silence_opencv()
    opts = PredictOptions(
        inputs=inputs, out_dir=out_path,
        output=outputs.OutputOptions(fmts, ropts, metric=spec.output == "metric",
                                     point_cloud=pc, near_is_large=spec.near_is_large),
        batch_size=batch_size, workers=workers, skip_existing=skip_existing,
        no_clobber=no_clobber, max_pixels=max_pixels, video_norm=video_norm,
        sequence=sequence, fps=_fps(fps_), sequence_npy=sequence_npy,
        sequence_video=sequence_video,
        scene_cuts=scene_threshold if scene_cuts else None,
        temporal=temporal,
    )
    camera: dict[str, float | None] = {"focal_px": focal_px, "fov_deg": fov_deg, "cx": cx, "cy": cy}
    settings = ModelSettings(weights=weights, input_size=input_size, device=device,
                             precision=precision, backend=backend, max_depth=max_depth,
                             compile_=compile_, channels_last=channels_last,
                             output_size=output_size, camera=camera, calibrate=calibrate)
    if live:
        run_live_command(live, stream_to, opts=opts, video_model=video_model, settings=settings,
                         threads=threads, timeout=source_timeout, reconnects=reconnect,
                         as_json=as_json, quiet=quiet)
        return
    if engine == "ray":
        require_torch_stack()
        run = _ray_run(opts, image_model, video_model, settings, threads,
                       RayOptions(address=ray_address, actors=ray_actors,
                                  actor_cpus=ray_actor_cpus))
    else:
        needed = preflight.needed_models(inputs, out_path, kinds, open_ended, image_model,
                                         video_model, sequence)
        # before torch: offline in ~1 s; the torch stack is checked when a model needs it (a
        # cached OpenVINO model may not: engine/warm.py)
        found = preflight.resolve_checkpoints(needed, weights)
        s = settings
        load = estimator_loader(weights=s.weights, input_size=s.input_size, device=s.device,
                                precision=s.precision, backend=s.backend, max_depth=s.max_depth,
                                compile_=s.compile_, channels_last=s.channels_last,
                                output_size=s.output_size, camera=s.camera, resolved=found,
                                job_size=lambda: _image_job_size(opts),
                                calibrate=s.calibrate)
        models = RunModels(load, image_model, video_model)
        run = _local_run(opts, models, threads)
    _finish(run, opts, as_json=as_json, list_outputs=list_outputs, quiet=quiet, verbose=verbose)


def _local_run(opts: Any, models: Any, threads: int | None) -> Any:
    """A callable running the job on this machine: (report, progress) → (summary, settings)."""
    from ..engine.device import torch_threads
    from ..runs.local import run_predict

    def run(report: Any, progress: Any) -> Any:
        with torch_threads(threads):
            summary = run_predict(opts, models, report=report, progress=progress,
                                  started=STARTED, frame_bars=progress.frame_bar)
        return summary, _settings(models, opts, threads)

    return run


def _ray_run(opts: Any, image_model: str, video_model: str, settings: ModelSettings,
             threads: int | None, ropts: RayOptions) -> Any:
    """The same job on a Ray cluster; the driver resolves checkpoints, actors load them."""
    try:
        from ..runs.ray import EngineSpec, run_predict_ray
    except ImportError as exc:
        raise click.UsageError(f"--engine ray needs Ray: pip install 'depthcli[ray]' ({exc})") from None
    s = settings

    def spec(model: str) -> EngineSpec:
        return EngineSpec(model=model, max_depth=s.max_depth, device=s.device,
                          precision=s.precision, input_size=s.input_size, compile=s.compile_,
                          channels_last=s.channels_last, threads=threads, backend=s.backend,
                          output_size=s.output_size, camera=EngineSpec.camera_pairs(s.camera))

    try:
        cfg = spec(image_model).resolved(s.weights)
    except DepthCliError as exc:
        raise click.ClickException(str(exc)) from None
    vcfg = None
    if video_model != image_model:
        try:
            vcfg = spec(video_model).resolved()
        except DepthCliError:  # resolved again on the actors, when a video needs it
            vcfg = spec(video_model)

    def run(report: Any, progress: Any) -> Any:
        summary = run_predict_ray(opts, cfg, ropts, report=report, progress=progress,
                                  video_cfg=vcfg, started=STARTED)
        return summary, {"engine": "ray", "models": summary.models,
                         "formats": list(opts.output.formats), "batch_size": opts.batch_size,
                         "output": str(opts.out_dir), "ray_address": ropts.address}

    return run


def _finish(run: Any, opts: Any, *, as_json: bool, list_outputs: bool, quiet: bool,
            verbose: int) -> None:
    """Run with a progress bar, then the summary line / JSON and the exit code."""
    bar = Progress(not quiet, total=_known_total(opts.inputs))
    bar.count_in_background(lambda: _count_inputs(opts))
    try:
        summary, settings = run(bar.write, bar)
    except DepthCliError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps(summary.as_dict(settings, list_outputs)))
    if list_outputs and verbose and not as_json:
        for p in summary.outputs:
            click.echo(p, err=True)
    if not quiet or summary.failed:
        click.echo(summary.line(), err=True)
    if summary.interrupted:
        sys.exit(130)
    if summary.failed:
        click.echo(f"{summary.failed} input(s) failed", err=True)
        sys.exit(1)


def _settings(models: Any, opts: Any, threads: int | None) -> dict[str, object]:
    """The settings a run used, for --json: what ran, where, how (defaults resolved)."""
    from ..engine.device import current_threads

    used = {}
    for kind, name in models.used().items():
        est = models.estimator(name)
        used[kind] = {"model": name, "backend": est.backend.name, "device": est.device_name,
                      "precision": est.backend.precision,
                      "input_size": est.preprocess.input_size}
    device = next((v["device"] for v in used.values()), "cpu")
    return {"engine": "local", "models": used, "formats": list(opts.output.formats),
            "batch_size": opts.batch_size,
            "workers": opts.host_workers(str(device).split(":")[0]),
            "threads": threads or current_threads(),
            "output": str(opts.out_dir), "skip_existing": opts.skip_existing,
            "video_norm": opts.video_norm, "temporal": opts.temporal,
            **_clip_settings(opts)}


def _clip_settings(opts: Any) -> dict[str, object]:
    """Sequence and scene-cut settings, when they apply (the rate a sequence ran at)."""
    from ..io.sequence import DEFAULT_FPS

    out: dict[str, object] = {}
    if opts.sequence or any(_is_pattern(a) for a in opts.inputs) or opts.fps is not None:
        out["fps"] = str(opts.fps if opts.fps is not None else DEFAULT_FPS)
        out["sequence_npy"] = opts.sequence_npy
        out["sequence_video"] = opts.sequence_video
    if opts.scene_cuts is not None:
        out["scene_cuts"] = {"threshold": opts.scene_cuts}
    return out


def _is_pattern(arg: str) -> bool:
    from ..io.seqnames import is_pattern

    return is_pattern(arg)


def _fps(text: str | None) -> Fraction | None:
    """'25' | '30000/1001' | '23.976' (→ 24000/1001, the NTSC rates by name) → a Fraction."""
    if text is None:
        return None
    try:
        v = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise click.BadParameter(f"{text!r}: a positive rate such as 24, 25 or 30000/1001",
                                 param_hint="--fps") from None
    if v <= 0 or v > 1000:
        raise click.BadParameter(f"{text!r}: a rate above 0 and at most 1000",
                                 param_hint="--fps")
    for ntsc in (24, 30, 60, 120):  # 23.976, 29.97, 59.94: the 1000/1001 rates
        exact = Fraction(ntsc * 1000, 1001)
        if v != exact and abs(float(v) - float(exact)) < 0.0015:
            return exact
    return v


def _count_inputs(opts: Any) -> int:
    """How many inputs the run's discovery yields (a second, listing-only walk)."""
    from ..io.images import Discovery, discover
    from ..io.manifest import OutputFolders

    state = Discovery(exclude=OutputFolders(opts.out_dir), quiet=True, sequence=opts.sequence)
    return sum(1 for _ in discover(opts.inputs, state))


ASPECT_SAMPLES = 8  # image headers read for a job's typical aspect ratio


def _image_job_size(opts: Any) -> tuple[int, float] | None:
    """(inputs, their median long/short side ratio from the first headers) of an image-only
    job (a listing walk), None when there are videos: their frames are counted only while
    decoding, and a clip of a few windows already earns a conversion back
    (backends/autoplan.py). A 3:2 photo costs the network 1.5 square ones."""
    import statistics

    from ..io.images import Discovery, discover, header_size
    from ..io.manifest import OutputFolders

    state = Discovery(exclude=OutputFolders(opts.out_dir), quiet=True, sequence=opts.sequence)
    n = 0
    ratios: list[float] = []
    for item in discover(opts.inputs, state):
        if item.kind == "video":
            return None
        n += 1
        if len(ratios) < ASPECT_SAMPLES and (size := header_size(item.src)) is not None:
            ratios.append(max(size) / min(size))
    return n, statistics.median(ratios) if ratios else 1.0


def _known_total(inputs: tuple[str, ...]) -> int | None:
    """Number of inputs when they are all plain image files (folders stream: total unknown)."""
    from ..io.images import IMAGE_EXTS

    paths = [Path(i) for i in inputs]
    if all(p.is_file() and p.suffix.lower() in IMAGE_EXTS for p in paths):
        return len(paths)
    return None


def _check_video_norm(text: str) -> str:
    from ..runs.options import parse_norm

    try:
        parse_norm(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--video-norm") from None
    return text.strip().lower()
