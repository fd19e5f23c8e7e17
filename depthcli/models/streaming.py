"""Video Depth Anything's streaming mode: one frame in, one depth out, with cached temporal states.

The official streaming model (`video_depth_stream.py`) runs the network on the newest frame only.
Each temporal attention block remembers, per frame, its *normed input* at every spatial position
(the state a frame contributes as key/value); the newest frame attends, as the query at position
31 of the position table, to 31 remembered frames plus itself (positions 0..31). Which 31 frames
is the official cache rule, reproduced by `FrameCache`:

- the first frame runs alone (a window of one, position 0), and its state is copied 32 times, as
  if the clip had started with 32 copies of it;
- the cache is a list; for each new frame the model reads its entries 0 and 1 and the last 29,
  then appends the new frame's state; once the frame number reaches 11, entry 1 is dropped after
  each append, so the list holds 42 states: the first frame (kept for the whole stream), one
  frame about 41 frames back, and the 40 most recent;
- there is no scale/shift alignment between frames (the windowed mode's alignment needs the
  future), so the values follow the network frame by frame.

Memory is bounded by the 42 cached states: 8 tensors per frame (4 modules x 2 attention blocks)
of (positions, channels): for ViT-S in fp32 about 12 MB per frame at 518x924 (0.5 GB for the
42 entries), 3.2 MB at 266x476; the official code keeps the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .temporal import MAX_FRAMES, TemporalAttention, TemporalModule
from .video_depth_anything import VideoDepthAnything

State = list[torch.Tensor]  # one frame's 8 cached tensors, (positions, 1, C) each
CACHE_HEAD = 2  # entries always read from the front of the list
CACHE_TAIL = MAX_FRAMES - 3  # 29: the most recent entries read
GAP = (MAX_FRAMES - 10) * 2 - 1 - 2  # 41, the official `gap` (INFER_LEN, OVERLAP, INTERP_LEN)


class FrameCache:
    """The official cache rule (see the module docstring): which past states a frame reads."""

    def __init__(self) -> None:
        self.entries: list[State] = []
        self.frame = -1  # the number of the last frame added

    def context(self) -> list[torch.Tensor] | None:
        """The 31 states the next frame attends to, concatenated per tensor along time; None
        before the first frame."""
        if not self.entries:
            return None
        picked = self.entries[:CACHE_HEAD] + self.entries[-CACHE_TAIL:]
        return [torch.cat([s[i] for s in picked], dim=1) for i in range(len(picked[0]))]

    def add(self, state: State) -> None:
        self.frame += 1
        if not self.entries:
            self.entries = [state] * MAX_FRAMES
        else:
            self.entries.append(state)
        if self.frame + MAX_FRAMES > GAP + 1:
            del self.entries[1]

    def __len__(self) -> int:
        return len(self.entries)


def _attention(attn: TemporalAttention, x: torch.Tensor, past: torch.Tensor | None
               ) -> torch.Tensor:
    """The newest frame's attention over `past` (P, K, C) + itself; x (P, 1, C) normed input."""
    seq = x if past is None else torch.cat([past, x], dim=1)
    seq = attn.pos_encoder(seq)
    p, t, c = seq.shape
    h, d = attn.heads, c // attn.heads
    q = attn.to_q(seq[:, t - 1:]).reshape(p, 1, h, d).transpose(1, 2)
    k, v = (lin(seq).reshape(p, t, h, d).transpose(1, 2) for lin in (attn.to_k, attn.to_v))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(p, 1, c)
    return attn.to_out[0](out)


def _temporal(module: TemporalModule, x: torch.Tensor, past: Sequence[torch.Tensor] | None
              ) -> tuple[torch.Tensor, State]:
    """One frame (1, C, h, w) through a temporal module with the cached states of its two
    attention blocks; returns the output and this frame's two states."""
    tt = module.temporal_transformer
    residual = x
    _, c, hh, ww = x.shape
    y = tt.proj_in(tt.norm(x).permute(0, 2, 3, 1).reshape(hh * ww, 1, c))
    states: State = []
    for block in tt.transformer_blocks:
        for k, (attn, norm) in enumerate(zip(block.attention_blocks, block.norms, strict=True)):
            normed = norm(y)
            states.append(normed)
            y = _attention(attn, normed, None if past is None else past[k]) + y
        y = block.ff(block.ff_norm(y)) + y
    y = tt.proj_out(y)
    return y.reshape(1, hh, ww, c).permute(0, 3, 1, 2) + residual, states


class StreamingVDA:
    """A Video Depth Anything model run one frame at a time (the official streaming mode).

    `step(x)` takes one normalised (3, H', W') frame (H', W' multiples of 14) and returns its
    (H', W') depth; the frames it has seen live on in `cache` only.
    """

    def __init__(self, model: VideoDepthAnything) -> None:
        self.model = model
        self.cache = FrameCache()

    def reset(self) -> None:
        self.cache = FrameCache()

    @torch.inference_mode()
    def step(self, x: torch.Tensor) -> torch.Tensor:
        model, head = self.model, self.model.head
        x = x[None] if x.dim() == 3 else x
        feats = model.encoder(x)
        h0, w0 = feats[0].shape[-2:]
        ctx = self.cache.context()
        m = head.motion_modules

        def past(i: int) -> list[torch.Tensor] | None:
            return None if ctx is None else ctx[2 * i:2 * i + 2]

        r1, r2, r3, r4 = head.reassemble(feats)
        r3, s0 = _temporal(m[0], r3, past(0))
        r4, s1 = _temporal(m[1], r4, past(1))
        l1, l2, l3, l4 = head.to_features((r1, r2, r3, r4))
        s = head.scratch
        p4, s2 = _temporal(m[2], s.refinenet4(l4, size=l3.shape[2:]), past(2))
        p3, s3 = _temporal(m[3], s.refinenet3(p4, l3, size=l2.shape[2:]), past(3))
        out = head.fine(p3, l2, l1, (h0 * 14, w0 * 14))
        self.cache.add(s0 + s1 + s2 + s3)
        return torch.relu(out[0, 0])
