"""Colour LUTs, normalisation and orientation."""

from __future__ import annotations

import numpy as np
import pytest

from depthcli.outputs import OutputOptions, encode_visual, render


@pytest.mark.parametrize("name", ["Spectral_r", "Spectral", "inferno", "turbo", "viridis", "magma", "gray"])
def test_luts_equal_matplotlib_truncated(name: str) -> None:
    mpl = pytest.importorskip("matplotlib")
    idx = np.arange(256, dtype=np.uint8)
    expected = (mpl.colormaps[name](idx)[:, :3] * 255).astype(np.uint8)
    assert np.array_equal(render.lut(name), expected)


def test_official_colour_pipeline_bitwise() -> None:
    """run.py: (d-min)/(max-min)*255 -> uint8 -> Spectral_r LUT -> *255 -> uint8 -> BGR."""
    mpl = pytest.importorskip("matplotlib")
    d = np.random.default_rng(0).random((17, 23)).astype(np.float32) * 3
    ref_idx = ((d - d.min()) / (d.max() - d.min()) * 255.0).astype(np.uint8)
    ref = (mpl.colormaps["Spectral_r"](ref_idx)[:, :, :3] * 255)[:, :, ::-1].astype(np.uint8)
    got = encode_visual("color", d, None, OutputOptions())
    assert np.array_equal(got, ref)


def test_constant_map_does_not_divide_by_zero() -> None:
    d = np.full((5, 5), 2.0, np.float32)
    t = render.nearness(d, render.value_range(d, render.RenderOptions()), near_is_large=True)
    assert np.all(t == 0)


def test_metric_near_is_warm_and_png16_is_millimetres() -> None:
    d = np.array([[1.0, 10.0]], np.float32)  # metres: left pixel is near
    opts = OutputOptions(metric=True)
    gray = encode_visual("gray", d, None, opts)
    assert gray[0, 0] == 255 and gray[0, 1] == 0
    assert encode_visual("png16", d, None, opts).tolist() == [[1000, 10000]]
    rel = OutputOptions(metric=False)  # inverse depth: larger is near
    assert encode_visual("gray", d, None, rel).tolist() == [[0, 255]]
    inv = OutputOptions(render=render.RenderOptions(invert=True))
    assert encode_visual("gray", d, None, inv).tolist() == [[255, 0]]


def test_fixed_and_percentile_ranges() -> None:
    d = np.linspace(0, 10, 101, dtype=np.float32)[None]
    fixed = render.RenderOptions(mode="fixed", vrange=(2.0, 4.0))
    assert render.value_range(d, fixed) == (2.0, 4.0)
    t = render.nearness(d, (2.0, 4.0), near_is_large=True)
    assert t.min() == 0 and t.max() == 1 and t[0, 30] == pytest.approx(0.5)
    lo, hi = render.value_range(d, render.RenderOptions(mode="percentile", percentiles=(10, 90)))
    assert lo == pytest.approx(1.0) and hi == pytest.approx(9.0)


def test_unknown_cmap() -> None:
    with pytest.raises(ValueError, match="unknown colour map"):
        render.lut("nope")
