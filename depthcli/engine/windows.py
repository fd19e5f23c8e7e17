"""Video Depth Anything's whole-video procedure, streamed (DESIGN.md §8.4).

The official `infer_video_depth` reads the whole clip, runs 32-frame windows that overlap by 10
frames (the overlap slots hold the previous window's key frames), then aligns each window to the
previous one with a least-squares scale and shift fitted on two key frames and cross-fades the
8 frames where they meet. Everything a window needs from the past is small: the previous
window's 10 key-frame inputs, the last 8 aligned depths and the 2 reference depths. So here the
same numbers come out frame by frame, with a lag of one window, in memory that does not grow
with the clip: `push` frames as they are decoded, `finish` at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .transforms import lower_bound_size

if TYPE_CHECKING:
    import torch

WINDOW = 32  # INFER_LEN
OVERLAP = 10
STEP = WINDOW - OVERLAP  # 22
KEYFRAMES = (0, 12, 24, 25, 26, 27, 28, 29, 30, 31)
INTERP = 8  # frames cross-faded between windows
ALIGN = OVERLAP - INTERP  # 2: the frames (and references) the scale/shift is fitted on
MAX_RATIO = 1.78


def video_input_size(input_size: int, frame_size: tuple[int, int]) -> int:
    """The official rule: frames wider than 1.78:1 get a smaller network input."""
    h, w = frame_size
    ratio = max(h, w) / min(h, w)
    if ratio > MAX_RATIO:
        return round(int(input_size * 1.777 / ratio) / 14) * 14
    return input_size


def video_preprocess(input_size: int, frame_size: tuple[int, int],
                     mean: tuple[float, float, float], std: tuple[float, float, float]
                     ) -> Callable[[np.ndarray], np.ndarray]:
    """BGR uint8 frame → normalised (3, h', w') float32, in the official op order.

    RGB float32 / 255, INTER_CUBIC resize in float32 to the lower-bound size (multiples of 14),
    normalise with float64 mean/std (NumPy promotes), transpose, cast to float32.
    """
    size = lower_bound_size(*frame_size, video_input_size(input_size, frame_size))
    m, s = np.asarray(mean, np.float64), np.asarray(std, np.float64)

    def prep(bgr: np.ndarray) -> np.ndarray:
        rgb = np.ascontiguousarray(bgr[..., ::-1]).astype(np.float32) / 255.0
        img = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
        return np.ascontiguousarray(((img - m) / s).transpose(2, 0, 1)).astype(np.float32)

    return prep


def scale_and_shift(pred: np.ndarray, target: np.ndarray) -> tuple[np.float32, np.float32]:
    """Least squares s, t with s * pred + t ≈ target: float32 sums, closed-form 2x2 solve,
    identity when the system is singular (as the official code)."""
    pred = pred.astype(np.float32)
    target = target.astype(np.float32)
    mask = np.ones_like(target, dtype=np.float32)
    a_00 = np.sum(mask * pred * pred)
    a_01 = np.sum(mask * pred)
    a_11 = np.sum(mask)
    b_0 = np.sum(mask * pred * target)
    b_1 = np.sum(mask * target)
    det = a_00 * a_11 - a_01 * a_01
    if det == 0:
        return np.float32(1.0), np.float32(0.0)
    return (a_11 * b_0 - a_01 * b_1) / det, (-a_01 * b_0 + a_00 * b_1) / det


def _affine(d: np.ndarray, scale: np.floating | float, shift: np.floating | float) -> np.ndarray:
    out = d * scale + shift
    out[out < 0] = 0
    return out


class TemporalWindows:
    """VDA's whole-video procedure, streamed: frames in, aligned depth frames out, in order.

    `forward` maps one (32, 3, h', w') window of normalised inputs to (32, h', w') depth.
    """

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray | torch.Tensor],
                 frame_size: tuple[int, int], *, metric: bool) -> None:
        self.forward = forward
        self.frame_size = tuple(frame_size)
        self.metric = metric
        self.new: list[np.ndarray] = []  # inputs of the next window not yet run
        self.keys: list[np.ndarray] | None = None  # previous window's inputs at KEYFRAMES
        self.last: np.ndarray | None = None  # the last frame's input (padding at the end)
        self.tail: list[np.ndarray] = []  # last INTERP aligned depths: not final yet
        self.refs: list[np.ndarray] = []  # reference depths of key frames 0 and 12
        self.seen = 0  # frames pushed
        self.emitted = 0  # depth frames returned
        self.windows = 0  # windows run

    def resumable(self) -> bool:
        """True between windows: nothing is half-collected, so `state()` is all that carries."""
        return self.windows > 0 and not self.new

    def state(self) -> dict[str, np.ndarray]:
        """What carries over to the next window (key-frame inputs, the cross-fade tail, the
        alignment references, the counters), as arrays for a resume file."""
        assert self.resumable() and self.keys is not None and self.last is not None
        return {"keys": np.stack(self.keys), "last": self.last,
                "tail": np.stack(self.tail) if self.tail else np.zeros((0, *self.frame_size),
                                                                      np.float32),
                "refs": np.stack(self.refs),
                "counts": np.array([self.seen, self.emitted, self.windows], np.int64)}

    def restore(self, st: dict[str, np.ndarray]) -> None:
        """Continue from `state()`: the next frame pushed is frame `seen`."""
        self.keys = list(st["keys"])
        self.last = st["last"]
        self.tail = list(st["tail"])
        self.refs = list(st["refs"])
        self.seen, self.emitted, self.windows = (int(v) for v in st["counts"])
        self.new = []

    def push(self, x: np.ndarray) -> list[np.ndarray]:
        """One preprocessed frame; returns the depth frames that became final (maybe none)."""
        self.seen += 1
        self.last = x
        self.new.append(x)
        if len(self.new) == (WINDOW if self.keys is None else STEP):
            return self._run(self.new)
        return []

    def finish(self) -> list[np.ndarray]:
        """End of the clip: the windows still due (their missing frames are copies of the last
        frame, as the official padding), then the frames held back for cross-fading."""
        out: list[np.ndarray] = []
        while self.seen and self.windows * STEP < self.seen:  # window start < clip length
            need = (WINDOW if self.keys is None else STEP) - len(self.new)
            out += self._run(self.new + [self.last] * need)  # type: ignore[list-item]
        rest = self.tail[: max(0, self.seen - self.emitted)]
        self.tail = []
        self.emitted += len(rest)
        return out + rest

    def _run(self, new: list[np.ndarray]) -> list[np.ndarray]:
        """Forward one window, align it to the previous one, return what became final."""
        inputs = new if self.keys is None else self.keys + new
        self.new = []
        self.keys = [inputs[k] for k in KEYFRAMES]
        d = self._depths(np.stack(inputs))
        self.windows += 1
        if not self.refs:  # the first window is the reference
            aligned = d
            self.refs = [d[KEYFRAMES[0]], d[KEYFRAMES[1]]]
            final = []
        else:
            scale: float | np.float32
            shift: float | np.float32
            if self.metric:
                scale, shift = 1.0, 0.0
            else:
                scale, shift = scale_and_shift(np.concatenate(d[:ALIGN]),
                                               np.concatenate(self.refs))
            post = [_affine(p, scale, shift) for p in d[ALIGN:OVERLAP]]
            step = 1.0 / (INTERP - 1)
            w = [0.0] + [i * step for i in range(1, INTERP - 1)] + [1.0]
            final = [pre * (1 - wi) + p * wi for pre, p, wi in zip(self.tail, post, w, strict=True)]
            aligned = [_affine(x, scale, shift) for x in d[OVERLAP:]]
            self.refs = [self.refs[0], _affine(d[KEYFRAMES[1]], scale, shift)]
        final = final + list(aligned[:-INTERP])
        self.tail = list(aligned[-INTERP:])
        final = final[: max(0, self.seen - self.emitted)]
        self.emitted += len(final)
        return final

    def _depths(self, window: np.ndarray) -> list[np.ndarray]:
        """Network forward, then each depth bilinear (align_corners=True) to the frame size."""
        import torch  # here: the image path of the engine runs without torch
        import torch.nn.functional as F

        d = torch.as_tensor(self.forward(window)).float().cpu()
        up = F.interpolate(d[:, None], size=self.frame_size, mode="bilinear", align_corners=True)
        return [f[0].numpy() for f in up]
