"""ONNX export of a Depth Anything model, checked in ONNX Runtime before it is published.

The file takes the normalised (B, 3, H, W) float32 batch (RGB, ImageNet mean/std, H and W
multiples of 14) as `pixel_values` and returns (B, H, W) float32 `depth` at the input size;
batch, height and width are dynamic unless `static_hw` fixes H and W. The position-embedding
rule of the official code holds for every size because the encoder computes it from the sizes
inside the graph (models/encoder.py). Metadata props carry what a consumer needs to preprocess
and read the output (model, mean, std, size multiple, input size, output kind, units, max depth).

Community exports of Depth Anything are fixed-size and unchecked; this one is written to a
temporary folder beside the destination, run in ONNX Runtime against the torch model on two
shapes, and renamed into place only if both are within `tolerance` of the depth range.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..engine.device import run_threads
from ..errors import DepthCliError

if TYPE_CHECKING:
    import torch

    from ..models import DepthAnything

_logger = logging.getLogger(__name__)

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "depth"
MULTIPLE = 14
TOLERANCE = 1e-4  # of the depth range: the official code's own float32 spread is ~2e-6
MAX_PATCHES = 1024  # per side (14336 px): an upper bound torch.export needs for a dynamic dim
# Verification inputs (batch, H, W). Dynamic: the untouched-table case (518x518 = 37x37 square)
# and a resampled one with batch 2, so both sides of the pos-embed rule's Where are checked.
DYNAMIC_CHECKS: tuple[tuple[int, int, int], ...] = ((1, 518, 518), (2, 196, 280))
EXAMPLE_HW = (70, 98)  # the traced example; a checked shape differs from it


class ExportError(DepthCliError):
    """The model could not be exported, or the export does not reproduce the torch model."""


@dataclass(frozen=True)
class Check:
    """One verification run: deviation of ONNX Runtime from torch, as fractions of the range."""

    shape: tuple[int, int, int, int]
    max_dev: float
    mean_dev: float

    def __str__(self) -> str:
        return (f"{'x'.join(map(str, self.shape))}: max {self.max_dev:.2e}, "
                f"mean {self.mean_dev:.2e} of the range")


def require_onnx() -> None:
    """Raise a one-line install hint when the export stack is missing."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'depthcli[onnx]'")


def default_metadata(model: DepthAnything) -> dict[str, str]:
    """What a consumer of the file needs: preprocessing constants and the output's meaning."""
    from ..version import __version__

    spec = model.spec
    return {
        "model_name": spec.name,
        "family": spec.family,
        "input": f"{INPUT_NAME}: (batch, 3, H, W) float32 RGB, (x / 255 - mean) / std",
        "mean": json.dumps(list(spec.mean)),
        "std": json.dumps(list(spec.std)),
        "size_multiple": str(MULTIPLE),
        "input_size": str(spec.input_size),
        "resize": "keep aspect, short side to input_size, each side rounded to size_multiple "
                  "(official lower_bound rule), bicubic",
        "output": f"{OUTPUT_NAME}: (batch, H, W) float32 at the input size",
        "output_kind": spec.output,
        "units": spec.unit,
        "max_depth": "" if spec.output != "metric" else f"{model.max_depth:g}",
        "upsample_align_corners": str(spec.upsample_align_corners).lower(),
        "producer": f"depthcli {__version__}",
    }


def fp32_cpu(model: DepthAnything) -> DepthAnything:
    """The model itself if already fp32 on CPU in eval mode, else a converted copy.

    Exporting and tracing do not modify a module; converting it would, so that gets a copy.
    """
    import torch

    params = list(model.parameters())
    if model.training or any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
        return copy.deepcopy(model).float().cpu().eval()
    return model


def _inputs(shape: tuple[int, int, int, int], seed: int = 0) -> torch.Tensor:
    """Smooth, image-like normalised inputs: random noise would make depth maps degenerate."""
    import torch

    b, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, h)[:, None]
    xx = torch.linspace(0, 1, w)[None, :]
    phase = torch.rand(b, c, 1, 1, generator=g) * 6
    noise = 0.1 * torch.randn(shape, generator=g)
    return (torch.sin(phase + 5 * xx + 3 * yy) * 1.5 + noise).float()


def compare(model: DepthAnything, run: object, shapes: Sequence[tuple[int, int, int]],
            ) -> list[Check]:
    """Run `run(x: np.ndarray) -> np.ndarray` and the torch model on each (B, H, W) shape."""
    import torch

    checks = []
    for i, (b, h, w) in enumerate(shapes):
        x = _inputs((b, 3, h, w), seed=i)
        with torch.inference_mode():
            ref = model(x).numpy()
        got = np.asarray(run(x.numpy()))  # type: ignore[operator]
        if got.shape != ref.shape:
            raise ExportError(f"output shape {got.shape} for input {tuple(x.shape)}, "
                              f"expected {ref.shape}")
        span = float(ref.max() - ref.min()) or 1.0
        diff = np.abs(got.astype(np.float64) - ref)
        checks.append(Check((b, 3, h, w), float(diff.max() / span), float(diff.mean() / span)))
    return checks


def _check_hw(static_hw: tuple[int, int]) -> tuple[int, int]:
    h, w = (int(v) for v in static_hw)
    if h <= 0 or w <= 0 or h % MULTIPLE or w % MULTIPLE:
        raise ExportError(
            f"static size {h}x{w}: both sides must be positive multiples of {MULTIPLE}")
    return h, w


def export_onnx(
    model: DepthAnything,
    path: str | os.PathLike[str],
    *,
    opset: int = 18,
    static_hw: tuple[int, int] | None = None,
    metadata: Mapping[str, str] | None = None,
    check_shapes: Sequence[tuple[int, int, int]] | None = None,
    tolerance: float = TOLERANCE,
    window: int | None = None,
) -> list[Check]:
    """Export `model` to `path` (dynamo exporter), verify it in ONNX Runtime, publish it.

    `metadata` entries are added to (and override) `default_metadata(model)`. `check_shapes`
    are (batch, H, W) inputs for the verification (default: 518x518 and 2x196x280, or the
    static size at batch 1 and 2). Above `tolerance` of the range on any of them: ExportError,
    and nothing is left under `path`. The caller's module is not modified. `window`: a fixed
    batch (the frames of a temporal model's window, backends/graph.py), H and W dynamic.
    """
    require_onnx()
    import torch

    if opset < 18:
        raise ExportError(f"opset {opset}: the exporter needs opset 18 or newer")
    dest = Path(path)
    net = fp32_cpu(model)
    if static_hw is not None:
        h, w = _check_hw(static_hw)
        example = torch.zeros(2, 3, h, w)  # batch 2: torch.export specialises sizes 0 and 1
        dims: dict[int, object] = {0: torch.export.Dim("batch", min=1, max=1024)}
        checks = list(check_shapes or ((1, h, w), (2, h, w)))
    else:
        example = torch.zeros(window or 2, 3, *EXAMPLE_HW)
        dims = {} if window else {0: torch.export.Dim("batch", min=1, max=1024)}
        dims |= {2: MULTIPLE * torch.export.Dim("h_patches", min=1, max=MAX_PATCHES),
                3: MULTIPLE * torch.export.Dim("w_patches", min=1, max=MAX_PATCHES)}
        checks = list(check_shapes or DYNAMIC_CHECKS)
    meta = {**default_metadata(net), "shapes": "dynamic" if static_hw is None
            else f"static {static_hw[0]}x{static_hw[1]}", **(metadata or {})}

    log = io.StringIO()  # the exporter prints progress lines on stdout; keep them for -vv
    try:
        with contextlib.redirect_stdout(log), torch.no_grad():
            program = torch.onnx.export(
                net, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes={"x": dims}, optimize=True,
                verbose=False,
            )
    except Exception as exc:  # exporter failures surface as one clear error
        _logger.debug("exporter output:\n%s", log.getvalue())
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise ExportError(f"torch.onnx.export failed for {net.spec.name}: {first}") from exc
    _logger.debug("exporter output:\n%s", log.getvalue())
    assert program is not None
    program.model.metadata_props.update({k: str(v) for k, v in meta.items()})
    program.model.doc_string = (
        f"Depth Anything {net.spec.name} exported by depthcli: {meta['input']} -> {meta['output']}"
        f" ({meta['units']})")

    dest.parent.mkdir(parents=True, exist_ok=True)
    # A folder, not a file: files > 2 GB get a `<name>.data` companion named after the file.
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        staged = tmp / dest.name
        program.save(staged)
        results = verify_onnx(net, staged, checks)
        bad = [c for c in results if not c.max_dev <= tolerance]
        if bad:
            raise ExportError(
                f"the exported graph does not reproduce the torch model within {tolerance:g} of "
                f"the range ({'; '.join(map(str, bad))}); nothing written to {dest}")
        # Companions first, the .onnx last: a reader never sees the model without its data.
        for p in sorted(tmp.iterdir(), key=lambda p: p.name == dest.name):
            os.replace(p, dest.parent / p.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def ort_session(path: str | os.PathLike[str], providers: Sequence[str] = ("CPUExecutionProvider",),
                threads: int | None = None) -> object:
    """An ONNX Runtime session with full graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = threads or run_threads()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))


def verify_onnx(model: DepthAnything, path: str | os.PathLike[str],
                shapes: Sequence[tuple[int, int, int]]) -> list[Check]:
    """Deviation of the ONNX file in ONNX Runtime (CPU) from `model` on each (B, H, W) shape."""
    session = ort_session(path)

    def run(x: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]  # type: ignore[attr-defined]

    return compare(model, run, shapes)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata props of an ONNX file (without loading large external data)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}
