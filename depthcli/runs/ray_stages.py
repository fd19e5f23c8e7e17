"""The work that runs on Ray workers for `predict --engine ray`: read, model, write stages.

Kept apart from the driver (`runs/ray.py`) so that it imports without Ray (and without torch:
only the model actors load the engine): the stage functions are plain `dict of numpy
columns -> dict of numpy columns` callables, testable on their own. They hold no rule of
their own: reading is `io.images.read_image`, the preprocessing the engine's
(`EngineSpec.preprocess`), the batching `DepthEngine.run_prepared`, the writing
`outputs.write_image_outputs`, each what the local run uses.

Rows carry only plain columns (ints, strings, bytes): arrays travel as `.npy` bytes. Ragged
tensors of many shapes and absent values (a video row has no tensor) then never meet Ray
Data's tensor-column inference, and every stage sees exactly what the previous one wrote.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.spec import EngineSpec
from ..engine.transforms import Da3Preprocess, Preprocess
from ..errors import DepthCliError
from ..errors import reason as _reason
from ..io.images import is_uri, read_image
from .models import image_model_error
from .tally import video_reason

if TYPE_CHECKING:  # the engine only where a model runs: read / write task workers skip it
    from ..engine.core import DepthEngine

__all__ = ["EngineSpec", "ModelStage", "read_stage", "write_stage"]

_logger = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- rows, arrays

def pack(arr: np.ndarray | None) -> bytes:
    """An array as `.npy` bytes (b"" for none): shape and dtype travel with the data."""
    if arr is None:
        return b""
    bio = io.BytesIO()
    np.save(bio, np.ascontiguousarray(arr), allow_pickle=False)
    return bio.getvalue()


def unpack(data: bytes | None) -> np.ndarray | None:
    """Inverse of `pack`."""
    if not data:
        return None
    return np.load(io.BytesIO(data), allow_pickle=False)


def column(values: Iterable[Any]) -> np.ndarray:
    """A 1-D object column (bytes / str / ints of any length stay as they are)."""
    items = list(values)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


# ------------------------------------------------------------------------------ stage 1: read

def read_stage(batch: Batch, *, prep: Preprocess | Da3Preprocess, max_pixels: int, keep_image: bool) -> Batch:
    """Read, decode and preprocess each image row (CPU task); videos pass through untouched.

    Adds `x` (network input, npy bytes), `h`, `w` (original size), `img` (the decoded BGR
    image when a format needs it) and `error` (a one-line reason, "" when fine).
    """
    xs, imgs, hs, ws, errors = [], [], [], [], []
    for src, kind in zip(batch["src"], batch["kind"], strict=True):
        x = img = None
        error = ""
        if kind == "image":
            try:
                img = read_image(str(src), max_pixels)
                x = prep(img)
            except Exception as exc:  # noqa: BLE001 - one bad input is one error line
                error = _reason(exc)
        xs.append(pack(x))
        imgs.append(pack(img if keep_image else None))
        hs.append(0 if img is None else img.shape[0])
        ws.append(0 if img is None else img.shape[1])
        errors.append(error)
    out = dict(batch)
    out.update(x=column(xs), img=column(imgs), h=np.array(hs, np.int64),
               w=np.array(ws, np.int64), error=column(errors))
    return out


# ----------------------------------------------------------------------------- stage 2: model

def pack_extras(extras: dict[str, Any] | None) -> bytes:
    """A Depth Anything 3 result's extras (engine.Result.extras) as `.npz` bytes (b"" for
    none): the `conf` / `sky` maps as arrays, the rest (intrinsics, focal, sky fill) as JSON."""
    if not extras:
        return b""
    arrays = {k: np.asarray(v) for k, v in extras.items() if k in ("conf", "sky")}
    meta = {k: v for k, v in extras.items() if k not in arrays}
    bio = io.BytesIO()
    np.savez(bio, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    return bio.getvalue()


def unpack_extras(data: bytes | None) -> dict[str, Any]:
    """Inverse of `pack_extras`."""
    if not data:
        return {}
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        out: dict[str, Any] = json.loads(str(z["meta"]))
        out.update({k: z[k] for k in z.files if k != "meta"})
    return out


def camera_json(extras: dict[str, Any]) -> str:
    """The --json per-image facts of a result's extras (Summary.add_camera), "" for none."""
    meta = {k: v for k, v in extras.items() if k not in ("conf", "sky")}
    return json.dumps(meta) if meta else ""


class ModelStage:
    """One `DepthEngine` per Ray actor: images in equal-shape batches, a video whole.

    Constructed from an `EngineSpec` (not a model object), so each actor loads the same
    checkpoint file from its own node; a restarted actor simply loads it again.
    """

    def __init__(self, cfg: EngineSpec, opts: Any, prep: Preprocess,
                 video_cfg: EngineSpec | None = None) -> None:
        self.opts = opts  # runs.options.PredictOptions, for videos
        self.cfg, self.video_cfg = cfg, video_cfg or cfg
        self._video_est: DepthEngine | None = None
        self.est: DepthEngine | None = None
        self.image_error = image_model_error(cfg.model) or ""
        if self.image_error:  # a video-only model: images get one line each
            return
        self.est = cfg.build()
        if self.est.preprocess != prep:  # the read tasks must have prepared what we expect
            raise DepthCliError(f"preprocessing mismatch: tasks {prep}, actor {self.est.preprocess}")

    def video_estimator(self) -> DepthEngine:
        """The video model, loaded when the first video comes (the image one if the same)."""
        if self.video_cfg == self.cfg and self.est is not None:
            return self.est
        if self._video_est is None:
            self._video_est = self.video_cfg.build()
        return self._video_est

    def _images(self, batch: Batch, errors: list[str]) -> Iterable[Any]:
        """The batch's prepared images through the engine's batching (`run_prepared`), as the
        local run's are: equal network shapes share passes of up to --batch-size."""
        from ..engine.core import Prepared

        todo = [i for i in range(len(errors)) if batch["kind"][i] == "image" and not errors[i]]
        items = [Prepared(i, unpack(batch["x"][i]), (int(batch["h"][i]), int(batch["w"][i])),  # type: ignore[arg-type]
                          None, None if is_uri(str(batch["src"][i])) else Path(str(batch["src"][i])))
                 for i in todo]  # the source path: EXIF focal (da3-metric-large) of local files
        assert self.est is not None
        return self.est.run_prepared(items, batch_size=self.opts.batch_size,
                                     max_buffered=len(items) + 1)

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["src"])
        depth: list[bytes] = [b""] * n
        errors = [str(e) for e in batch["error"]]
        frames, vstatus = [0] * n, [""] * n
        if self.est is None:
            errors = [self.image_error if batch["kind"][i] == "image" and not e else e
                      for i, e in enumerate(errors)]
        extras: list[bytes] = [b""] * n
        if self.est is not None:
            for res in self._images(batch, errors):
                i = int(res.key)
                if res.error is not None:
                    errors[i] = res.error
                else:
                    depth[i], extras[i] = pack(res.depth), pack_extras(res.extras)
        vreport = [""] * n
        for i in range(n):
            if batch["kind"][i] == "video":
                frames[i], vstatus[i], vreport[i], errors[i] = self._video(
                    str(batch["src"][i]), str(batch["base"][i]))
            elif batch["kind"][i] == "range":
                frames[i], vstatus[i], vreport[i], errors[i] = self._range(
                    {k: v[i] for k, v in batch.items()})
        out = {k: v for k, v in batch.items() if k != "x"}
        out.update(depth=column(depth), extras=column(extras), error=column(errors), frames=np.array(frames, np.int64),
                   vstatus=column(vstatus), vreport=column(vreport))
        return out

    def _range(self, row: dict[str, Any]) -> tuple[int, str, str, str]:
        """(frames, status, json report, error) for one frame range of a split video; the
        report is the video's when this range was the last and joined it."""
        from .video_ranges import Span
        from .video_resume import segment_frames
        from .video_split import run_range

        src = str(row["src"])
        if int(row["seg"]) != segment_frames():  # the ranges must start on segment boundaries
            return 0, "failed", "", (f"DEPTHCLI_SEGMENT_FRAMES differs between the driver "
                                     f"({row['seg']}) and this actor ({segment_frames()})")
        span = Span.of_row(row)
        spans = [Span(k, span.count, int(a), None if int(b) < 0 else int(b))
                 for k, (a, b) in enumerate(json.loads(str(row["spans"])))]
        try:
            report, frames = run_range(Path(src), Path(str(row["base"])),
                                       self.video_estimator(), self.opts, span, spans,
                                       str(row["token"]))
        except Exception as exc:  # noqa: BLE001 - the video fails, as a whole video would
            return 0, "failed", "", video_reason(exc, src)
        return frames, "range", json.dumps(report) if report is not None else "", ""

    def _video(self, src: str, base: str) -> tuple[int, str, str, str]:
        """(frames, status, json report, error) for one whole video, as the local engine runs
        it; the report is `VideoReport`'s fields, a split video's range reports have the same
        keys less `paths` and `clip` (`video_split.run_range`)."""
        from .video import predict_video

        try:
            rep = predict_video(Path(src), Path(base), self.video_estimator(), self.opts,
                                resume=True)  # a retry after a killed actor continues
        except Exception as exc:  # noqa: BLE001 - one line, in the local engine's words
            return 0, "failed", "", video_reason(exc, src)
        status = "skipped" if rep.skipped else "written" if rep.written else "none"
        report = {"frames": rep.frames, "written": rep.written, "skipped": rep.skipped,
                  "errors": list(rep.errors), "paths": [str(p) for p in rep.paths],
                  "clip": rep.clip}  # what the driver's tally takes (Tally.video_done)
        return rep.frames, status, json.dumps(report), ""


# ----------------------------------------------------------------------------- stage 3: write

def write_stage(batch: Batch, *, output: Any) -> Batch:
    """Render, encode and atomically write each finished image (CPU task).

    Returns the small result rows the driver needs for its summary: no arrays go back.
    """
    from ..outputs import write_image_outputs

    statuses, errors, cameras = [], [], []
    n = len(batch["src"])
    none = np.full(n, -1, np.int64)  # not a frame range (rows built without the columns)
    for i, src in enumerate(batch["src"]):
        error, camera = str(batch["error"][i]), ""
        status = "failed" if error else "written"
        if batch["kind"][i] in ("video", "range"):
            status = "failed" if error else str(batch["vstatus"][i])
        elif not error:
            paths = {f: Path(p) for f, p in json.loads(str(batch["paths"][i])).items()}
            try:
                extras = unpack_extras(batch["extras"][i])
                write_image_outputs(unpack(batch["depth"][i]), unpack(batch["img"][i]),  # type: ignore[arg-type]
                                    paths, output, Path(str(src)), extras)
                camera = camera_json(extras)
            except Exception as exc:  # noqa: BLE001 - one output failing must not stop the run
                status, error = "failed", f"cannot write output: {exc}"
        statuses.append(status)
        errors.append(error)
        cameras.append(camera)
    return {"idx": batch["idx"], "src": batch["src"], "kind": batch["kind"],
            "status": column(statuses), "error": column(errors), "frames": batch["frames"],
            "camera": column(cameras), "rk": batch.get("rk", none),
            "rn": batch.get("rn", none), "vreport": batch.get("vreport", column([""] * n))}
