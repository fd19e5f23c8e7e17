"""The images int8 quantisation is calibrated on: a built-in synthetic set, or the user's folder.

Post-training quantisation (backends/int8.py) runs the fp32 network on a few inputs to learn the
range of every activation; the int8 model is only as good as those inputs are typical. The
built-in set is generated, not shipped: `BUILTIN_COUNT` 640x480 "scenes" drawn from a fixed seed
(a sky gradient over a ground plane with a perspective texture towards a horizon, shaded boxes
and discs at several distances, and 1/f colour noise, the spectrum of natural photos), so it is
the same on every machine, costs no download and no licence, and shares nothing with the photos
the deviation is measured on (../shared/samples). `--calibrate DIR` uses the user's own images
instead (every readable image under DIR, sorted by path, at most `MAX_FILES`), which fits the
ranges to their material.

Each set has an `identity` (generator version and count, or the sha256 of the files' names and
bytes) that goes into the cache key with the input size, so another set builds another entry.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DepthCliError

BUILTIN_VERSION = 1  # bump when the generator's images change
BUILTIN_COUNT = 8
BUILTIN_SEED = 24
BUILTIN_SIZE = (480, 640)  # (h, w): a 4:3 photo
MAX_FILES = 64  # calibration beyond a few dozen images changes the ranges little and costs time
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".exr")


class CalibrationError(DepthCliError):
    """`--calibrate DIR` names nothing usable (one line: `DIR: reason`)."""


@dataclass(frozen=True)
class CalibrationSet:
    """Where the calibration images come from; `images()` yields them as BGR uint8 arrays."""

    folder: Path | None = None  # None: the built-in synthetic set
    count: int = BUILTIN_COUNT  # built-in set only: how many scenes
    files: tuple[Path, ...] = ()
    identity: str = ""

    @property
    def description(self) -> str:
        if self.folder is None:
            return f"built-in synthetic set v{BUILTIN_VERSION} ({self.count} scenes 640x480)"
        return f"{len(self.files)} images from {self.folder}"

    def images(self) -> Iterator[np.ndarray]:
        if self.folder is None:
            for i in range(self.count):
                yield synthetic_scene(BUILTIN_SEED + i)
            return
        from ..io.images import read_image

        for p in self.files:
            yield read_image(p)

    def tensors(self, preprocess: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
        """Each image through the model's own preprocessing: (1, 3, H, W) float32 each."""
        return [preprocess(img)[None] for img in self.images()]


def builtin(count: int = BUILTIN_COUNT) -> CalibrationSet:
    return CalibrationSet(None, count, (), f"builtin-v{BUILTIN_VERSION}-n{count}-s{BUILTIN_SEED}")


def from_folder(folder: str | os.PathLike[str]) -> CalibrationSet:
    """The images under `folder` (recursive, sorted); CalibrationError when there are none or
    one cannot be read."""
    root = Path(folder)
    if not root.is_dir():
        raise CalibrationError(f"{root}: not a folder (--calibrate takes a folder of images)")
    try:
        files = sorted(p for p in root.rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:MAX_FILES]
    except OSError as exc:
        raise CalibrationError(f"{root}: cannot be read ({exc.strerror or exc})") from None
    if not files:
        raise CalibrationError(f"{root}: no images to calibrate on "
                               f"({', '.join(IMAGE_SUFFIXES)})")
    h = hashlib.sha256()
    for p in files:
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise CalibrationError(f"{p}: cannot be read ({exc.strerror or exc})") from None
        h.update(f"{p.relative_to(root)}\n{len(data)}\n".encode())
        h.update(data)
    return CalibrationSet(root, len(files), tuple(files), f"dir-{h.hexdigest()[:20]}")


def check_readable(cal: CalibrationSet) -> None:
    """Decode every file of a folder set once, so a bad one is named before any model loads."""
    if cal.folder is None:
        return
    from ..io.images import read_image

    for p in cal.files:
        try:
            read_image(p)
        except Exception as exc:  # noqa: BLE001 - any decode failure: name the file
            raise CalibrationError(f"{p}: not a readable image ({exc})") from None


def synthetic_scene(seed: int, size: tuple[int, int] = BUILTIN_SIZE) -> np.ndarray:
    """One deterministic photo-like BGR uint8 scene (module docstring)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = rng.uniform(0.25, 0.6) * h
    sky_top, sky_low = rng.uniform(120, 255, 3), rng.uniform(150, 255, 3)
    t = np.clip(yy / max(horizon, 1.0), 0, 1)[..., None]
    img = sky_top * (1 - t) + sky_low * t
    # ground: a texture whose period shrinks towards the horizon (perspective), per row depth
    below = yy > horizon
    dist = np.where(below, (h - horizon) / np.maximum(yy - horizon, 1.0), 0.0)
    vx = rng.uniform(0.3, 0.7) * w
    u = (xx - vx) * dist / w
    freq = rng.uniform(4, 12)
    pattern = 0.5 + 0.5 * np.sign(np.sin(freq * u * np.pi) * np.sin(freq * dist * 0.7))
    ground = rng.uniform(40, 200, 3)
    shade = (0.55 + 0.35 * pattern)[..., None] * (1 - 0.4 * np.clip(dist / 20, 0, 1))[..., None]
    img = np.where(below[..., None], ground * shade, img)
    # objects standing on the ground: nearer (lower) ones are larger
    for _ in range(int(rng.integers(3, 8))):
        base = rng.uniform(horizon + 5, h)
        scale = (base - horizon) / (h - horizon)
        ow, oh = w * scale * rng.uniform(0.1, 0.4), h * scale * rng.uniform(0.2, 0.7)
        cx = rng.uniform(0, w)
        colour = rng.uniform(20, 235, 3)
        x0, x1 = max(int(cx - ow / 2), 0), min(int(cx + ow / 2) + 1, w)
        y0, y1 = max(int(base - oh), 0), min(int(base), h)
        if x1 <= x0 or y1 <= y0:
            continue
        bx, by = xx[y0:y1, x0:x1], yy[y0:y1, x0:x1]
        box = img[y0:y1, x0:x1]
        if rng.random() < 0.5:
            side = ((bx - x0) / max(x1 - x0, 1))[..., None]
            box[...] = colour * (0.6 + 0.4 * side)
        else:
            r = ((bx - cx) / max(ow / 2, 1)) ** 2 + ((by - (base - oh / 2)) / max(oh / 2, 1)) ** 2
            light = np.clip(1.1 - 0.5 * r, 0.4, 1.0)[..., None]
            box[...] = np.where((r <= 1)[..., None], colour * light, box)
    # 1/f noise in each channel (drawn at a quarter of the size, then resized): texture with
    # the statistics of natural images
    qh, qw = h // 4, w // 4
    fy, fx = np.fft.fftfreq(qh)[:, None], np.fft.fftfreq(qw)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(qh, qw))
    phase = np.exp(2j * np.pi * rng.random((3, qh, qw)))
    noise = np.fft.ifft2(amp * phase).real.astype(np.float32)
    noise = (noise - noise.mean(axis=(1, 2), keepdims=True)) / (
        noise.std(axis=(1, 2), keepdims=True) + 1e-9)
    img += 18.0 * cv2.resize(noise.transpose(1, 2, 0), (w, h), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 3.0, img.shape)  # sensor noise
    img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.float32), (3, 3), 0.7)
    return np.ascontiguousarray(np.clip(np.round(img), 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class Calibration:
    """A calibration set bound to the model's preprocessing: what the int8 build needs."""

    images: CalibrationSet
    preprocess: Callable[[np.ndarray], np.ndarray]
    input_size: int

    @property
    def identity(self) -> str:
        """The cache key's part: which images, at which network size."""
        return f"{self.images.identity}@{self.input_size}"

    def tensors(self) -> list[np.ndarray]:
        return self.images.tensors(self.preprocess)
