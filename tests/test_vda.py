"""Video Depth Anything: the temporal model and the streamed whole-video procedure vs the official
outputs (../shared/golden/vda-*.npz), the windowing on any clip length, and the command line."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from depthcli.checkpoints.synthetic import recipe_state_dict
from depthcli.cli import main
from depthcli.engine.windows import (
    KEYFRAMES,
    TemporalWindows,
    scale_and_shift,
    video_input_size,
    video_preprocess,
)
from depthcli.io.video_encode import x264_deterministic
from depthcli.models import create_model, get_spec
from depthcli.models.temporal import sinusoidal_table


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / (b.max() - b.min()))


@pytest.fixture(scope="module")
def vda_ckpt(golden_keys, tmp_path_factory) -> Path:
    """The golden recipe over the official VDA keys; the position tables stay sinusoidal."""
    sd = recipe_state_dict(golden_keys["vda-small"])
    pe = "head.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
    assert torch.equal(sd[pe], sinusoidal_table(192))
    path = tmp_path_factory.mktemp("vda") / "video_depth_anything_vits.pth"
    torch.save(sd, path)
    return path


def stream(model: torch.nn.Module, frames_rgb: np.ndarray, input_size: int) -> np.ndarray:
    size = frames_rgb.shape[1:3]
    prep = video_preprocess(input_size, size, model.spec.mean, model.spec.std)

    def forward(x: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return model(torch.from_numpy(x)[None])[0]

    tw = TemporalWindows(forward, size, metric=model.spec.output == "metric")
    out: list[np.ndarray] = []
    for f in frames_rgb:
        out += tw.push(prep(np.ascontiguousarray(f[..., ::-1])))
    out += tw.finish()
    return np.stack(out)


def _network(spec) -> tuple:  # type: ignore[no-untyped-def]
    """What of a VDA spec its forward depends on: not the name, not relative vs metric (the
    two differ in window alignment only, windows.py; checked below)."""
    return (spec.family, spec.encoder, spec.layers, spec.features, spec.out_channels,
            spec.temporal)


@pytest.mark.parametrize("tag", ["vda-small", "vda-metric-small"])
def test_golden_parity(tag: str, golden_dir, vda_ckpt) -> None:
    """45 frames = three windows: overlap, key frames, alignment and cross-fade all exercised.

    The metric model is the relative one's network with the same (golden) weights, so its
    windows' forwards are shared with the relative case (tests/forward_memo.py: one worker
    runs both, conftest's "vda-golden" group); that the two forwards are one function is
    checked here on a small clip, outside the memo."""
    from forward_memo import shared_forwards

    from depthcli.models.video_depth_anything import VideoDepthAnything

    gold = np.load(golden_dir / f"{tag}.npz")
    model = create_model(tag, weights=vda_ckpt)  # the real loading path, strict
    if tag != "vda-small":
        other = create_model("vda-small", weights=vda_ckpt)
        x = torch.randn(1, 3, 3, 28, 42, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            assert torch.equal(model(x), other(x))
    with shared_forwards(VideoDepthAnything, _network):
        got = stream(model, gold["frames"], 140)
    assert got.shape == gold["depths_140"].shape and got.dtype == np.float32
    assert rel_err(got, gold["depths_140"]) < 1e-4


def test_checkpoint_keys_are_official(golden_keys) -> None:
    from depthcli.checkpoints.layouts import official_keys
    from depthcli.models.video_depth_anything import VideoDepthAnything

    ours = official_keys(VideoDepthAnything(get_spec("vda-small")))
    assert sorted(ours) == sorted((k, list(s)) for k, s in golden_keys["vda-small"])


def test_checkpoint_kinds_are_refused_across(vda_ckpt, small_ckpt) -> None:
    from depthcli.errors import WeightsError

    with pytest.raises(WeightsError, match="Video Depth Anything"):
        create_model("da2-small", weights=vda_ckpt)
    with pytest.raises(WeightsError, match="missing keys"):
        create_model("vda-small", weights=small_ckpt)


# ------------------------------------------------------------------ windowing on any length

def reference(depths_of, n: int, frame_size: tuple[int, int], metric: bool) -> np.ndarray:
    """DESIGN.md §8.4 written out over the whole clip at once (the official shape of it)."""
    step, overlap, interp = 22, 10, 8
    inputs = [np.full((3, 2, 2), i, np.float32) for i in range(n)]
    inputs += [inputs[-1]] * ((step - n % step) % step + overlap)
    depth_list: list[np.ndarray] = []
    pre = None
    for fid in range(0, n, step):
        cur = inputs[fid:fid + 32]
        if pre is not None:
            cur = [pre[k] for k in KEYFRAMES] + cur[overlap:]
        depth_list += depths_of(np.stack(cur))
        pre = cur
    aligned: list[np.ndarray] = []
    ref: list[np.ndarray] = []
    for fid in range(0, len(depth_list), 32):
        d = depth_list[fid:fid + 32]
        if not aligned:
            aligned += d
            ref = [d[0], d[12]]
            continue
        s, t = (1.0, 0.0) if metric else scale_and_shift(np.concatenate(d[:2]),
                                                         np.concatenate(ref))
        post = [np.maximum(x * s + t, 0) for x in d[2:10]]
        w = [0.0] + [i * (1.0 / 7) for i in range(1, 7)] + [1.0]
        aligned[-interp:] = [a * (1 - wi) + b * wi for a, b, wi in zip(aligned[-interp:], post, w, strict=True)]
        aligned += [np.maximum(x * s + t, 0) for x in d[10:]]
        ref = [ref[0], np.maximum(d[12] * s + t, 0)]
    return np.stack(aligned[:n])


def fake_forward(window: np.ndarray) -> np.ndarray:
    """A cheap stand-in network whose output depends on every input and on its slot."""
    frame = window[:, 0, :1, :1]  # the frame index the input was filled with
    slot = np.arange(len(window), dtype=np.float32)[:, None, None]
    return (np.sin(frame * 0.37 + slot * 0.11) + 1.5 + 0.01 * window.mean()).repeat(2, 1).repeat(3, 2)


@pytest.mark.parametrize("n", [1, 9, 31, 32, 33, 45, 53, 54, 55, 66, 100])
@pytest.mark.parametrize("metric", [False, True])
def test_streaming_equals_whole_clip(n: int, metric: bool) -> None:
    size = (4, 6)

    def depths_of(window: np.ndarray) -> list[np.ndarray]:
        d = torch.from_numpy(fake_forward(window))[:, None]
        up = torch.nn.functional.interpolate(d, size=size, mode="bilinear", align_corners=True)
        return [f[0].numpy() for f in up]

    tw = TemporalWindows(fake_forward, size, metric=metric)
    out: list[np.ndarray] = []
    held = []
    for i in range(n):
        out += tw.push(np.full((3, 2, 2), i, np.float32))
        held.append(len(tw.new) + len(tw.tail) + len(tw.refs) + len(tw.keys or []))
        assert len(out) <= i + 1  # never ahead of the input
    out += tw.finish()
    assert len(out) == n
    np.testing.assert_array_equal(np.stack(out), reference(depths_of, n, size, metric))
    assert max(held) <= 32 + 8 + 2 + 10  # bounded state, whatever the length


def test_input_size_rule_for_wide_frames() -> None:
    assert video_input_size(518, (540, 960)) == 518  # 1.778 <= 1.78
    assert video_input_size(518, (400, 1000)) == round(int(518 * 1.777 / 2.5) / 14) * 14 == 364
    assert video_input_size(140, (108, 250)) == round(int(140 * 1.777 / (250 / 108)) / 14) * 14
    prep = video_preprocess(518, (400, 1000), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert prep(np.zeros((400, 1000, 3), np.uint8)).shape == (3, 364, 910)


# ------------------------------------------------------------------------- command line

def write_clip(path: Path, frames_rgb: np.ndarray) -> Path:
    h, w = frames_rgb.shape[1:3]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(30), options=x264_deterministic())
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for f in frames_rgb:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decoded_rgb(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_cli_npy_is_the_streamed_procedure(golden_dir, tiny_vda_ckpt, tmp_path) -> None:
    """`predict CLIP --model vda-... --format npy` = the procedure on the PyAV-decoded frames
    (25 frames: shorter than one window; 60 by 10 px wider than 1.78:1). The procedure, not the
    numbers, is under test (golden parity is above): the tiny configuration of the network."""
    frames = np.load(golden_dir / "vda-small.npz")["frames"][:25, :, :, :]
    clip = write_clip(tmp_path / "clip.mp4", frames)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["predict", str(clip), "-o", str(out), "--model",
                                  "vda-tiny-test", "--weights", str(tiny_vda_ckpt), "--format",
                                  "npy", "--input-size",
                                  "70", "--precision", "fp32", "--device", "cpu", "--json", "-q"])
    assert r.exit_code == 0, r.output
    got = np.load(out / "clip.npy")
    want = stream(create_model("vda-tiny-test", weights=tiny_vda_ckpt), decoded_rgb(clip), 70)
    assert got.shape == want.shape == (25, 108, 192)
    assert rel_err(got, want) < 1e-5
    summary = json.loads(r.stdout)
    assert summary["models"] == {"videos": "vda-tiny-test"} and summary["frames"] == 25


def test_video_default_model_and_images_refused(golden_dir, vda_ckpt, tmp_path,
                                                monkeypatch) -> None:
    """Without --model/--weights videos use vda-small; a vda model on images: one line each."""
    import cv2

    monkeypatch.setenv("DEPTHCLI_WEIGHTS_DIR", str(vda_ckpt.parent))
    frames = np.load(golden_dir / "vda-small.npz")["frames"][:3]
    clip = write_clip(tmp_path / "c.mp4", frames)
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), frames[0])
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["predict", str(clip), "-o", str(out), "--input-size", "42",
                                  "-f", "npy", "--json", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["models"] == {"videos": "vda-small"}
    r = CliRunner().invoke(main, ["predict", str(img), str(clip), "-o", str(out / "2"),
                                  "--model", "vda-small", "--input-size", "42", "-f", "npy"])
    assert r.exit_code == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert lines == [f"error: {img}: model vda-small needs a video (it is a temporal video "
                     "model); use an image model such as da2-small for images"]
    assert (out / "2" / "c.npy").is_file()
