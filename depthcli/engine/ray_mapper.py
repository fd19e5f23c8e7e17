"""`RayDepthMapper`: depth for a Ray Dataset you already hold (`ds.map_batches(RayDepthMapper)`).

The engine's Python API for Ray Data, beside the engine rather than in the `predict` run: it
knows nothing of files under `-o`, only of a batch of images in and a depth column out. It
imports without Ray (a batch is a plain dict of numpy columns).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io.images import decode_image
from .core import Prepared
from .spec import EngineSpec

Batch = dict[str, np.ndarray]


class RayDepthMapper:
    """Depth for a Ray Dataset you already hold: a `map_batches`-ready callable class.

    Reads column `image` (RGB uint8 arrays, as `ray.data.read_images` gives) or `bytes`
    (encoded files, as `ray.data.read_binary_files` gives) and adds `depth`: float32 (H, W)
    arrays at each input's size (relative inverse depth, or metres for metric models).

    >>> import ray
    >>> from depthcli import RayDepthMapper
    >>> ds = ray.data.read_images("s3://bucket/photos/", mode="RGB")     # doctest: +SKIP
    >>> ds = ds.map_batches(RayDepthMapper, batch_size=8, concurrency=2, num_gpus=1,
    ...                     fn_constructor_kwargs={"model": "da2-small"})  # doctest: +SKIP
    >>> ds.select_columns(["depth"]).write_numpy("s3://bucket/depth/", column="depth")  # doctest: +SKIP

    Each actor builds its own model from the name / checkpoint path (a path readable on every
    node); nothing but the arguments is shipped.
    """

    def __init__(self, model: str = "da2-small", *, weights: str | os.PathLike[str] | None = None,
                 input_size: int | None = None, device: str = "auto", precision: str = "auto",
                 max_depth: float | None = None, batch_size: int = 8,
                 output_column: str = "depth") -> None:
        spec = EngineSpec(model, None if weights is None else str(weights), max_depth,
                          device, precision, input_size)
        self.est = spec.build()
        self.batch_size = batch_size
        self.output_column = output_column

    def _images(self, batch: Batch) -> list[np.ndarray]:
        if "image" in batch:  # RGB, as read_images gives
            return [np.ascontiguousarray(np.asarray(a)[..., ::-1]) if np.asarray(a).ndim == 3
                    else np.asarray(a) for a in batch["image"]]
        if "bytes" in batch:
            return [decode_image(bytes(b), Path("<bytes>")) for b in batch["bytes"]]
        raise KeyError("RayDepthMapper needs an 'image' (RGB arrays) or 'bytes' column")

    def __call__(self, batch: Batch) -> Batch:
        """The batch with its depth column; any input that fails fails the batch (Ray retries
        or reports it), as a `map_batches` function must."""
        images = self._images(batch)
        items = [Prepared(i, self.est.preprocess(img), img.shape[:2], None)
                 for i, img in enumerate(images)]
        results: list[np.ndarray] = [np.empty(0, np.float32)] * len(items)
        for res in self.est.run_prepared(items, batch_size=self.batch_size,
                                         max_buffered=len(items) + 1):
            if res.error is not None:
                raise res.exc if res.exc is not None else RuntimeError(res.error)
            results[int(res.key)] = res.depth  # type: ignore[call-overload,assignment]
        out = dict(batch)
        if len({r.shape for r in results}) == 1:
            out[self.output_column] = np.stack(results)
        else:  # ragged: one object per row
            ragged = np.empty(len(results), dtype=object)
            ragged[:] = results
            out[self.output_column] = ragged
        return out
