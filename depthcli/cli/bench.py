"""`depthcli bench`: the click layer of the benchmark (the work is in `depthcli.bench`)."""

from __future__ import annotations

from pathlib import Path

import click

from ..models.registry import DEFAULT_MODEL
from .common import BACKENDS, DEVICES, PRECISIONS
from .runtime import require_torch_stack

EPILOG = """\b
Examples:
  depthcli bench                                   # fp32, the sample photos, 3 runs
  depthcli bench --precision bf16 --peer-precision fp32
  depthcli bench --device cuda --precision bf16 -b 64 --no-peer
  depthcli bench --backend torch,openvino,onnxruntime   # side by side, same runs
  depthcli bench --precision int8                  # OpenVINO int8 (vs torch fp32, the peer)
  depthcli bench --backend openvino --precision int8,fp32   # int8 beside fp32, same runs
  depthcli bench --startup --backend torch,openvino     # fixed cost of a run, step by step
"""


def peer_installed() -> bool:
    """Whether the peer's package can be found (transformers is only in the [test] extra)."""
    import importlib.util

    try:
        return importlib.util.find_spec("transformers") is not None
    except (ImportError, ValueError):  # a broken or None entry in sys.modules
        return False


def _backends(ctx: click.Context, param: click.Parameter,
              value: str | None) -> tuple[str, ...] | None:
    from ..bench.contender import parse_backends

    if value is None:
        return None
    try:
        return parse_backends(value, BACKENDS)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _precisions(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from ..bench.contender import parse_backends

    try:
        return parse_backends(value, PRECISIONS)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(epilog=EPILOG)
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help="Registry name.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint file [default: synthetic recipe weights built in memory].")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(DEVICES), help="auto = cuda, then mps, then cpu.")
@click.option("--precision", "precisions", default="fp32", show_default=True,
              callback=_precisions,
              help=f"Precision(s) of ours, comma-separated ({', '.join(PRECISIONS)}; auto: half "
                   "on CUDA; int8: OpenVINO only), e.g. int8,fp32: each backend at each, side "
                   "by side.")
@click.option("--calibrate", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="int8: calibrate on the images under DIR [default: the "
                                  "built-in synthetic set].")
@click.option("--peer-precision", default=None, type=click.Choice(["fp32", "fp16", "bf16"]),
              help="Precision of the transformers peer [default: the same as --precision; "
                   "auto resolves first].")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images per forward pass (same network size).")
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed repetitions of each measurement (median and spread are reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Untimed passes over one image of each input shape first.")
@click.option("--images", "n_images", type=click.IntRange(min=1), default=None,
              help="Number of images (the inputs are cycled) [default: all of them].")
@click.option("--inputs", "source", type=click.Path(file_okay=False, path_type=Path),
              default=None,
              help="Folder of images [default: ../shared/samples/images beside the checkout; "
                   "generated ~2.8 MP photos when that is absent].")
@click.option("--input-size", type=click.IntRange(min=1), default=None,
              help="Short side of the network input [default: 518].")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Decode/preprocess threads of the end-to-end run.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads [default: torch's choice].")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--channels-last", is_flag=True, help="channels_last memory format.")
@click.option("--backend", "backends", default=None, callback=_backends,
              help=f"Runtime(s) under test, comma-separated ({', '.join(BACKENDS)}), e.g. "
                   "torch,openvino,onnxruntime: measured side by side in the same runs, each "
                   "compared with torch fp32 [default: torch; openvino with --precision int8].")
@click.option("--no-peer", is_flag=True, help="Skip the transformers pipeline.")
@click.option("--startup", is_flag=True,
              help="Measure only the fixed cost of a run instead: fresh processes from their "
                   "start to the first image entering the network, step by step (imports, "
                   "checkpoint read, cache key, conversion or cache load, compile, first "
                   "image), --runs times per backend after --warmup untimed processes.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def bench(model: str, weights: Path | None, device: str, precisions: tuple[str, ...],
          calibrate: Path | None, peer_precision: str | None, batch_size: int, runs: int, warmup: int,
          n_images: int | None, source: Path | None, input_size: int | None, workers: int,
          threads: int | None, compile_: bool, channels_last: bool,
          backends: tuple[str, ...] | None, no_peer: bool, startup: bool, as_json: bool) -> None:
    """Benchmark stages, end-to-end images/s, memory and GFLOP/s against the transformers pipeline.

    Each run measures, back to back: the matmul peak, our stages, our end-to-end pass, then the
    peer's model and end-to-end pass, so that ours and the peer's see the same machine load;
    ratios are medians of per-run ratios.
    """
    if not no_peer and not peer_installed():
        click.echo("transformers is not installed: benchmarking without the peer (pip install "
                   "'transformers>=4.45' to compare with its pipeline)", err=True)
        no_peer = True
    if backends is None:
        backends = ("openvino",) if "int8" in precisions else ("torch",)
    if "int8" in precisions:
        from ..backends import BackendError, check_int8

        try:
            check_int8("openvino", device if device != "auto" else "cpu")
        except BackendError as exc:
            raise click.BadParameter(str(exc), param_hint="--precision") from None
        if not {"openvino", "auto"} & set(backends):
            raise click.BadParameter("int8 runs on --backend openvino only",
                                     param_hint="--precision")
    if startup and precisions != ("fp32",):
        raise click.UsageError("--startup measures fp32")
    require_torch_stack()
    from ..bench.run import BenchOptions, run_bench
    from ..errors import DepthCliError, InputError

    try:
        run_bench(BenchOptions(
            model=model, weights=weights, device=device, precision=precisions[0],
            precisions=precisions, calibrate=calibrate,
            peer_precision=peer_precision, batch_size=batch_size, runs=runs, warmup=warmup,
            n_images=n_images, source=source, input_size=input_size, workers=workers,
            threads=threads, compile=compile_, channels_last=channels_last, backends=backends,
            peer=not no_peer, as_json=as_json, startup=startup))
    except InputError as exc:
        raise click.UsageError(str(exc)) from None
    except DepthCliError as exc:
        raise click.ClickException(str(exc)) from None
