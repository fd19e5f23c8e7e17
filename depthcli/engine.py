"""Inference policy in one place: device, precision, shape-bucketed batching, prefetch, retries.

Takes arrays (plus opaque keys) and yields float32 depth arrays; knows nothing of paths,
colour maps or click.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .allocator import tune_malloc
from .models import DepthAnything, create_model
from .models.registry import DEFAULT_MODEL, ModelSpec
from .transforms import Preprocess, upsample

_logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "fp16", "bf16"]
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' → cuda, then mps, then cpu; an explicit device that is absent is an error."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine")
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("--device mps: MPS is not available on this machine")
    return dev


def default_workers(device_type: str) -> int:
    """Host threads for decode/preprocess (and as many writers).

    A CPU model already keeps every core busy, so more host threads only steal from it; a GPU
    model leaves the cores to host work, which then is what limits images/s.
    """
    if device_type == "cpu":
        return 2
    return max(2, min(8, os.cpu_count() or 2))


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype:
    """'auto' = fp16 on CUDA (bf16 where the GPU has it), fp32 elsewhere."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return _DTYPES[precision]


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
    """A loaded model plus its preprocessing, device and precision: the Python API.

    >>> est = DepthEstimator.from_name("da2-small")          # doctest: +SKIP
    >>> depth = est.infer(cv2.imread("photo.jpg"))             # (H, W) float32
    """

    def __init__(
        self,
        model: DepthAnything,
        *,
        device: str | torch.device = "auto",
        precision: Precision = "auto",
        input_size: int | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.spec: ModelSpec = model.spec
        self.preprocess = Preprocess(
            input_size or self.spec.input_size, self.spec.mean, self.spec.std,
            exact=self.dtype == torch.float32,
        )
        tune_malloc()
        self.model = model.eval().to(self.device)
        if self.dtype == torch.float32:
            # fp32 only: folded into bf16/fp16 weights, gamma * W rounds worse than the separate
            # multiply (bf16 mean deviation from fp32 0.53 -> 0.59 % of range on a sample photo).
            self.model.encoder.fold_layerscale()
        # channels_last is always on for CPU: oneDNN runs the DPT head's convolutions in NHWC
        # without reordering to its blocked layout on every call (ViT-S 518x784 fp32 on 2 cores:
        # 1483 -> 1368 ms; same numbers within 2.5e-6 of the depth range).
        if channels_last or self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        # bf16 on CPU: run a copy of the whole model cast to bf16 instead of autocast, which
        # re-casts every weight on every call and keeps norms, GELU and residual adds in fp32
        # (faster, and no less accurate here: see the commit message). The fp32 module stays
        # for the non-finite retry. CUDA/MPS keep autocast.
        self._half: torch.nn.Module | None = None
        if self.dtype == torch.bfloat16 and self.device.type == "cpu":
            self._half = copy.deepcopy(self.model).to(self.dtype)
        run = self._half if self._half is not None else self.model
        self._forward: Callable[[torch.Tensor], torch.Tensor] = run
        if compile:
            self._forward = torch.compile(run, dynamic=False)  # type: ignore[assignment]
        self._lock = threading.Lock()

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
        return cls(create_model(name, weights=weights, max_depth=max_depth), **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ core

    def _run_model(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if dtype == torch.float32:
            return (self.model if self._half is not None else self._forward)(x)
        if self._half is not None:
            with ChunkedAttention():
                return self._forward(x.to(dtype))
        with torch.autocast(self.device.type, dtype=dtype):
            return self._forward(x)

    def forward_batch(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised (B, 3, H', W') → (B, H', W') float32 depth on the device.

        Half precision that yields NaN/inf is redone in fp32 (with a warning); CUDA OOM halves the
        batch and retries.
        """
        x = torch.as_tensor(batch)
        if x.device != self.device:
            x = x.pin_memory() if self.device.type == "cuda" else x
            x = x.to(self.device, non_blocking=True)
        try:
            with torch.inference_mode():
                out = self._run_model(x, self.dtype).float()
                if self.dtype != torch.float32 and not torch.isfinite(out).all():
                    _logger.warning("non-finite output in %s; redoing the batch in fp32",
                                    str(self.dtype).replace("torch.", ""))
                    out = self._run_model(x, torch.float32).float()
            return out
        except torch.cuda.OutOfMemoryError:
            if x.shape[0] == 1:
                raise
            torch.cuda.empty_cache()
            half = x.shape[0] // 2
            _logger.warning("CUDA out of memory at batch %d; retrying as %d + %d",
                            x.shape[0], half, x.shape[0] - half)
            return torch.cat([self.forward_batch(x[:half]), self.forward_batch(x[half:])])

    def postprocess(self, depth: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """(H', W') network-size depth → (h, w) float32 numpy at the original size."""
        up = upsample(depth[None], size, self.spec.upsample_align_corners)[0]
        return up.float().cpu().numpy()

    def infer(self, bgr: np.ndarray) -> np.ndarray:
        """One BGR uint8 image (as cv2.imread gives) → (H, W) float32 depth."""
        x = self.preprocess(bgr)
        out = self.forward_batch(x[None])
        return self.postprocess(out[0], bgr.shape[:2])

    def infer_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """Same as `infer` for an RGB array (PIL/imageio order)."""
        return self.infer(np.ascontiguousarray(rgb[..., ::-1]) if rgb.ndim == 3 else rgb)

    # -------------------------------------------------------------- streaming

    def _prepare(self, key: Hashable, load: Callable[[], np.ndarray], keep: bool) -> Prepared:
        img = load()
        return Prepared(key, self.preprocess(img), img.shape[:2], img if keep else None)

    def run(
        self,
        jobs: Iterable[tuple[Hashable, Callable[[], np.ndarray]]],
        *,
        batch_size: int = 1,
        workers: int = 2,
        keep_images: bool = False,
        max_buffered: int | None = None,
    ) -> Iterator[Result]:
        """Decode/preprocess `jobs` in worker threads, batch equal shapes, yield results.

        Each job is `(key, load)` where `load()` returns a BGR uint8 image or raises. Results come
        in completion order. A shape bucket is flushed when full; when the number of buffered
        inputs reaches `max_buffered` the fullest bucket goes, and at the end everything goes,
        so output keeps flowing and memory stays bounded whatever the number of jobs.
        """
        batch_size = max(1, int(batch_size))
        cap = max_buffered or max(batch_size * 3, 4)
        inflight_cap = max(batch_size * 2, workers * 2)
        buckets: OrderedDict[tuple[int, ...], list[Prepared]] = OrderedDict()
        buffered = 0
        pending: set[Future[Prepared]] = set()
        meta: dict[Future[Prepared], Hashable] = {}
        it = iter(jobs)
        exhausted = False

        def flush(shape: tuple[int, ...]) -> Iterator[Result]:
            nonlocal buffered
            items = buckets.pop(shape)
            buffered -= len(items)
            try:
                out = self.forward_batch(np.stack([p.tensor for p in items]))
            except Exception as exc:  # noqa: BLE001 - reported per input, the run goes on
                for p in items:
                    yield Result(p.key, image=p.image, error=f"inference failed: {exc}", exc=exc)
                return
            for p, d in zip(items, out):
                yield Result(p.key, self.postprocess(d, p.size), image=p.image)

        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="depthcli-load")
        try:
            while True:
                while not exhausted and len(pending) < inflight_cap:
                    try:
                        key, load = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    fut = pool.submit(self._prepare, key, load, keep_images)
                    pending.add(fut)
                    meta[fut] = key
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    key = meta.pop(fut)
                    try:
                        prep = fut.result()
                    except Exception as exc:  # noqa: BLE001 - per-input failure
                        yield Result(key, error=_reason(exc), exc=exc)
                        continue
                    shape = prep.tensor.shape
                    buckets.setdefault(shape, []).append(prep)
                    buffered += 1
                    if len(buckets[shape]) >= batch_size:
                        yield from flush(shape)
                while buffered >= cap and buckets:
                    yield from flush(max(buckets, key=lambda s: len(buckets[s])))
            for shape in list(buckets):
                yield from flush(shape)
        finally:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


class ChunkedAttention(TorchFunctionMode):
    """Run long bf16 `F.scaled_dot_product_attention` calls on CPU as chunked matmuls.

    PyTorch's CPU flash-attention kernel reaches ~140 GFLOP/s in bf16 on AVX512-BF16 (no better
    than its fp32), while bf16 matmul runs near 400: `softmax(q k^T * scale) v` over blocks of
    `chunk` queries (a block's scores stay in cache; memory O(chunk x N)) is ~30% faster per
    attention and ~14% faster for the whole ViT-S at 518x784. Anything else (fp32, masks,
    dropout, short sequences) goes to the original function untouched.
    """

    def __init__(self, chunk: int = 256, min_len: int = 1024) -> None:
        super().__init__()
        self.chunk, self.min_len = chunk, min_len

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and self._applies(args, kwargs):
            q, k, v = args
            return self._attend(q, k, v, kwargs.get("scale"))
        return func(*args, **kwargs)

    def _applies(self, args: tuple, kwargs: dict) -> bool:  # type: ignore[type-arg]
        if len(args) != 3 or set(kwargs) - {"scale", "attn_mask", "dropout_p", "is_causal"}:
            return False
        q, k, v = args
        return (
            kwargs.get("attn_mask") is None and not kwargs.get("dropout_p") and
            not kwargs.get("is_causal") and q.device.type == "cpu" and
            q.dtype == k.dtype == v.dtype == torch.bfloat16 and q.dim() == 4 and
            q.shape[-2] >= self.min_len and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
        )

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                scale: float | None) -> torch.Tensor:
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        q = q * scale  # contiguous: each query block is a plain strided batch of matrices
        kt = k.transpose(-2, -1).contiguous()
        v = v.contiguous()
        out = torch.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype, device=q.device)
        for i in range(0, q.shape[-2], self.chunk):
            block = slice(i, i + self.chunk)
            scores = torch.matmul(q[..., block, :], kt)
            torch.matmul(torch.softmax(scores, dim=-1), v, out=out[..., block, :])
        return out


def _reason(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None = leave as is)."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
