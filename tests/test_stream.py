"""Streaming temporal depth (`--temporal stream`): the official streaming mode of Video Depth
Anything (tests/data/vda-stream-small.npz, see tests/data/README.md), its cache rule, and the
command line on files."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from depthcli.cli import main
from depthcli.engine.windows import video_preprocess
from depthcli.models import create_model
from depthcli.models.streaming import FrameCache, StreamingVDA

DATA = Path(__file__).resolve().parent / "data"


def test_streaming_parity_with_the_official_code(golden_dir, golden_keys, tmp_path) -> None:
    from depthcli.checkpoints.synthetic import recipe_entry

    sd = {k: recipe_entry(k, tuple(s)) for k, s in golden_keys["vda-small"]}
    torch.save(sd, tmp_path / "video_depth_anything_vits.pth")
    model = create_model("vda-small", weights=tmp_path / "video_depth_anything_vits.pth")
    frames = np.load(golden_dir / "vda-small.npz")["frames"]
    gold = np.load(DATA / "vda-stream-small.npz")
    size = frames.shape[1:3]
    prep = video_preprocess(70, size, model.spec.mean, model.spec.std)  # network 70x126
    sv = StreamingVDA(model.eval())
    got = []
    for f in frames:
        d = sv.step(torch.from_numpy(prep(np.ascontiguousarray(f[..., ::-1]))))
        up = F.interpolate(d[None, None], size=size, mode="bilinear", align_corners=True)
        got.append(up[0, 0, ::4, ::4].numpy())
    lo, hi = gold["range_70"]
    err = np.abs(np.stack(got) - gold["depths_70_sub4"]).max() / (hi - lo)
    assert err < 1e-4, err
    assert len(sv.cache) == 42


def test_cache_rule_keeps_first_frame_and_bounded_length() -> None:
    """Frame ids through the official rule: 32 copies of frame 0 first, entry 1 dropped from
    frame 11 on, reads = entries 0, 1 and the last 29."""
    cache = FrameCache()
    reads = []
    for n in range(60):
        if cache.entries:
            picked = cache.entries[:2] + cache.entries[-29:]
            reads.append([int(s[0].item()) for s in picked])
        cache.add([torch.tensor([n])])
    assert len(cache) == 42
    assert reads[0] == [0] * 31  # frame 1 sees 31 copies of frame 0
    assert reads[10] == [0] * 21 + list(range(1, 11))  # frame 11
    assert reads[58] == [0, 18] + list(range(30, 59))  # frame 59: first, 41 back, last 29
    assert all(r[0] == 0 and len(r) == 31 for r in reads)


def synthetic_clip(n: int, h: int = 64, w: int = 96) -> np.ndarray:
    """(n, h, w, 3) uint8 RGB: a smooth gradient with a moving bright disc."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for t in range(n):
        base = 60 + 120 * xx / w + 40 * np.sin(yy / 9 + t / 4)
        disc = 80 * np.exp(-((xx - 20 - 4 * t) ** 2 + (yy - h / 2) ** 2) / 90)
        img = np.clip(base + disc, 0, 255).astype(np.uint8)
        out.append(np.stack([img, np.roll(img, 7, axis=1), 255 - img], -1))
    return np.stack(out)


def streamed_reference(weights: Path, frames_rgb: np.ndarray, input_size: int) -> np.ndarray:
    model = create_model("vda-tiny-test", weights=weights).eval()
    size = frames_rgb.shape[1:3]
    prep = video_preprocess(input_size, size, model.spec.mean, model.spec.std)
    sv = StreamingVDA(model)
    out = []
    for f in frames_rgb:
        d = sv.step(torch.from_numpy(prep(np.ascontiguousarray(f[..., ::-1]))))
        out.append(F.interpolate(d[None, None], size=size, mode="bilinear",
                                 align_corners=True)[0, 0].numpy())
    return np.stack(out)


def test_cli_file_stream_mode(tiny_vda_ckpt, tmp_path) -> None:
    """`--temporal stream` on a file: npy = the streaming model on the decoded frames; the
    clip-normalised colour video and png16 frames come out too (the two-pass path)."""
    from test_vda import decoded_rgb, rel_err, write_clip

    clip = write_clip(tmp_path / "clip.mp4", synthetic_clip(14))
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["predict", str(clip), "-o", str(out), "--model",
                                  "vda-tiny-test", "--weights", str(tiny_vda_ckpt), "-f", "npy",
                                  "-f", "color", "-f", "png16", "--input-size", "56",
                                  "--temporal", "stream", "--precision", "fp32", "--json", "-q"])
    assert r.exit_code == 0, r.output
    got = np.load(out / "clip.npy")
    want = streamed_reference(tiny_vda_ckpt, decoded_rgb(clip), 56)
    assert got.shape == want.shape == (14, 64, 96)
    assert rel_err(got, want) < 1e-5
    assert len(list((out / "clip_png16").glob("*.png"))) == 14
    with av.open(str(out / "clip.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 14
    summary = json.loads(r.stdout)
    assert summary["frames"] == 14 and summary["settings"]["temporal"] == "stream"


def test_cli_stream_needs_torch(tiny_vda_ckpt, tmp_path) -> None:
    (tmp_path / "x.mp4").write_bytes(b"")
    r = CliRunner().invoke(main, ["predict", str(tmp_path / "x.mp4"), "-o", str(tmp_path / "o"),
                                  "--model", "vda-tiny-test", "--temporal", "stream",
                                  "--backend", "openvino"])
    assert r.exit_code == 2 and "--temporal stream runs on the torch backend" in r.output
