"""The `depthcli` command line: options → dataclasses → pipeline; the only place that prints."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from . import __version__
from .errors import DepthCliError, UnknownModelError
from .models.registry import DEFAULT_MODEL, MODEL_SPECS, get_spec

_logger = logging.getLogger("depthcli")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING
    if verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    elif quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr,
                        force=True)
    try:
        import cv2

        # OpenCV's own decoder warnings would duplicate our one-line errors.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


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
            f"{text!r}: use 'auto', 'p2,98' (percentiles) or 'LO,HI' (fixed range)",
            param_hint="--range",
        ) from None


class _Progress:
    """tqdm on stderr when it is a terminal and not --quiet; a no-op otherwise."""

    def __init__(self, enabled: bool, unit: str = "img", total: int | None = None) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(unit=unit, file=sys.stderr, dynamic_ncols=True, total=total)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            click.echo(msg, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="depthcli")
def main() -> None:
    """Monocular depth (Depth Anything V1/V2, relative and metric) for images, folders, videos."""


def model_options(f):  # type: ignore[no-untyped-def]
    """Options shared by commands that load a model."""
    for opt in reversed([
        click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
                     help="Registry name (see 'depthcli models') or official / -hf hub repo id."),
        click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
                     help="Checkpoint file (.pth official layout or .safetensors -hf layout)."),
        click.option("--input-size", type=click.IntRange(min=1), default=None,
                     help="Short side of the network input; sides are rounded to multiples of "
                          "14 as the official Resize does [default: 518]."),
        click.option("--device", default="auto", show_default=True,
                     type=click.Choice(["auto", "cpu", "cuda", "mps"]),
                     help="auto = cuda, then mps, then cpu."),
        click.option("--precision", default="auto", show_default=True,
                     type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
                     help="auto = half on CUDA, fp32 elsewhere."),
        click.option("--max-depth", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Metric models: metres at the top of the sigmoid [default: 20 indoor, 80 outdoor]."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="torch intra-op threads [default: torch's choice]; lower it when "
                          "other jobs share the CPU (OpenMP threads then spin against them)."),
        click.option("--compile", "compile_", is_flag=True, help="torch.compile the model."),
        click.option("--channels-last", is_flag=True, help="channels_last memory format."),
    ]):
        f = opt(f)
    return f


def _load_estimator(model: str, weights: Path | None, input_size: int | None, device: str,
                    precision: str, max_depth: float | None, compile_: bool,
                    channels_last: bool):  # type: ignore[no-untyped-def]
    from .engine import DepthEstimator

    try:
        get_spec(model)
    except UnknownModelError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    try:
        return DepthEstimator.from_name(
            model, weights=weights, max_depth=max_depth, device=device, precision=precision,
            input_size=input_size, compile=compile_, channels_last=channels_last,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except DepthCliError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("depth_out"), show_default=True,
              help="Output folder; the input tree is mirrored under it.")
@model_options
@click.option("--format", "-f", "formats", multiple=True, default=("color",), show_default=True,
              help="color, gray, png16, npy, pfm, exr, side, ply; repeat or comma-separate.")
@click.option("--cmap", default="spectral_r", show_default=True,
              help="Colour map (matplotlib name: spectral_r, inferno, turbo, viridis, magma, gray, ...).")
@click.option("--range", "range_", default="auto", show_default=True,
              help="Value range for visual formats: auto (per-image min-max), pLO,HI (percentiles), LO,HI (fixed).")
@click.option("--invert", is_flag=True, help="Swap near/far in visual formats.")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Decode/preprocess threads and output writers [default: 2 when the model "
                   "runs on the CPU (it uses every core already), min(8, cores) on a GPU].")
@click.option("--skip-existing", is_flag=True,
              help="Do not recompute inputs whose outputs already exist (resume a run).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=178_956_970, show_default=True,
              help="Refuse images larger than this (checked from the header, before decoding).")
@click.option("--video-norm", default="clip", show_default=True,
              help="Videos: clip (one range for the whole clip), frame, or LO,HI.")
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
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, errors only.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug, with tracebacks).")
def predict(inputs: tuple[str, ...], out_dir: Path, model: str, weights: Path | None,
            input_size: int | None, device: str, precision: str, max_depth: float | None,
            threads: int | None, compile_: bool, channels_last: bool,
            formats: tuple[str, ...], cmap: str, range_: str, invert: bool, batch_size: int,
            workers: int | None, skip_existing: bool,
            max_pixels: int, video_norm: str, ply_stride: int, focal_px: float | None,
            fov_deg: float | None, cx: float | None, cy: float | None,
            assume_scale: float | None, as_json: bool, quiet: bool, verbose: int) -> None:
    """Predict depth for images, folders (recursive), .txt lists, globs and videos."""
    from . import outputs, render
    from .pipeline import PredictOptions, run_predict

    _setup_logging(verbose, quiet)
    if threads:
        import torch

        old_threads = torch.get_num_threads()
        torch.set_num_threads(threads)  # restored when the command ends (matters in-process)
        click.get_current_context().call_on_close(lambda: torch.set_num_threads(old_threads))
    try:
        fmts = outputs.parse_formats(formats)
        render.lut(cmap)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    spec = _spec_or_usage(model)
    video_norm = _check_video_norm(video_norm)
    extras = {"ply_stride": ply_stride, "focal_px": focal_px, "fov_deg": fov_deg, "cx": cx,
              "cy": cy, "assume_scale": assume_scale}
    if "ply" in fmts and spec.output != "metric" and assume_scale is None:
        raise click.UsageError(
            f"--format ply needs metric depth, and {spec.name} predicts relative inverse depth, "
            "which has no scale; use a da2-metric-* model, or pass --assume-scale S to treat "
            "S / output as metres"
        )
    log = logging.getLogger("depthcli")
    if assume_scale is not None and spec.output == "metric":
        log.warning("--assume-scale is ignored: %s predicts metres already", spec.name)
    if focal_px is not None and fov_deg is not None:
        log.warning("--focal-px and --fov-deg both given; --focal-px wins")
    if any(v is not None for v in (focal_px, fov_deg, cx, cy, assume_scale)) and "ply" not in fmts:
        log.warning("point-cloud options have no effect without --format ply")
    if "ply" in fmts and not quiet:  # the intrinsics used are part of the result: show them
        logging.getLogger("depthcli.pointcloud").setLevel(logging.INFO)
    ropts = render.RenderOptions(cmap=cmap, invert=invert, **_parse_range(range_))  # type: ignore[arg-type]
    est = _load_estimator(model, weights, input_size, device, precision, max_depth, compile_,
                          channels_last)
    opts = PredictOptions(
        inputs=inputs, out_dir=out_dir,
        output=outputs.OutputOptions(fmts, ropts, metric=spec.output == "metric", extras=extras),
        batch_size=batch_size, workers=workers, skip_existing=skip_existing,
        max_pixels=max_pixels, video={"norm": video_norm},
    )
    bar = _Progress(not quiet, total=_known_total(inputs))
    try:
        summary = run_predict(opts, est, report=bar.write, progress=bar)
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    if not quiet or summary.failed:
        click.echo(summary.line(), err=True)
    if summary.interrupted:
        sys.exit(130)
    if summary.failed:
        click.echo(f"{summary.failed} input(s) failed", err=True)
        sys.exit(1)


def _known_total(inputs: tuple[str, ...]) -> int | None:
    """Number of inputs when they are all plain image files (folders stream: total unknown)."""
    from .io.images import IMAGE_EXTS

    paths = [Path(i) for i in inputs]
    if all(p.is_file() and p.suffix.lower() in IMAGE_EXTS for p in paths):
        return len(paths)
    return None


def _check_video_norm(text: str) -> str:
    from .video import parse_norm

    try:
        parse_norm(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--video-norm") from None
    return text.strip().lower()


def _spec_or_usage(model: str):  # type: ignore[no-untyped-def]
    try:
        return get_spec(model)
    except UnknownModelError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def models(as_json: bool) -> None:
    """List the models: size, licence, output kind, and whether weights are on disk."""
    from .weights import cached_path

    rows = []
    for name, s in MODEL_SPECS.items():
        path = cached_path(s)
        rows.append({
            "name": name, "params_m": s.params_m, "encoder": s.encoder.name,
            "output": s.output + (f" (0-{s.max_depth:g} m)" if s.max_depth else ""),
            "licence": s.licence, "repo": s.hub_repo, "file": s.hub_file,
            "hf_repo": s.hf_repo, "cached": str(path) if path else None,
            "default": name == DEFAULT_MODEL,
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'name':<27}{'params':>8}  {'output':<20}{'licence':<14}cached")
    for r in rows:
        star = "*" if r["default"] else " "
        click.echo(f"{r['name'] + star:<27}{r['params_m']:>7.1f}M  {r['output']:<20}"
                   f"{str(r['licence'])[:13]:<14}{'yes' if r['cached'] else 'no'}")
    click.echo("* default. Weights: --weights FILE, $DEPTHCLI_WEIGHTS_DIR, or the Hugging Face hub.")


@main.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--hf", is_flag=True, help="Fetch the transformers (-hf) safetensors instead.")
def download(names: tuple[str, ...], hf: bool) -> None:
    """Download checkpoints into the Hugging Face cache for offline use."""
    from .weights import resolve

    failed = 0
    for name in names:
        spec = _spec_or_usage(name)
        try:
            path = resolve(spec, None, prefer_hf=hf)
            click.echo(f"{spec.name}: {path}")
        except DepthCliError as exc:
            failed += 1
            click.echo(f"error: {exc}", err=True)
    if failed:
        sys.exit(1)


def _register_optional_commands() -> None:
    from .backends.export_command import export
    main.add_command(export)
    try:
        from .bench import bench
    except ImportError:
        return
    main.add_command(bench)


_register_optional_commands()
