"""The engine: preprocessing, shape-bucketed batching, prefetch, retries and postprocessing.

It takes arrays (plus opaque keys), runs them through a `Backend` and yields float32 depth as
host arrays; it knows nothing of paths, colour maps or click, nor of the runtime behind the
backend. Images and the frames of a per-frame video model take one path, `run`
(`preprocess → batching.shape_batches → forward → postprocess`); a temporal model is a
different batching policy (`windows`: 32-frame windows, `stream`: one frame at a time), not a
second engine. Whatever is above it (runs, outputs) gets numpy and never a tensor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Generator, Hashable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..backends.base import Backend
from ..errors import reason
from ..models import create_model
from ..models.registry import DEFAULT_MODEL, ModelSpec
from .batching import shape_batches
from .device import Precision, precision_name, resolve_device, resolve_precision
from .threads import prefetch
from .transforms import engine_preprocess, lower_bound_size, upsample, upsample_host
from .windows import TemporalWindows, video_input_size, video_preprocess

if TYPE_CHECKING:  # torch is imported where the torch model is: a cached runtime model
    import torch  # runs without it (`from_runtime`)

_logger = logging.getLogger(__name__)

# (key, load) or (key, load, source path): the path is read only for an EXIF focal length
# (da3-metric-large's metres).
Job = tuple[Any, ...]
OutputSize = Literal["input", "network"]
Stage = Callable[[str], contextlib.AbstractContextManager[object]]


@dataclass
class Prepared:
    """One decoded + preprocessed input waiting for a batch."""

    key: Hashable
    tensor: np.ndarray  # (3, H', W') float32, normalised
    size: tuple[int, int]  # original (h, w)
    image: np.ndarray | None  # the decoded BGR image, kept only if the caller wants it back
    source: object = None  # the file, for EXIF (DA3 metric scaling)


@dataclass
class Result:
    """A finished input: `depth` (h, w) float32 or `error` (a one-line reason)."""

    key: Hashable
    depth: np.ndarray | None = None
    image: np.ndarray | None = None
    error: str | None = None
    exc: BaseException | None = None
    # Depth Anything 3, at the depth's size: `conf` (any-view), `sky` (bool mask, mono/metric),
    # `intrinsics` (3x3 lists, any-view), `sky_fill`, `focal_px`/`focal_source` (metric).
    extras: dict[str, Any] = field(default_factory=dict)
    network: np.ndarray | None = None  # (H', W') float32 network-size depth, when asked for
    during: Literal["load", "inference"] | None = None  # where `error` happened


class DepthEngine:
    """A loaded model plus its preprocessing, device, precision and backend: the Python API.

    >>> est = DepthEngine.from_name("da2-small")          # doctest: +SKIP
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
        output_size: OutputSize = "input",
        camera: dict[str, float | None] | None = None,
        job_inputs: int | None = None,
        job_aspect: float = 1.0,
        weights_file: str | os.PathLike[str] | None = None,
        calibrate: str | os.PathLike[str] | None = None,
    ) -> None:
        """`job_inputs`: how many images/frames the caller will run, when known (`job_aspect`:
        their typical long/short side ratio): `auto` on a checkpoint not yet converted then
        converts only when that pays (backends/autoplan.py; `weights_file` lets it convert in
        the background for the next run instead).

        `precision="int8"`: OpenVINO post-training quantisation on the CPU (backends/int8.py),
        calibrated on the built-in set or on the images under `calibrate`
        (depthcli/backends/calibration.py); preprocessing and the non-quantised parts stay fp32."""
        import torch

        from ..backends import Job, create_backend

        if not isinstance(model, torch.nn.Module) or not isinstance(
                getattr(model, "spec", None), ModelSpec):
            raise TypeError("DepthEngine needs a depthcli model (from depthcli.create_model), "
                            f"not {type(model).__name__}")
        self._device = device if isinstance(device, torch.device) else resolve_device(device)
        self.device_type: str = self._device.type
        int8 = precision == "int8"
        if calibrate is not None and not int8:
            raise ValueError("--calibrate is for --precision int8")
        self._dtype = resolve_precision("fp32" if int8 else precision, self._device)
        self.spec: ModelSpec = model.spec
        if output_size not in ("input", "network"):
            raise ValueError(f"output size {output_size!r}: use 'input' or 'network'")
        self.output_size = output_size
        # --focal-px / --fov-deg / --cx / --cy (input pixels): da3-metric-large's metres
        self.camera = dict(camera or {})
        self.preprocess = engine_preprocess(self.spec, input_size,
                                            precision_name(self._dtype), self.device_type)
        self.digest = weights_digest(model)  # which weights: a resumed video must match them
        job = (None if job_inputs is None else
               Job(job_inputs, self.preprocess.input_size, weights_file, job_aspect))
        self.calibration = None
        if int8:
            from ..backends.calibration import Calibration, builtin, from_folder

            images = builtin() if calibrate is None else from_folder(calibrate)
            self.calibration = Calibration(images, self.preprocess, self.preprocess.input_size)
        self.backend: Backend = create_backend(
            backend, model, self._device, self._dtype, job=job, calibration=self.calibration,
            channels_last=channels_last, compile=compile, owns_model=owns_model)
        if weights_file is not None:  # for the next run's warm start (engine/warm.py)
            from ..backends.warm import remember_backend

            remember_backend(self.backend, self.spec, float(getattr(model, "max_depth", 1.0)),
                             weights_file, self.digest)

    @classmethod
    def from_name(
        cls,
        name: str = DEFAULT_MODEL,
        *,
        weights: str | os.PathLike[str] | None = None,
        max_depth: float | None = None,
        **kwargs: object,
    ) -> DepthEngine:
        """Load a registry model (or hub repo id) once; reuse the estimator for many images."""
        model = create_model(name, weights=weights, max_depth=max_depth)
        return cls(model, owns_model=True, weights_file=weights,
                   **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_runtime(cls, spec: ModelSpec, backend: Backend, *, digest: str,
                     input_size: int | None = None, output_size: OutputSize = "input"
                     ) -> DepthEngine:
        """An engine on a runtime model that is already built (a cached OpenVINO model on the
        CPU: `engine/warm.py`), with no torch model and without importing torch.

        `digest` is the `weights_digest` of the weights the runtime model was converted from
        (recorded when it was), so that a resumed video matches it either way. Per-frame models
        of V1/V2 in fp32 or int8 only: Depth Anything 3's extras and the temporal models need
        torch."""
        from ..backends.warm import serves

        if not serves(spec) or backend.precision not in ("fp32", "int8"):
            raise ValueError(f"{spec.name} ({backend.precision}) needs the torch model")
        est = cls.__new__(cls)
        est._device, est._dtype, est.device_type = None, None, backend.device
        est.spec, est.output_size, est.camera = spec, output_size, {}
        est.preprocess = engine_preprocess(spec, input_size, "fp32", backend.device)
        est.digest, est.calibration, est.backend = digest, None, backend
        return est

    @property
    def device(self) -> torch.device:
        """The torch device the model runs on (imported here for an engine `from_runtime`)."""
        if self._device is None:
            import torch

            self._device = torch.device(self.device_type)
        return self._device

    @property
    def device_name(self) -> str:
        """The device as the summary names it ("cpu", "cuda:1"), without importing torch."""
        return self.device_type if self._device is None else str(self._device)

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype of the model's activations (fp32 for an engine `from_runtime`)."""
        if self._dtype is None:
            import torch

            self._dtype = torch.float32
        return self._dtype

    @property
    def model(self) -> torch.nn.Module | None:
        """The torch module behind a torch backend (None for other runtimes)."""
        return getattr(self.backend, "model", None)

    # ------------------------------------------------------------------ core

    def forward_batch(self, batch: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Normalised (B, 3, H', W') → (B, H', W') float32 depth (on the device for torch; a host
        array from the other runtimes).

        Depth Anything 3: the depth after the sky fill, without metric scaling (`forward_full`).
        """
        return self.forward_full(batch)[0]

    def forward_full(self, batch: np.ndarray | torch.Tensor
                     ) -> tuple[np.ndarray | torch.Tensor, list[dict[str, Any]]]:
        """(B, H', W') depth and per-image extras (Depth Anything 3; empty dicts otherwise)."""
        out = self._run(batch)
        if self.spec.family != "v3":
            return out, [{} for _ in range(len(out))]
        import torch

        from ..models.da3_post import unpack

        return unpack(self.spec, torch.as_tensor(out))

    def _run(self, batch: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """The backend's raw output; CUDA out-of-memory halves the batch and retries."""
        try:
            return self.backend.run(batch)
        except Exception as exc:
            if not _cuda_out_of_memory(exc) or len(batch) == 1:
                raise
            import torch

            n = len(batch)
            torch.cuda.empty_cache()
            half = n // 2
            _logger.warning("CUDA out of memory at batch %d; retrying as %d + %d",
                            n, half, n - half)
            return torch.cat([torch.as_tensor(self._run(batch[:half])),
                              torch.as_tensor(self._run(batch[half:]))])

    def postprocess(self, depth: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(H', W') network-size depth → float32 numpy at the original (h, w) size, or as it is
        with output_size="network" (exactly the official API's array for DA3).

        Behind a runtime (OpenVINO, ONNX Runtime) a host array is upsampled in numpy by torch's
        rule (`upsample_host`, within 2 ulp of torch's): a run on a cached runtime model then
        needs no torch, and gives the same bytes as one that loaded it. Behind torch it goes
        through torch, as its tensors do, so a stored network-size depth (a second pass, a
        resumed video) upsamples to the very bytes of the first."""
        if isinstance(depth, np.ndarray):
            if self.output_size == "network":
                return depth.astype(np.float32)
            if self.backend.name != "torch":
                return upsample_host(depth, size, self.spec.upsample_align_corners)
            import torch

            depth = torch.from_numpy(depth)
        if self.output_size == "network":
            return depth.float().cpu().numpy()
        up = upsample(depth[None], size, self.spec.upsample_align_corners)[0]
        return up.float().cpu().numpy()

    def finish(self, depth: torch.Tensor, extras: dict[str, Any], size: tuple[int, int],
               source: object = None) -> tuple[np.ndarray, dict[str, Any]]:
        """One image's network-size depth + extras → output-size arrays (see `Result`)."""
        if self.spec.family != "v3":
            return self.postprocess(depth, size), {}
        from ..models.da3_post import (
            SKY_MASK_THRESHOLD,
            metric_scale,
            network_focal,
            scale_intrinsics,
        )

        net = (int(depth.shape[-2]), int(depth.shape[-1]))
        out: dict[str, Any] = {}
        if self.spec.output == "metric":
            exif = source if isinstance(source, (str, os.PathLike)) else None
            focal, src = network_focal(size, net, self.camera, exif)
            depth = metric_scale(depth, focal)
            out.update(focal_px=focal, focal_source=src)
        final = self.postprocess(depth, size)
        if "conf" in extras:
            out["conf"] = self.postprocess(extras["conf"], size)
            out["intrinsics"] = scale_intrinsics(extras["intrinsics"], net, final.shape)
        if "sky_map" in extras:
            out["sky"] = self.postprocess(extras["sky_map"], size) >= SKY_MASK_THRESHOLD
            out["sky_fill"] = extras["sky_fill"]
        return final, out

    def infer_frame(self, bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """One video frame → (h, w) float32 depth at `size`: forward and upsampling only, as
        `run(..., extras=False)` gives every frame of a video."""
        return self.postprocess(self.forward_batch(self.preprocess(bgr)[None])[0], size)

    # ------------------------------------------------------------ video models

    def video_preprocess(self, frame_size: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
        """Video Depth Anything's input rule for frames of `frame_size` (`windows`): BGR uint8
        → normalised (3, h', w') float32, in the official op order."""
        return video_preprocess(self.preprocess.input_size, frame_size, self.spec.mean,
                                self.spec.std)

    def network_size(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        """The network's (H', W') for frames of `frame_size`: Video Depth Anything's rule for a
        temporal model, the image rule otherwise (what a second pass stores per frame)."""
        h, w = frame_size
        if getattr(self.spec, "temporal", False):
            return lower_bound_size(h, w, video_input_size(self.preprocess.input_size, (h, w)))
        return self.preprocess.target_size(h, w)

    def windows(self, frame_size: tuple[int, int]) -> TemporalWindows:
        """A fresh run of the whole-video window procedure on this model, for frames of
        `frame_size` preprocessed by `video_preprocess`."""
        return TemporalWindows(self._window_depth, frame_size,
                               metric=self.spec.output == "metric")

    def _window_depth(self, window: np.ndarray) -> np.ndarray:
        return _host(self.forward_batch(window))

    def infer(self, bgr: np.ndarray) -> np.ndarray:
        """One BGR uint8 image (as cv2.imread gives) → (H, W) float32 depth."""
        return self.infer_full(bgr).depth  # type: ignore[return-value]

    def infer_full(self, bgr: np.ndarray, source: object = None) -> Result:
        """One BGR image → a Result with depth and (Depth Anything 3) extras: confidence, sky
        mask and camera intrinsics at the output's size; `source` is read for EXIF only."""
        _check_image(bgr)
        x = self.preprocess(bgr)
        out, extras = self.forward_full(x[None])
        depth, more = self.finish(out[0], extras[0], bgr.shape[:2], source)
        return Result(None, depth, extras=more)

    def infer_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """Same as `infer` for an RGB array (PIL/imageio order)."""
        _check_image(rgb)
        return self.infer(np.ascontiguousarray(rgb[..., ::-1]) if rgb.ndim == 3 else rgb)

    # -------------------------------------------------------------- streaming

    def _prepare(self, job: Job, keep: bool, stage: Stage) -> Prepared:
        key, load = job[0], job[1]
        with stage("decode"):
            img = load()
        with stage("preprocess"):
            x = self.preprocess(img)
        return Prepared(key, x, img.shape[:2], img if keep else None,
                        job[2] if len(job) > 2 else None)

    def _flush(self, items: list[Prepared], stage: Stage, *, extras: bool,
               network: bool) -> Iterator[Result]:
        try:
            with stage("model"):
                batch = np.stack([p.tensor for p in items])
                if extras:
                    out, more = self.forward_full(batch)
                else:
                    out, more = self.forward_batch(batch), [{} for _ in items]
        except Exception as exc:  # noqa: BLE001 - reported per input, the run goes on
            for p in items:
                yield Result(p.key, image=p.image, error=f"inference failed: {exc}", exc=exc,
                             during="inference")
            return
        for p, d, ex in zip(items, out, more, strict=True):
            with stage("postprocess"):
                if extras:
                    depth, kept = self.finish(d, ex, p.size, p.source)
                else:
                    depth, kept = self.postprocess(d, p.size), {}
                net = _host(d) if network else None
            yield Result(p.key, depth, image=p.image, extras=kept, network=net)

    def run(self, jobs: Iterable[Job], *, batch_size: int = 1, workers: int = 2,
            keep_images: bool = False, max_buffered: int | None = None, ordered: bool = False,
            extras: bool = True, network: bool = False,
            stages: Stage | None = None) -> Generator[Result, None, None]:
        """Decode/preprocess `jobs` in worker threads, batch equal shapes, yield results.

        Each job is `(key, load)` where `load()` returns a BGR uint8 image or raises. Results come
        in completion order, or in job order with `ordered` (a video's frames, all of one
        shape). Batches follow `batching.shape_batches` (`max_buffered` bounds the waiting
        inputs), so memory stays bounded whatever the number of jobs.

        `workers=0` decodes and preprocesses in the calling thread, one job after the other.
        `extras=False`: depth only, forward then upsampling (a video frame: no Depth Anything 3
        extras, no per-image metric scaling). `network`: each result also carries the
        network-size depth as a host array (`Result.network`). `stages(name)`: a context
        manager entered around each step ("decode", "preprocess" in the loading threads,
        "model", "postprocess" in this one), for a benchmark that times them apart.
        """
        stage = stages or _no_stage
        batch_size = max(1, int(batch_size))

        def prepared() -> Generator[Prepared | Result, None, None]:
            if workers <= 0:
                for job in jobs:
                    try:
                        yield self._prepare(job, keep_images, stage)
                    except Exception as exc:  # noqa: BLE001 - per-input failure
                        yield Result(job[0], error=reason(exc), exc=exc, during="load")
                return
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="depthcli-load")
            try:
                for job, fut in prefetch(lambda j: self._prepare(j, keep_images, stage), jobs,
                                         pool, ahead=max(batch_size * 2, workers * 2),
                                         ordered=ordered):
                    try:
                        yield fut.result()
                    except Exception as exc:  # noqa: BLE001 - per-input failure
                        yield Result(job[0], error=reason(exc), exc=exc, during="load")
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

        items = prepared()
        try:
            yield from self.run_prepared(items, batch_size=batch_size, max_buffered=max_buffered,
                                         extras=extras, network=network, stages=stages)
        finally:
            items.close()

    def run_prepared(self, items: Iterable[Prepared | Result], *, batch_size: int = 1,
                     max_buffered: int | None = None, extras: bool = True, network: bool = False,
                     stages: Stage | None = None) -> Generator[Result, None, None]:
        """Already preprocessed inputs, batched by network shape (`batching.shape_batches`),
        through the model and postprocessing: the engine's one batching path, which `run`
        feeds from its loaders. A `Result` among the items (an input that failed before) is
        passed through; `extras`, `network`, `stages` as in `run`."""
        stage = stages or _no_stage
        for group in shape_batches(
                items, lambda p: p.tensor.shape if isinstance(p, Prepared) else None,
                batch_size, max_buffered):
            first = group[0]
            if isinstance(first, Result):
                yield first
                continue
            yield from self._flush(group, stage,  # type: ignore[arg-type]
                                   extras=extras, network=network)


@contextlib.contextmanager
def _no_stage(name: str) -> Iterator[None]:
    yield


def weights_digest(model: torch.nn.Module) -> str:
    """A short digest of the weights (names, shapes, 64 values of each tensor): milliseconds even
    for ViT-L, and different for any two checkpoints one would confuse."""
    import hashlib

    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            flat = t.detach().reshape(-1)
            step = max(1, flat.numel() // 64)
            h.update(f"{name}{tuple(t.shape)}".encode())
            h.update(flat[::step][:64].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _host(depth: np.ndarray | torch.Tensor) -> np.ndarray:
    """A float32 host array of a depth map, wherever it was computed."""
    if isinstance(depth, np.ndarray):
        return depth.astype(np.float32, copy=False)
    return depth.float().cpu().numpy()


def _cuda_out_of_memory(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # no torch loaded: no CUDA either
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


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
