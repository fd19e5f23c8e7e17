"""What several commands share: logging, the progress bar, model options and model loading.

Nothing here imports torch at import time: only a command that runs a model pays for it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import UnknownModelError
from ..models.registry import ModelSpec, get_spec

if TYPE_CHECKING:
    from ..engine.core import DepthEngine

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
BACKENDS = ("auto", "torch", "openvino", "onnxruntime")


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING
    if verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    elif quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr,
                        force=True)
    # Pillow's decoders log their own complaints (e.g. `More samples per pixel than can be
    # decoded` for a damaged TIFF) naming no file; the input's one `error: PATH: reason` line
    # says it. Shown with -vv, like the C libraries' lines (native_stderr).
    logging.getLogger("PIL").setLevel(logging.DEBUG if verbose >= 2 else logging.CRITICAL)


def silence_opencv() -> None:
    """OpenCV's own decoder warnings would duplicate our one-line errors."""
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


class Progress:
    """tqdm on stderr when it is a terminal and not --quiet; a no-op otherwise.

    The run's bar counts inputs (and, once videos run, their frames in its postfix); each pass
    over a video gets a second bar in frames (`frame_bar`). `stream` forces the bars onto a
    file whatever it is (tests).
    """

    def __init__(self, enabled: bool, unit: str = "input", total: int | None = None,
                 stream: Any = None) -> None:
        self.bar = None
        self.stream = stream if stream is not None else sys.stderr
        self.video_frames = 0
        if enabled and (stream is not None or sys.stderr.isatty()):
            from tqdm import tqdm

            self.bar = tqdm(unit=unit, file=self.stream, dynamic_ncols=True, total=total)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def set_total(self, n: int) -> None:
        """The number of inputs, once a count of them has finished: the bar gains an ETA."""
        if self.bar is not None:
            with self.bar.get_lock():
                self.bar.total = n
            self.bar.refresh()

    def count_in_background(self, count: Callable[[], int]) -> None:
        """Run `count()` in a daemon thread and set the total when it returns."""
        if self.bar is None or self.bar.total is not None:
            return
        import threading

        def work() -> None:
            try:
                self.set_total(count())
            except Exception:  # noqa: BLE001 - cosmetic: the bar just stays without a total
                pass

        threading.Thread(target=work, name="depthcli-count", daemon=True).start()

    def frames(self, n: int) -> None:
        """`n` more video frames: shown in the run bar's postfix."""
        self.video_frames += n
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.video_frames} frames", refresh=False)

    def frame_bar(self, desc: str, total: int, estimated: bool, done: int = 0) -> Any:
        """A bar in frames for one pass over a video (an estimated total is marked '~')."""
        return _FrameBar(self, desc, total, estimated, done)

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=self.stream)
        else:
            click.echo(msg, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _FrameBar:
    """One video pass under the run's bar: frames done / total, frames/s, ETA (tqdm's rate)."""

    def __init__(self, run: Progress, desc: str, total: int, estimated: bool, done: int) -> None:
        self.run, self.estimated = run, estimated
        self.bar = None
        if run.bar is not None:
            from tqdm import tqdm

            label = f"{desc} (total ~{total}, estimated)" if estimated and total else desc
            self.bar = tqdm(total=total or None, initial=done, unit="frame", desc=label,
                            file=run.stream, dynamic_ncols=True, leave=False, position=1)

    def update(self, n: int) -> None:
        self.run.frames(n)
        if self.bar is not None:
            if self.bar.total is not None and self.bar.n + n > self.bar.total:
                self.bar.total = self.bar.n + n  # an estimate that was short
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def spec_or_usage(model: str, param: str = "--model") -> ModelSpec:
    try:
        return get_spec(model)
    except UnknownModelError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from None


def model_options(default_model: str | None) -> Callable[[Any], Any]:
    """Options shared by commands that load a model."""
    model_help = ("Registry name (see 'depthcli models') or official / -hf hub repo id"
                  + (" [default: da2-small for images, vda-small for videos; with --weights: "
                     "da2-small]." if default_model is None else "."))

    def decorate(f: Any) -> Any:
        for opt in reversed([
            click.option("--model", "-m", default=default_model,
                         show_default=default_model is not None, help=model_help),
            click.option("--weights", type=click.Path(path_type=Path),
                         help="Checkpoint file: official .pth/.bin, transformers "
                              ".safetensors (-hf layout) or a DA3 model.safetensors (or the "
                              "folder holding it with its config.json)."),
            click.option("--input-size", type=click.IntRange(min=1), default=None,
                         help="Short side of the network input; sides are rounded to "
                              "multiples of 14 as the official Resize does [default: 518]; "
                              "Depth Anything 3: the long side [default: 504]."),
            click.option("--device", default="auto", show_default=True,
                         type=click.Choice(DEVICES), help="auto = cuda, then mps, then cpu."),
            click.option("--precision", default="auto", show_default=True,
                         type=click.Choice(PRECISIONS),
                         help="auto = bf16 (or fp16) on CUDA, fp32 elsewhere; int8 = OpenVINO "
                              "post-training quantisation on the CPU (never the default; pip "
                              "install 'depthcli[int8]')."),
            click.option("--calibrate", type=click.Path(path_type=Path), default=None,
                         metavar="DIR",
                         help="--precision int8: calibrate on the images under DIR [default: "
                              "the built-in synthetic set]; cached per set."),
            click.option("--backend", default="auto", show_default=True,
                         type=click.Choice(BACKENDS), envvar="DEPTHCLI_BACKEND",
                         help="Runtime: auto = OpenVINO on CPUs where installed, torch on GPUs "
                              "and for video models [env: DEPTHCLI_BACKEND]."),
            click.option("--max-depth", type=click.FloatRange(min=0, min_open=True),
                         default=None,
                         help="Metric models: metres at the top of the sigmoid "
                              "[default: 20 indoor, 80 outdoor]."),
            click.option("--threads", type=click.IntRange(min=1), default=None,
                         help="torch intra-op threads [default: torch's choice]; lower it when "
                              "other jobs share the CPU."),
            click.option("--compile", "compile_", is_flag=True,
                         help="torch.compile the model (torch backend)."),
            click.option("--channels-last", is_flag=True,
                         help="channels_last memory format (torch backend; always on for CPU)."),
        ]):
            f = opt(f)
        return f

    return decorate


def check_device(device: str) -> None:
    """An absent --device is a usage error before anything loads (auto/cpu: no torch needed)."""
    if device in ("auto", "cpu"):
        return
    absent = _surely_absent(device)
    if absent:
        raise click.BadParameter(absent, param_hint="--device")
    from ..engine.device import resolve_device

    try:
        resolve_device(device)
    except ValueError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[-1], param_hint="--device") from None


@dataclass(frozen=True)
class ModelSettings:
    """How each model of a `predict` run is loaded, on either engine (the CLI's model options)."""

    weights: Path | None
    input_size: int | None
    device: str
    precision: str
    backend: str
    max_depth: float | None
    compile_: bool
    channels_last: bool
    output_size: str = "input"  # "input" or "network" (--output-size)
    camera: dict[str, float | None] | None = None  # --focal-px/--fov-deg/--cx/--cy (DA3 metric)
    calibrate: Path | None = None  # --calibrate DIR (int8)


def _surely_absent(device: str) -> str | None:
    """Why `device` cannot be there, when that is known without importing torch (~5 s)."""
    from ..engine.device import gpu_driver_loaded

    if device == "mps" and sys.platform != "darwin":
        return "MPS is not available on this machine (Apple GPUs only)"
    if device == "cuda" and sys.platform.startswith("linux") and not gpu_driver_loaded():
        return "CUDA is not available on this machine (no GPU driver loaded)"
    return None


def estimator_loader(*, weights: Path | None, input_size: int | None, device: str,
                     precision: str, backend: str, max_depth: float | None, compile_: bool,
                     channels_last: bool, output_size: str = "input",
                     camera: dict[str, float | None] | None = None,
                     resolved: dict[str, Path] | None = None,
                     job_size: Callable[[], tuple[int, float] | None] | None = None,
                     calibrate: Path | None = None,
                     ) -> Callable[[str], DepthEngine]:
    """`load(model_name)` → a DepthEngine with these settings (called when first needed).

    `camera`: --focal-px/--fov-deg/--cx/--cy, for da3-metric-large's metres. `resolved` holds
    checkpoints already looked up (`preflight.resolve_checkpoints`); half precision with no
    fast path on the device runs fp32 (`depthcli.engine.precision`). `job_size()`: the number of
    inputs of the job and their typical aspect ratio when known, for `--backend auto`'s first
    run on a checkpoint.
    """
    found = resolved or {}

    def load(model: str) -> DepthEngine:
        from ..engine.core import DepthEngine
        from ..engine.device import resolve_device
        from ..engine.precision import cli_precision

        checkpoint = weights if weights is not None else found.get(model)
        if not (compile_ or channels_last or calibrate is not None
                or any(v is not None for v in (camera or {}).values())):
            from ..engine.warm import warm_engine

            warm = warm_engine(model, checkpoint, max_depth=max_depth, device=device,
                               precision=precision, backend=backend, input_size=input_size,
                               output_size=output_size)
            if warm is not None:
                return warm
        from .runtime import require_torch_stack

        size = job_size() if job_size and backend == "auto" else None

        require_torch_stack()  # a broken install: one line with its repair, not a traceback
        try:
            dev = resolve_device(device)
            return DepthEngine.from_name(
                model, weights=checkpoint,
                max_depth=max_depth, device=dev, precision=cli_precision(precision, dev.type),
                input_size=input_size, compile=compile_, channels_last=channels_last,
                backend=backend, output_size=output_size, camera=camera,
                job_inputs=None if size is None else size[0],
                job_aspect=1.0 if size is None else size[1],
                calibrate=calibrate,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None

    return load
