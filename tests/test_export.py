"""ONNX export: the pos-embed rule in exported graphs, golden parity through ONNX Runtime at two
input sizes, dynamic shapes, metadata, and the verified/atomic publication (API and CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from depthcli.backends import export as export_mod  # noqa: E402
from depthcli.backends.export import ExportError, export_onnx, read_metadata  # noqa: E402
from depthcli.models.encoder import interpolate_pos_embed  # noqa: E402
from runtime_helpers import (  # noqa: E402
    golden_case,
    golden_model,
    memo_onnx_export,
    rel_err,
    to_original,
)

# Both sides of the untouched-table rule: 37x37 (square 518 input) is the identity; 37 rows
# with other widths, 36/38 neighbours, tiny and large grids are all resampled.
GRIDS = [(37, 37), (37, 56), (56, 37), (37, 38), (36, 37), (38, 38), (1, 1), (1, 37), (37, 1),
         (2, 200), (300, 5), (74, 74), (26, 39)]


@pytest.fixture(scope="module", autouse=True)
def _shared_exports():
    mp = pytest.MonkeyPatch()
    mp.setattr(torch.onnx, "export", memo_onnx_export(torch.onnx.export))
    yield
    mp.undo()


class _PosEmbed(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.pe = torch.nn.Parameter(torch.randn(1, 1 + 37 * 37, 16, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return interpolate_pos_embed(self.pe, x.shape[2] // 14, x.shape[3] // 14)


def _official(pe: torch.Tensor, h0: int, w0: int) -> np.ndarray:
    """DESIGN.md §3.2 written out: untouched for square 37x37, else F.interpolate(scale_factor)."""
    if (h0, w0) == (37, 37):
        return pe[:, 1:].detach().numpy()
    grid = pe[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    out = F.interpolate(grid, scale_factor=((h0 + 0.1) / 37, (w0 + 0.1) / 37), mode="bicubic",
                        antialias=False)
    return out.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1).detach().numpy()


def test_pos_embed_rule_in_exported_graphs(tmp_path) -> None:
    """Exported once with dynamic H, W: ONNX Runtime and OpenVINO (from the ONNX file and from
    the traced module) follow the official rule on every grid, identity case included."""
    import onnx

    m = _PosEmbed().eval()
    d = torch.export.Dim
    prog = torch.onnx.export(m, (torch.zeros(1, 3, 70, 98),), dynamo=True, opset_version=18,
                             dynamic_shapes={"x": {2: 14 * d("h", min=1, max=1024),
                                                   3: 14 * d("w", min=1, max=1024)}})
    path = tmp_path / "pe.onnx"
    prog.save(path)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Where" in ops and "Resize" not in ops  # the identity is the graph's, not a runtime's
    session = ort.InferenceSession(str(path))
    runs = {"onnxruntime": lambda x: session.run(None, {"x": x})[0]}
    try:
        import openvino as ov
    except ImportError:
        ov = None
    if ov is not None:
        from depthcli.backends.telemetry import usage_reports_off

        usage_reports_off()  # as the product's conversions do (backends/telemetry.py)
        core = ov.Core()
        cfg = {"INFERENCE_PRECISION_HINT": "f32"}
        from_onnx = core.compile_model(ov.convert_model(str(path)), "CPU", cfg)
        traced = core.compile_model(ov.convert_model(m, example_input=torch.zeros(1, 3, 70, 98),
                                                     input=[ov.PartialShape([1, 3, -1, -1])]),
                                    "CPU", cfg)
        runs["openvino(onnx)"] = lambda x: from_onnx(x)[0]
        runs["openvino(trace)"] = lambda x: traced(x)[0]
    for h0, w0 in GRIDS:
        ref = _official(m.pe, h0, w0)
        x = np.zeros((1, 3, 14 * h0, 14 * w0), np.float32)
        for name, run in runs.items():
            out = run(x)
            assert out.shape == (1, 1 + h0 * w0, 16), (name, h0, w0)
            assert np.array_equal(out[:, :1], m.pe[:, :1].detach().numpy())
            # OpenVINO runs the float64 weight arithmetic in float32: ~6e-6 of max; ORT 6e-7.
            err = np.abs(out[:, 1:] - ref).max() / np.abs(ref).max()
            assert err < 2e-5, (name, h0, w0, err)
            if (h0, w0) == (37, 37):
                assert np.array_equal(out[:, 1:], ref), name


@pytest.fixture(scope="module")
def da2(golden_keys, tmp_path_factory):
    return golden_model("da2-small", golden_keys, tmp_path_factory.mktemp("exp"))


@pytest.fixture(scope="module")
def da2_onnx(da2, tmp_path_factory) -> tuple[Path, list]:
    path = tmp_path_factory.mktemp("onnx") / "da2.onnx"
    checks = export_onnx(da2, path, check_shapes=[(2, 70, 98), (1, 42, 56)])
    return path, checks


def test_export_golden_parity_two_sizes(da2_onnx, golden_dir, da2) -> None:
    """square@518 (the untouched table) and landscape@364 (resampled) through ONNX Runtime and
    our preprocessing/postprocessing match the official outputs."""
    path, checks = da2_onnx
    assert [c.shape for c in checks] == [(2, 3, 70, 98), (1, 3, 42, 56)]
    assert all(c.max_dev < 1e-4 for c in checks)
    sess = ort.InferenceSession(str(path))
    for entry in ("square@518", "landscape@364"):
        x, gold = golden_case(golden_dir, "da2-small", entry, da2.spec)
        out = sess.run(["depth"], {"pixel_values": x})[0]
        assert rel_err(to_original(out, gold, da2.spec), gold) < 1e-4, entry


def test_export_dynamic_shapes_and_metadata(da2_onnx, da2) -> None:
    path, _ = da2_onnx
    sess = ort.InferenceSession(str(path))
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    assert inp.name == "pixel_values" and out.name == "depth"
    assert inp.shape[1] == 3 and all(isinstance(s, str) for s in (inp.shape[0], *inp.shape[2:]))
    x = np.random.default_rng(1).standard_normal((3, 3, 56, 182)).astype(np.float32)  # not exported
    with torch.inference_mode():
        ref = da2(torch.from_numpy(x)).numpy()
    assert rel_err(sess.run(None, {"pixel_values": x})[0], ref) < 1e-4
    meta = read_metadata(path)
    assert meta["model_name"] == "da2-small" and meta["output_kind"] == "relative"
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(meta["std"]) == [0.229, 0.224, 0.225]
    assert meta["size_multiple"] == "14" and meta["input_size"] == "518"
    assert meta["shapes"] == "dynamic" and meta["max_depth"] == "" and "relative" in meta["units"]


def test_export_refuses_a_mismatch_and_leaves_no_file(da2, da2_onnx, tmp_path) -> None:
    """Above the tolerance: ExportError, nothing under the final name, no temporary left."""
    dest = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="does not reproduce"):
        export_onnx(da2, dest, check_shapes=[(2, 70, 98)], tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


def test_export_static_rejects_bad_size(da2, tmp_path) -> None:
    with pytest.raises(ExportError, match="multiples of 14"):
        export_onnx(da2, tmp_path / "s.onnx", static_hw=(500, 700))


def test_export_cli_static_and_failure(tmp_path, monkeypatch) -> None:
    """`depthcli export MODEL --weights F -o X --static HxW`: prints the deviations, metric
    metadata; a failed check exits non-zero and leaves no file. (The command, not the numbers:
    a tiny metric configuration; golden parity through ONNX is tested above.)"""
    from click.testing import CliRunner

    from conftest import make_checkpoint
    from depthcli.backends.export import Check
    from depthcli.cli.export import export

    ckpt = make_checkpoint(tmp_path / "m.pth", "da2-metric-tiny-test")
    out = tmp_path / "o" / "m.onnx"
    args = ["da2-metric-tiny-test", "--weights", str(ckpt), "-o", str(out), "--static", "70x98"]
    r = CliRunner().invoke(export, args)
    assert r.exit_code == 0, r.output
    assert "1x3x70x98: max" in r.output and "2x3x70x98: max" in r.output
    meta = read_metadata(out)
    assert meta["shapes"] == "static 70x98" and meta["max_depth"] == "20"
    assert meta["units"] == "metres"
    sess = ort.InferenceSession(str(out))
    assert sess.get_inputs()[0].shape[2:] == [70, 98]

    out.unlink()
    monkeypatch.setattr(export_mod, "verify_onnx",
                        lambda net, path, shapes: [Check((1, 3, 70, 98), 0.5, 0.1)])
    r = CliRunner().invoke(export, args)
    assert r.exit_code != 0 and "does not reproduce" in r.output
    assert list(out.parent.iterdir()) == []
