"""The benchmark's passes over the images: serial stages, the predict path, the inputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DepthCliError, InputError
from .measure import sync, timer

if TYPE_CHECKING:
    from ..engine.core import DepthEngine

GENERATED_SHAPE = (1362, 2048)  # ~2.8 MP, the size of most sample photos


def find_inputs(n: int | None, source: Path | None, workdir: Path) -> tuple[Path, list[Path], str]:
    """A folder of `n` images: those of `source` (cycled to reach n), or generated ~2.8 MP JPEGs.

    Returns (folder of symlinks, the source files in order, a description).
    """
    import cv2

    from ..io.images import IMAGE_EXTS

    files = []
    if source is not None:
        files = sorted(p for p in source.glob("*") if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise InputError(f"--inputs {source}: no images there")
    if files:
        desc = str(source)
    else:
        gen = workdir / "generated"
        gen.mkdir()
        h, w = GENERATED_SHAPE
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for i in range(4):
            rng = np.random.default_rng(i)
            img = np.stack([np.sin(xx / (40 + 7 * c) + yy / (60 + 11 * c) + rng.uniform(0, 6))
                            for c in range(3)], axis=-1)
            img = img * 90 + 128 + rng.normal(0, 12, img.shape)
            p = gen / f"generated{i}.jpg"
            cv2.imwrite(str(p), np.clip(img, 0, 255).astype(np.uint8),
                        [cv2.IMWRITE_JPEG_QUALITY, 92])
            files.append(p)
        desc = f"generated {h}x{w} JPEGs (no --inputs)"
    n = n or len(files)
    chosen = [files[i % len(files)] for i in range(n)]
    folder = workdir / "inputs"
    folder.mkdir()
    for i, p in enumerate(chosen):
        link = folder / f"{i:05d}{p.suffix.lower()}"
        try:
            link.symlink_to(p.resolve())
        except OSError:
            link.write_bytes(p.read_bytes())
    return folder, chosen, desc


def stage_pass(est: DepthEngine, files: list[Path], out_dir: Path, batch_size: int,
                keep: list[np.ndarray] | None = None) -> dict[str, float]:
    """Every stage for every file, serially in this thread; returns total seconds per stage.

    Consecutive inputs of the same network shape are batched up to `batch_size`.
    """
    from .. import outputs
    from ..io.images import read_image

    acc: dict[str, float] = {}
    opts = outputs.OutputOptions()

    def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
        with timer(acc, "decode"):
            img = read_image(path)
        with timer(acc, "preprocess"):
            x = est.preprocess(img)
        return img, x

    n = 0
    pending = load(files[0]) if files else None
    nxt = 1
    while pending is not None:
        group = [pending]
        pending = None
        while nxt < len(files):
            item = load(files[nxt])
            nxt += 1
            if len(group) < batch_size and item[1].shape == group[0][1].shape:
                group.append(item)
            else:
                pending = item
                break
        with timer(acc, "model"):
            out = est.forward_batch(np.stack([x for _, x in group]))
            sync(est.device)
        for (img, _), d in zip(group, out, strict=True):
            with timer(acc, "postprocess"):
                depth = est.postprocess(d, img.shape[:2])
            if keep is not None:
                keep.append(depth)
            with timer(acc, "write"):
                outputs.write_image_outputs(
                    depth, img, outputs.image_paths(out_dir / f"{n:05d}", opts.formats), opts)
            n += 1
    return acc


def e2e_pass(est: DepthEngine, folder: Path, out_dir: Path, batch_size: int,
              workers: int) -> float:
    from ..runs.images import run_predict
    from ..runs.options import PredictOptions

    errors: list[str] = []
    opts = PredictOptions(inputs=(str(folder),), out_dir=out_dir, batch_size=batch_size,
                          workers=workers)
    t = time.perf_counter()
    summary = run_predict(opts, est, report=errors.append)
    sync(est.device)
    dt = time.perf_counter() - t
    if summary.failed or errors:
        raise DepthCliError(f"end-to-end run failed: {errors[:3]}")
    return dt
