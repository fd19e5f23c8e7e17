"""Streaming temporal depth (`--temporal stream`): the official streaming mode of Video Depth
Anything (tests/data/vda-stream-small.npz, see tests/data/README.md), its cache rule, and the
command line on files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depthcli.models import create_model
from depthcli.models.streaming import FrameCache, StreamingVDA
from depthcli.windows import video_preprocess

DATA = Path(__file__).resolve().parent / "data"


def test_streaming_parity_with_the_official_code(golden_dir, golden_keys, tmp_path) -> None:
    from depthcli.synthetic import recipe_entry

    sd = {k: recipe_entry(k, tuple(s)) for k, s in golden_keys["vda-small"]}
    torch.save(sd, tmp_path / "video_depth_anything_vits.pth")
    model = create_model("vda-small", weights=tmp_path / "video_depth_anything_vits.pth")
    frames = np.load(golden_dir / "vda-small.npz")["frames"]
    gold = np.load(DATA / "vda-stream-small.npz")
    size = frames.shape[1:3]
    prep = video_preprocess(140, size, model.spec.mean, model.spec.std)
    sv = StreamingVDA(model.eval())
    got = []
    for f in frames:
        d = sv.step(torch.from_numpy(prep(np.ascontiguousarray(f[..., ::-1]))))
        up = F.interpolate(d[None, None], size=size, mode="bilinear", align_corners=True)
        got.append(up[0, 0, ::4, ::4].numpy())
    lo, hi = gold["range_140"]
    err = np.abs(np.stack(got) - gold["depths_140_sub4"]).max() / (hi - lo)
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
