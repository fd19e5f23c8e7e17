"""How tests/data/vda-stream-small.npz was made (run outside the project, see its README).

    PYTHONPATH=<official Video-Depth-Anything checkout>:<einops+easydict> \
        python make_vda_stream_golden.py ../shared/golden OUT.npz

It feeds the 45 golden frames (../shared/golden/vda-small.npz, RGB) one at a time to the official
streaming model `VideoDepthAnything.infer_video_depth_one(frame, input_size=70, device="cpu",
fp32=True)` (video_depth_anything/video_depth_stream.py), ViT-S configuration, loaded strictly
with the golden recipe weights (depthcli.checkpoints.synthetic.recipe_entry over keys.json["vda-small"]).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(2)


def main(golden: Path, out: Path) -> None:
    from video_depth_anything.video_depth_stream import VideoDepthAnything  # official code

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from depthcli.checkpoints.synthetic import recipe_entry

    keys = json.loads((golden / "keys.json").read_text())["vda-small"]
    sd = {k: recipe_entry(k, tuple(s)) for k, s in keys}
    model = VideoDepthAnything(encoder="vits", features=64, out_channels=[48, 96, 192, 384])
    model.load_state_dict(sd, strict=True)
    model.eval()
    frames = np.load(golden / "vda-small.npz")["frames"]
    depths = np.stack([model.infer_video_depth_one(f, input_size=70, device="cpu", fp32=True)
                       for f in frames]).astype(np.float32)
    # every 4th row and column of each frame keeps the file small (all 45 frames, 27x48)
    np.savez_compressed(out, depths_70_sub4=depths[:, ::4, ::4],
                        range_70=np.array([depths.min(), depths.max()]))
    print(out, depths.shape, float(depths.min()), float(depths.max()))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
