"""The engine: preprocessing, shape-bucketed batching, prefetch, retries and postprocessing.

It takes arrays (plus opaque keys), runs them through a `Backend` and yields float32 depth; it
knows nothing of paths, colour maps or click, nor of the runtime behind the backend. Images
and video frames go through the same `preprocess → forward_batch → postprocess` steps; a
temporal model is a different batching policy (windows, `depthcli.windows`), not a second engine.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .backends import Backend
from .device import Precision, resolve_device, resolve_precision
from .errors import reason
from .models import create_model
from .models.registry import DEFAULT_MODEL, ModelSpec
from .threads import prefetch
from .transforms import Preprocess, upsample

_logger = logging.getLogger(__name__)

Job = tuple[Hashable, Callable[[], np.ndarray]]


@dataclass
class Prepared:
    """One decoded + preprocessed input waiting for a batch."""

    key: Hashable
    tensor: np.ndarray  # (3, H', W') float32, normalised
    size: tuple[int, int]  # original (h, w)
    image: np.ndarray | None  # the decoded BGR image, kept only if the caller wants it back


@dataclass
class Result:
    """A finished input: `depth` (h, w) float32 or `error` (a one-line reason)."""

    key: Hashable
    depth: np.ndarray | None = None
    image: np.ndarray | None = None
    error: str | None = None
    exc: BaseException | None = None


class DepthEstimator:
    """A loaded model plus its preprocessing, device, precision and backend: the Python API.

    >>> est = DepthEstimator.from_name("da2-small")          # doctest: +SKIP
    >>> depth = est.infer(cv2.imread("photo.jpg"))             # (H, W) float32
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: str | torch.device = "auto",
        precision: Precision = "auto",
        input_size: int | None = None,
        channels_last: bool = False,
        compile: bool = False,
        backend: str | Backend = "torch",
        owns_model: bool = False,
    ) -> None:
        from .backends import create_backend

        if not isinstance(model, torch.nn.Module) or not isinstance(
                getattr(model, "spec", None), ModelSpec):
            raise TypeError("DepthEstimator needs a depthcli model (from depthcli.create_model), "
                            f"not {type(model).__name__}")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.spec: ModelSpec = model.spec  # type: ignore[assignment]
        self.preprocess = Preprocess(
            input_size or self.spec.input_size, self.spec.mean, self.spec.std,
            exact=self.dtype == torch.float32,
        )
        self.backend: Backend = create_backend(
            backend, model, self.device, self.dtype, channels_last=channels_last,
            compile=compile, owns_model=owns_model)

    @classmethod
    def from_name(
        cls,
        name: str = DEFAULT_MODEL,
        *,
        weights: str | os.PathLike[str] | None = None,
        max_depth: float | None = None,
        **kwargs: object,
    ) -> DepthEstimator:
        """Load a registry model (or hub repo id) once; reuse the estimator for many images."""
        model = create_model(name, weights=weights, max_depth=max_depth)
        return cls(model, owns_model=True, **kwargs)  # type: ignore[arg-type]

    @property
    def model(self) -> torch.nn.Module | None:
        """The torch module behind a torch backend (None for other runtimes)."""
        return getattr(self.backend, "model", None)

    # ------------------------------------------------------------------ core

    def forward_batch(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised (B, 3, H', W') → (B, H', W') float32 depth (on the device for torch).

        CUDA out-of-memory halves the batch and retries.
        """
        try:
            return torch.as_tensor(self.backend.run(batch))
        except torch.cuda.OutOfMemoryError:
            n = len(batch)
            if n == 1:
                raise
            torch.cuda.empty_cache()
            half = n // 2
            _logger.warning("CUDA out of memory at batch %d; retrying as %d + %d",
                            n, half, n - half)
            return torch.cat([self.forward_batch(batch[:half]), self.forward_batch(batch[half:])])

    def postprocess(self, depth: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """(H', W') network-size depth → (h, w) float32 numpy at the original size."""
        up = upsample(depth[None], size, self.spec.upsample_align_corners)[0]
        return up.float().cpu().numpy()

    def infer(self, bgr: np.ndarray) -> np.ndarray:
        """One BGR uint8 image (as cv2.imread gives) → (H, W) float32 depth."""
        _check_image(bgr)
        x = self.preprocess(bgr)
        out = self.forward_batch(x[None])
        return self.postprocess(out[0], bgr.shape[:2])

    def infer_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """Same as `infer` for an RGB array (PIL/imageio order)."""
        _check_image(rgb)
        return self.infer(np.ascontiguousarray(rgb[..., ::-1]) if rgb.ndim == 3 else rgb)

    # -------------------------------------------------------------- streaming

    def _prepare(self, job: Job, keep: bool) -> Prepared:
        key, load = job
        img = load()
        return Prepared(key, self.preprocess(img), img.shape[:2], img if keep else None)

    def _flush(self, items: list[Prepared]) -> Iterator[Result]:
        try:
            out = self.forward_batch(np.stack([p.tensor for p in items]))
        except Exception as exc:  # noqa: BLE001 - reported per input, the run goes on
            for p in items:
                yield Result(p.key, image=p.image, error=f"inference failed: {exc}", exc=exc)
            return
        for p, d in zip(items, out, strict=True):
            yield Result(p.key, self.postprocess(d, p.size), image=p.image)

    def run(self, jobs: Iterable[Job], *, batch_size: int = 1, workers: int = 2,
            keep_images: bool = False, max_buffered: int | None = None) -> Iterator[Result]:
        """Decode/preprocess `jobs` in worker threads, batch equal shapes, yield results.

        Each job is `(key, load)` where `load()` returns a BGR uint8 image or raises. Results come
        in completion order. A shape bucket is flushed when full; when the number of buffered
        inputs reaches `max_buffered` the fullest bucket goes, and at the end everything goes,
        so output keeps flowing and memory stays bounded whatever the number of jobs.
        """
        batch_size = max(1, int(batch_size))
        cap = max_buffered or max(batch_size * 3, 4)
        buckets: OrderedDict[tuple[int, ...], list[Prepared]] = OrderedDict()
        buffered = 0
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="depthcli-load")
        try:
            for (key, _), fut in prefetch(lambda j: self._prepare(j, keep_images), jobs, pool,
                                          ahead=max(batch_size * 2, workers * 2), ordered=False):
                try:
                    prep = fut.result()
                except Exception as exc:  # noqa: BLE001 - per-input failure
                    yield Result(key, error=reason(exc), exc=exc)
                    continue
                bucket = buckets.setdefault(prep.tensor.shape, [])
                bucket.append(prep)
                buffered += 1
                if len(bucket) >= batch_size:
                    buffered -= len(bucket)
                    yield from self._flush(buckets.pop(prep.tensor.shape))
                while buffered >= cap and buckets:
                    fullest = buckets.pop(max(buckets, key=lambda s: len(buckets[s])))
                    buffered -= len(fullest)
                    yield from self._flush(fullest)
            while buckets:
                yield from self._flush(buckets.popitem(last=False)[1])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _check_image(img: object) -> None:
    """The Python API's input check: a sentence instead of an AttributeError from inside."""
    if img is None:
        raise TypeError("expected an image array (H, W, 3) uint8, got None: cv2.imread returns "
                        "None when the file is missing or not an image")
    if not isinstance(img, np.ndarray):
        raise TypeError(f"expected an image as a numpy array (H, W, 3), got {type(img).__name__}")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)) \
            or 0 in img.shape[:2]:
        raise ValueError(f"expected an image array (H, W) or (H, W, 3), got shape {img.shape}")
