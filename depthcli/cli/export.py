"""`depthcli export`: write a verified, dynamic-shape ONNX file of a registry model.

The CLI group imports this module only when `export` runs, and this module imports torch only
inside the command. The work is backends/export.py's; this only parses and reports.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

if TYPE_CHECKING:
    from ..models import DepthAnything


def _parse_hw(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise click.BadParameter(f"{text!r}: expected HxW, e.g. 518x784", param_hint="--static")
    return int(m.group(1)), int(m.group(2))


@click.command("export", epilog="""\b
Examples:
  depthcli export da2-small -o da2-small.onnx
  depthcli export da2-small --weights depth_anything_v2_vits.pth -o m.onnx
  depthcli export da2-metric-indoor-small -o indoor.onnx --static 518x686

\b
Run it (ONNX Runtime): see the README's "Runtimes" section for a 10-line example that
reproduces `depthcli predict --format npy`.
""")
@click.argument("model")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Checkpoint file (official or transformers layout) "
              "[default: the model's published weights].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Destination .onnx file.")
@click.option("--opset", type=click.IntRange(min=18), default=18, show_default=True,
              help="ONNX opset.")
@click.option("--static", "static", default=None, metavar="HxW",
              help="Fix height and width (multiples of 14), e.g. 518x784 [default: dynamic].")
@click.option("--max-depth", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Metric models: metres at the sigmoid's top [default: the model's].")
def export(model: str, weights: Path | None, output: Path, opset: int, static: str | None,
           max_depth: float | None) -> None:
    """Export MODEL to ONNX: (B, 3, H, W) normalised float32 in, (B, H, W) depth out.

    The file is checked in ONNX Runtime against the torch model on two input shapes before it
    is written; the deviations are printed, and above 1e-4 of the depth range the command fails
    and leaves no file.
    """
    from ..backends.export import TOLERANCE, export_onnx, require_onnx
    from ..errors import DepthCliError
    from ..models import create_model

    hw = _parse_hw(static)
    from .common import spec_or_usage
    from .runtime import require_torch_stack

    da3 = spec_or_usage(model).da3
    if da3 is not None and da3.any_view:
        raise click.UsageError(f"{model}: Depth Anything 3 any-view models do not export to ONNX "
                               "yet (torch.export cannot trace their RoPE with dynamic sizes); "
                               "the monocular ones (da3-mono-large, da3-metric-large) do")
    require_torch_stack()
    try:
        require_onnx()
        net = cast("DepthAnything", create_model(model, weights=weights, max_depth=max_depth))
        checks = export_onnx(net, output, opset=opset, static_hw=hw)
    except DepthCliError as exc:
        raise click.ClickException(str(exc)) from exc
    import onnxruntime

    click.echo(f"wrote {output} ({net.spec.name}, opset {opset}, "
               f"{'dynamic batch/height/width' if hw is None else f'static {hw[0]}x{hw[1]}'})")
    click.echo(f"checked in ONNX Runtime {onnxruntime.__version__} against torch "
               f"(limit {TOLERANCE:g} of the range):")
    for c in checks:
        click.echo(f"  {c}")
