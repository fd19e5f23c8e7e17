"""`--format ply`: back-projection maths, header, stride, colours, EXIF focal, CLI end to end."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import write_image
from depthcli import outputs
from depthcli.cli import main
from depthcli.outputs import OutputOptions, PointCloudOptions, pointcloud

EXTRAS = {"ply_stride": 1, "focal_px": None, "fov_deg": None, "cx": None, "cy": None,
          "assume_scale": None}


# ------------------------------------------------------------------ a reader independent of ours

def parse_ply(path: Path) -> tuple[list[str], dict[str, float], np.ndarray]:
    """Minimal binary-little-endian PLY reader: (header lines, numeric comment fields, vertices)."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[0] == "ply"
    assert header[1] == "format binary_little_endian 1.0"
    n = 0
    props: list[tuple[str, str]] = []
    fields: dict[str, float] = {}
    for line in header:
        parts = line.split()
        if parts[0] == "element":
            assert parts[1] == "vertex"
            n = int(parts[2])
        elif parts[0] == "property":
            props.append((parts[1], parts[2]))
        elif parts[0] == "comment":
            for tok in parts[1:]:
                k, _, v = tok.partition("=")
                try:
                    fields.setdefault(k, float(v))
                except ValueError:
                    pass
    assert props == [("float", "x"), ("float", "y"), ("float", "z"),
                     ("uchar", "red"), ("uchar", "green"), ("uchar", "blue")]
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                   ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    assert len(data) - end == n * dt.itemsize  # nothing missing, nothing trailing
    return header, fields, np.frombuffer(data, dt, count=n, offset=end)


def header_value(header: list[str], key: str) -> str:
    for line in header:
        for tok in line.split():
            if tok.startswith(key + "="):
                return tok.split("=", 1)[1]
    raise KeyError(key)


def pixels_of(v: np.ndarray, f: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Recover (u, v) pixel indices of each point from the header intrinsics."""
    z = v["z"].astype(np.float64)
    u = np.rint(v["x"] * f["fx"] / z + f["cx"]).astype(int)
    r = np.rint(v["y"] * f["fy"] / z + f["cy"]).astype(int)
    return u, r


def _opts(metric: bool = True, **extras: object) -> OutputOptions:
    return OutputOptions(formats=("ply",), metric=metric,
                         point_cloud=PointCloudOptions(**{**EXTRAS, **extras}))


def _image(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------ pure unit tests

def test_registered():
    assert outputs.FORMATS["ply"].suffix == ".ply" and outputs.FORMATS["ply"].kind == "cloud"
    assert outputs.FORMATS["ply"].video is None
    assert outputs.parse_formats(["ply,npy"]) == ("ply", "npy")
    assert outputs.image_paths(Path("o/a"), ("ply",))["ply"] == Path("o/a.ply")


def test_plane_backprojection_header_and_colours(tmp_path):
    h, w = 48, 64
    uu, vv = np.meshgrid(np.arange(w), np.arange(h))
    depth = (2.0 + 0.01 * uu + 0.0 * vv).astype(np.float32)  # plane Z = 2 + 0.01 u
    img = _image(h, w)
    path = tmp_path / "a.ply"
    pointcloud.write_ply_output(depth, img, path, _opts(focal_px=50.0, cx=30.0, cy=20.0))
    header, f, v = parse_ply(path)
    assert (f["fx"], f["fy"], f["cx"], f["cy"]) == (50.0, 50.0, 30.0, 20.0)
    assert (f["width"], f["height"], f["stride"]) == (w, h, 1)
    assert header_value(header, "focal_source") == "focal-px"
    assert any("x-right y-down z-forward" in line for line in header)
    assert len(v) == h * w
    # row-major pixel order, z bit-identical to the depth map
    np.testing.assert_array_equal(v["z"], depth.reshape(-1))
    x = (uu - 30.0) * depth.astype(np.float64) / 50.0
    y = (vv - 20.0) * depth.astype(np.float64) / 50.0
    np.testing.assert_allclose(v["x"], x.reshape(-1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(v["y"], y.reshape(-1), rtol=1e-6, atol=1e-6)
    # the depth map is the plane Z = 2 + 0.01 u in (u, v, Z); recover u, v from the points and
    # fit that plane back (a 3-D plane fit is in test_tilted_plane_fit_residual)
    pts = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    u_rec = pts[:, 0] * 50.0 / pts[:, 2] + 30.0
    v_rec = pts[:, 1] * 50.0 / pts[:, 2] + 20.0
    a = np.stack([u_rec, v_rec, np.ones_like(u_rec)], 1)
    coef, *_ = np.linalg.lstsq(a, pts[:, 2], rcond=None)
    np.testing.assert_allclose(coef, [0.01, 0.0, 2.0], atol=1e-6)
    assert np.abs(a @ coef - pts[:, 2]).max() < 1e-5
    # colours: RGB of the BGR input at each point's pixel
    rgb = img[..., ::-1].reshape(-1, 3)
    np.testing.assert_array_equal(np.stack([v["red"], v["green"], v["blue"]], 1), rgb)


def test_tilted_plane_fit_residual(tmp_path):
    """Points of a tilted 3-D plane n·P = d, rendered to depth, come back on that plane."""
    h, w, fx = 40, 60, 45.0
    cx, cy = w / 2, h / 2
    n = np.array([0.2, -0.1, 1.0])
    d = 3.0
    uu, vv = np.meshgrid(np.arange(w), np.arange(h))
    rays = np.stack([(uu - cx) / fx, (vv - cy) / fx, np.ones_like(uu, float)], -1)
    depth = (d / (rays @ n)).astype(np.float32)
    path = tmp_path / "p.ply"
    pointcloud.write_ply_output(depth, _image(h, w), path, _opts(focal_px=fx))
    _, f, v = parse_ply(path)
    assert (f["cx"], f["cy"]) == (cx, cy)  # default principal point: W/2, H/2
    pts = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    resid = pts @ n - d
    assert np.abs(resid).max() < 1e-5


def test_stride_skips_and_pixels(tmp_path):
    h, w, s = 37, 50, 4
    uu, vv = np.meshgrid(np.arange(w), np.arange(h))
    depth = (1.0 + 0.05 * vv + 0.02 * uu).astype(np.float32)
    depth[0, 0] = 0.0
    depth[4, 8] = np.nan
    depth[8, 4] = np.inf
    depth[12, 12] = -1.0
    depth[1, 1] = 0.0  # not on the stride grid: irrelevant
    img = _image(h, w)
    path = tmp_path / "s.ply"
    pointcloud.write_ply_output(depth, img, path, _opts(ply_stride=s, fov_deg=70.0))
    _, f, v = parse_ply(path)
    assert f["stride"] == s
    assert math.isclose(f["fx"], (w / 2) / math.tan(math.radians(35.0)), rel_tol=1e-12)
    kept = [(r, c) for r in range(0, h, s) for c in range(0, w, s)
            if np.isfinite(depth[r, c]) and depth[r, c] > 0]
    assert len(v) == math.ceil(h / s) * math.ceil(w / s) - 4 == len(kept)
    u, r = pixels_of(v, f)
    assert list(zip(r.tolist(), u.tolist(), strict=True)) == kept  # row-major, pixel coordinates of full image
    np.testing.assert_array_equal(v["z"], depth[r, u])
    np.testing.assert_array_equal(v["red"], img[r, u, 2])
    np.testing.assert_array_equal(v["blue"], img[r, u, 0])


def test_relative_needs_scale_and_assume_scale(tmp_path):
    out = np.array([[0.0, 1.0, 2.0], [4.0, -1.0, 8.0]], np.float32)
    img = _image(2, 3)
    with pytest.raises(ValueError, match="no scale"):
        pointcloud.write_ply_output(out, img, tmp_path / "r.ply", _opts(metric=False))
    assert not (tmp_path / "r.ply").exists()
    pointcloud.write_ply_output(out, img, tmp_path / "r.ply",
                                _opts(metric=False, assume_scale=2.0, focal_px=10.0))
    header, _, v = parse_ply(tmp_path / "r.ply")
    assert header_value(header, "depth") == "assume-scale"
    assert header_value(header, "scale") == "2"
    np.testing.assert_array_equal(v["z"], np.float32([2.0, 1.0, 0.5, 0.25]))


def test_empty_cloud_is_valid(tmp_path):
    depth = np.zeros((5, 6), np.float32)
    pointcloud.write_ply_output(depth, _image(5, 6), tmp_path / "e.ply", _opts())
    header, _, v = parse_ply(tmp_path / "e.ply")
    assert len(v) == 0 and "element vertex 0" in header


def test_shape_mismatch_refused(tmp_path):
    with pytest.raises(ValueError, match="differ"):
        pointcloud.write_ply_output(np.ones((4, 4), np.float32), _image(4, 5),
                                    tmp_path / "m.ply", _opts())


def test_default_focal_and_logging(tmp_path, caplog):
    h, w = 30, 40
    with caplog.at_level(logging.INFO, logger="depthcli"):
        pointcloud.write_ply_output(np.ones((h, w), np.float32), _image(h, w),
                                    tmp_path / "d.ply", _opts())
    header, f, _ = parse_ply(tmp_path / "d.ply")
    assert header_value(header, "focal_source") == "default"
    assert math.isclose(f["fx"], (w / 2) / math.tan(math.radians(30.0)), rel_tol=1e-12)
    assert any("fx=fy=" in r.getMessage() and "default" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ EXIF

def exif_jpeg(path: Path, h: int, w: int, f35: object = 28, orientation: int | None = None,
              in_ifd0: bool = False) -> Path:
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    arr[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if f35 is not None:
        if in_ifd0:
            exif[0xA405] = f35
        else:
            exif.get_ifd(0x8769)[0xA405] = f35
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, "JPEG", exif=exif, quality=95)
    return path


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_exif_focal_read(tmp_path):
    assert pointcloud.exif_focal_35mm(exif_jpeg(tmp_path / "a.jpg", 24, 36, 28)) == 28.0
    assert pointcloud.exif_focal_35mm(exif_jpeg(tmp_path / "b.jpg", 24, 36, 50, in_ifd0=True)) == 50
    assert pointcloud.exif_focal_35mm(exif_jpeg(tmp_path / "c.jpg", 24, 36, None)) is None
    assert pointcloud.exif_focal_35mm(exif_jpeg(tmp_path / "z.jpg", 24, 36, 0)) is None
    assert pointcloud.exif_focal_35mm(write_image(tmp_path / "p.png", 8, 8)) is None
    assert pointcloud.exif_focal_35mm(None) is None
    assert pointcloud.exif_focal_35mm(tmp_path / "missing.jpg") is None
    bad = tmp_path / "bad.jpg"
    data = exif_jpeg(tmp_path / "good.jpg", 24, 36, 28).read_bytes()
    i = data.index(b"Exif\x00\x00")
    bad.write_bytes(data[: i + 10] + b"\xff" * 40 + data[i + 50:])  # mangled TIFF header/IFD
    assert pointcloud.exif_focal_35mm(bad) in (None, 28.0)  # never raises
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00garbage")
    assert pointcloud.exif_focal_35mm(tmp_path / "junk.jpg") is None


def test_focal_precedence(tmp_path):
    src = exif_jpeg(tmp_path / "e.jpg", 30, 40, 28)
    w, h = 40, 30
    i = pointcloud.resolve_intrinsics(w, h, PointCloudOptions(focal_px=77.0, fov_deg=90.0), src)
    assert (i.source, i.fx, i.fy) == ("focal-px", 77.0, 77.0)
    i = pointcloud.resolve_intrinsics(w, h, PointCloudOptions(fov_deg=90.0), src)
    assert i.source == "fov-deg" and math.isclose(i.fx, 20.0)
    i = pointcloud.resolve_intrinsics(w, h, None, src)
    assert i.source == "exif" and math.isclose(i.fx, 28 / 36 * 40)
    i = pointcloud.resolve_intrinsics(h, w, None, src)  # portrait (EXIF-rotated): long side again
    assert i.source == "exif" and math.isclose(i.fx, 28 / 36 * 40)
    i = pointcloud.resolve_intrinsics(w, h, None, None)
    assert i.source == "default" and math.isclose(i.fx, 20 / math.tan(math.radians(30)))
    assert (i.cx, i.cy) == (20.0, 15.0)
    i = pointcloud.resolve_intrinsics(w, h, PointCloudOptions(cx=1.5, cy=2.5), None)
    assert (i.cx, i.cy) == (1.5, 2.5)


def test_writer_uses_exif_of_src(tmp_path):
    src = exif_jpeg(tmp_path / "e.jpg", 30, 40, 35, orientation=6)  # decoded 40 x 30 (portrait)
    depth = np.full((40, 30), 2.0, np.float32)
    pointcloud.write_ply_output(depth, _image(40, 30), tmp_path / "e.ply", _opts(), src=src)
    header, f, _ = parse_ply(tmp_path / "e.ply")
    assert header_value(header, "focal_source") == "exif"
    assert header_value(header, "focal_35mm") == "35"
    assert math.isclose(f["fx"], 35 / 36 * 40) and (f["width"], f["height"]) == (30, 40)
    pointcloud.write_ply_output(depth, _image(40, 30), tmp_path / "f.ply",
                                _opts(fov_deg=60.0), src=src)
    header, _, _ = parse_ply(tmp_path / "f.ply")
    assert header_value(header, "focal_source") == "fov-deg"


# ------------------------------------------------------------------ CLI end to end

def _predict(args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["predict", *args], catch_exceptions=False)


def _common(tiny_ckpt: Path, model: str = "da2-metric-tiny-test") -> list[str]:
    return ["--model", model, "--weights", str(tiny_ckpt), "--input-size", "70",
            "--device", "cpu", "-q"]


def test_cli_ply_matches_npy(tmp_path, tiny_ckpt):
    img = write_image(tmp_path / "in" / "a.png", 45, 60)
    out = tmp_path / "out"
    res = _predict([str(img), "-o", str(out), *_common(tiny_ckpt), "--format", "ply,npy",
                    "--fov-deg", "60"])
    assert res.exit_code == 0, res.output
    depth = np.load(out / "a.npy")
    assert depth.shape == (45, 60) and depth.dtype == np.float32
    header, f, v = parse_ply(out / "a.ply")
    assert header_value(header, "focal_source") == "fov-deg"
    assert math.isclose(f["fx"], 30 / math.tan(math.radians(30)), rel_tol=1e-12)
    assert (f["cx"], f["cy"], f["width"], f["height"]) == (30.0, 22.5, 60, 45)
    valid = np.isfinite(depth) & (depth > 0)
    assert len(v) == int(valid.sum()) > 0
    u, r = pixels_of(v, f)
    np.testing.assert_array_equal(v["z"], depth[r, u])  # exact: same float32 values
    np.testing.assert_array_equal(np.stack([r, u], 1), np.argwhere(valid))  # row-major
    x = (u - f["cx"]) * depth[r, u].astype(np.float64) / f["fx"]
    np.testing.assert_allclose(v["x"], x, rtol=1e-6, atol=1e-6)
    bgr = cv2.imread(str(img))
    np.testing.assert_array_equal(v["green"], bgr[r, u, 1])


def test_cli_ply_stride(tmp_path, tiny_ckpt):
    img = write_image(tmp_path / "b.png", 45, 60, seed=2)
    out = tmp_path / "out"
    res = _predict([str(img), "-o", str(out), *_common(tiny_ckpt), "-f", "ply", "-f", "npy",
                    "--ply-stride", "4", "--focal-px", "100", "--cx", "29.5", "--cy", "22"])
    assert res.exit_code == 0, res.output
    depth = np.load(out / "b.npy")
    _, f, v = parse_ply(out / "b.ply")
    assert (f["fx"], f["cx"], f["cy"], f["stride"]) == (100.0, 29.5, 22.0, 4)
    assert len(v) == int((np.isfinite(depth[::4, ::4]) & (depth[::4, ::4] > 0)).sum())
    u, r = pixels_of(v, f)
    assert (u % 4 == 0).all() and (r % 4 == 0).all()
    np.testing.assert_array_equal(v["z"], depth[r, u])


def test_cli_ply_exif_focal(tmp_path, tiny_ckpt):
    """Needs the pipeline to pass the source path to the writer (src=)."""
    img = exif_jpeg(tmp_path / "c.jpg", 42, 56, 24)
    out = tmp_path / "out"
    res = _predict([str(img), "-o", str(out), *_common(tiny_ckpt), "-f", "ply"])
    assert res.exit_code == 0, res.output
    header, f, _ = parse_ply(out / "c.ply")
    assert header_value(header, "focal_source") == "exif"
    assert math.isclose(f["fx"], 24 / 36 * 56)


def test_cli_relative_model_refused(tmp_path, tiny_ckpt):
    img = write_image(tmp_path / "a.png", 28, 28)
    res = CliRunner().invoke(main, ["predict", str(img), "-o", str(tmp_path / "o"),
                                    *_common(tiny_ckpt, "da2-tiny-test"), "-f", "ply"])
    assert res.exit_code == 2
    assert "no scale" in res.output
    assert not (tmp_path / "o" / "a.ply").exists()


def test_cli_relative_assume_scale(tmp_path, tiny_ckpt):
    img = write_image(tmp_path / "a.png", 28, 42, seed=3)
    out = tmp_path / "o"
    res = _predict([str(img), "-o", str(out), *_common(tiny_ckpt, "da2-tiny-test"),
                    "-f", "ply,npy", "--assume-scale", "3", "--focal-px", "40"])
    assert res.exit_code == 0, res.output
    rel = np.load(out / "a.npy")
    header, f, v = parse_ply(out / "a.ply")
    assert header_value(header, "depth") == "assume-scale"
    u, r = pixels_of(v, f)
    assert len(v) == int((rel > 0).sum())
    np.testing.assert_allclose(v["z"], 3.0 / rel[r, u].astype(np.float64), rtol=1e-6)


def test_cli_max_depth_scales_metric_output(tmp_path, tiny_ckpt):
    img = write_image(tmp_path / "a.png", 28, 42, seed=4)
    runs = {}
    for md in (None, "40"):
        out = tmp_path / f"o{md}"
        extra = ["--max-depth", md] if md else []
        res = _predict([str(img), "-o", str(out), *_common(tiny_ckpt), "-f", "npy", *extra])
        assert res.exit_code == 0, res.output
        runs[md] = np.load(out / "a.npy")
    assert (runs[None] > 0).all() and (runs[None] < 20).all()
    np.testing.assert_allclose(runs["40"], 2.0 * runs[None], rtol=1e-5, atol=1e-6)


def test_read_ply_helper_roundtrip(tmp_path):
    depth = np.full((3, 4), 1.5, np.float32)
    pointcloud.write_ply_output(depth, _image(3, 4), tmp_path / "h.ply", _opts(focal_px=2.0))
    fields, v = pointcloud.read_ply(tmp_path / "h.ply")
    assert fields["fx"] == "2" and fields["focal_source"] == "focal-px" and len(v) == 12


def test_cli_warns_about_ignored_point_cloud_options(tmp_path, tiny_ckpt, capsys):
    img = write_image(tmp_path / "a.png", 28, 42, seed=5)
    common = [c for c in _common(tiny_ckpt) if c != "-q"]
    res = _predict([str(img), "-o", str(tmp_path / "o"), *common, "-f", "ply",
                    "--assume-scale", "2", "--focal-px", "40", "--fov-deg", "50"])
    assert res.exit_code == 0, res.output
    err = capsys.readouterr().err + res.output
    assert "--assume-scale is ignored" in err and "--focal-px wins" in err
    _, f, _ = parse_ply(tmp_path / "o" / "a.ply")
    assert f["fx"] == 40.0
    res = _predict([str(img), "-o", str(tmp_path / "o2"), *common, "-f", "npy",
                    "--focal-px", "40"])
    assert res.exit_code == 0
    assert "no effect without --format ply" in capsys.readouterr().err + res.output
