"""NNCF settings side by side on one checkpoint's fp32 OpenVINO IR: int8 deviation and speed.

    python -m tools.int8_variants --weights FILE [--model da2-small] [--inputs DIR]
                                  [VARIANT ...]

Each variant quantises the cached fp32 IR (converted first if absent) on the built-in
calibration set, then runs the photos under `--inputs` through it and through the fp32 IR at
the model's preprocessing: mean and max |int8 - fp32| as a fraction of each photo's range
(mean over photos, worst photo, max), model ms/img (second of two passes per photo) and the
quantisation time. How the README's int8 table of NNCF settings was measured; depthcli itself
uses `default` (backends/int8.py: the head, residual additions and LayerNorms in float).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

VARIANTS = ("default", "all_int8", "head_fp32", "residual_fp32", "sdpa_fp32", "cal16", "mixed",
            "transformer_nosq", "mean_quantile")


def _settings(name: str) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(nncf.quantize keywords, AdvancedQuantizationParameters keywords, calibration scenes)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from depthcli.backends.int8 import FLOAT_PATTERNS, FLOAT_TYPES

    perf = {"preset": nncf.QuantizationPreset.PERFORMANCE}

    def floats(patterns: tuple[str, ...] = (), types: tuple[str, ...] = ()) -> dict[str, Any]:
        return {**perf, "ignored_scope": nncf.IgnoredScope(patterns=list(patterns),
                                                           types=list(types), validate=False)}

    head, residual = FLOAT_PATTERNS  # depthcli's float scope: the head; residual adds + MVN
    scope = floats(FLOAT_PATTERNS, FLOAT_TYPES)
    table: dict[str, tuple[dict[str, Any], dict[str, Any], int]] = {
        "default": (scope, {}, 8),  # what depthcli uses (backends/int8.py)
        "all_int8": (perf, {}, 8),  # depthcli before (scheme 1)
        "head_fp32": (floats((head,)), {}, 8),
        "residual_fp32": (floats((residual,), FLOAT_TYPES), {}, 8),
        "sdpa_fp32": (floats(FLOAT_PATTERNS, (*FLOAT_TYPES, "ScaledDotProductAttention")), {}, 8),
        "cal16": (scope, {}, 16),
        "mixed": ({**scope, "preset": nncf.QuantizationPreset.MIXED}, {}, 8),
        "transformer_nosq": ({"preset": nncf.QuantizationPreset.MIXED,
                              "model_type": nncf.ModelType.TRANSFORMER},
                             {"smooth_quant_alphas": AdvancedSmoothQuantParameters(matmul=-1)}, 8),
        "mean_quantile": (scope, {"activations_range_estimator_params":
                                  RangeEstimatorParametersSet.MEAN_QUANTILE}, 8),
    }
    return table[name]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--model", default="da2-small")
    ap.add_argument("--inputs", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "samples" / "images")
    ap.add_argument("variants", nargs="*", help=f"of {', '.join(VARIANTS)} [default: all]")
    a = ap.parse_args(argv)
    unknown = sorted(set(a.variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    a.variants = a.variants or list(VARIANTS)

    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    from depthcli.backends.calibration import Calibration, builtin
    from depthcli.bench.measure import deviation
    from depthcli.engine.core import DepthEngine
    from depthcli.io.images import read_image

    logging.getLogger("nncf").setLevel(logging.WARNING)
    est = DepthEngine.from_name(a.model, weights=a.weights, device="cpu", backend="openvino",
                                precision="fp32")
    entry = getattr(est.backend, "entry", None)
    assert entry is not None, "no OpenVINO cache entry"
    core = ov.Core()
    ir = core.read_model(str(Path(entry) / "model.xml"))
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    photos = [est.preprocess(read_image(p))[None] for p in sorted(a.inputs.iterdir())
              if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    fp32 = core.compile_model(ir, "CPU", config).create_infer_request()
    ref = [fp32.infer([x])[0].copy() for x in photos]

    def evaluate(model: Any) -> tuple[float, float, float, float]:
        request = core.compile_model(model, "CPU", config).create_infer_request()
        outs, seconds = [], 0.0
        for x in photos:
            request.infer([x])
            t = time.perf_counter()
            outs.append(request.infer([x])[0].copy())
            seconds += time.perf_counter() - t
        d = deviation(ref, outs)  # bench's measure: fractions of each photo's range
        return (d["mean_of_range_avg"], d["mean_of_range"], d["max_of_range"],
                seconds / len(photos))

    base_ms = evaluate(ir)[3] * 1000
    print(f"{a.model} fp32 IR: {base_ms:.0f} ms/img on {len(photos)} photos", flush=True)
    for name in a.variants:
        kwargs, advanced, scenes = _settings(name)
        cal = Calibration(builtin(scenes), est.preprocess, est.preprocess.input_size).tensors()
        t = time.perf_counter()
        q = nncf.quantize(ir, nncf.Dataset(cal), subset_size=len(cal), **kwargs,
                          advanced_parameters=AdvancedQuantizationParameters(
                              disable_bias_correction=True, **advanced))
        took = time.perf_counter() - t
        mean, worst, mx, s = evaluate(q)
        print(f"{name}: mean {mean:.2%}  worst photo {worst:.2%}  max {mx:.2%}  "
              f"{s * 1000:.0f} ms/img (x{base_ms / (s * 1000):.2f} fp32)  quantised in "
              f"{took:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
