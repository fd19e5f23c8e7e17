"""The benchmark's passes over the images: serial stages, the predict path, the inputs."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
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

    The engine's own batching path (`DepthEngine.run`, same-shape inputs batched up to
    `batch_size`) with loading in this thread and a timer around each of its steps; the
    writes are the last stage. `keep` gets the depths in input order when `batch_size` is 1.
    """
    from .. import outputs
    from ..io.images import read_image

    acc: dict[str, float] = {}
    opts = outputs.OutputOptions()

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        with timer(acc, name):
            yield
            if name == "model":
                sync(est.device)

    jobs = [(n, functools.partial(read_image, p)) for n, p in enumerate(files)]
    for res in est.run(jobs, batch_size=batch_size, workers=0, keep_images=True, stages=stage):
        if res.exc is not None:
            raise res.exc
        assert res.depth is not None and res.image is not None
        if keep is not None:
            keep.append(res.depth)
        with timer(acc, "write"):
            outputs.write_image_outputs(
                res.depth, res.image, outputs.image_paths(out_dir / f"{res.key:05d}", opts.formats),
                opts)
    return acc


def e2e_pass(est: DepthEngine, folder: Path, out_dir: Path, batch_size: int,
              workers: int) -> float:
    from ..runs.local import run_predict
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
