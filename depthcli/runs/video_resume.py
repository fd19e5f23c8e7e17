"""Durable progress of one video: where its partial outputs live, when they are made durable,
and whether a rerun may continue them.

A video's unfinished outputs live in one hidden folder under `-o`, `.depthcli-partial/<name>/`
(discovery never takes files under a dot folder; `remove_stale_temps` leaves it alone). The run
makes its progress durable at least every `CHECKPOINT_S` seconds of work (`DEPTHCLI_CHECKPOINT_FRAMES`
= N: every N frames instead, for tests): the writers fsync what they have, then `state.npz` is
replaced atomically (counts, per-frame timestamps, the clip statistics of the first pass, a
temporal model's window state). A rerun with `--skip-existing` and the same settings (the
fingerprint: source file, model and weights, input size, precision, backend, formats, value
range, segment length) continues from there; any other rerun starts over. The folder goes when
the video's outputs have their final names.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.device import current_threads
from ..io.atomic import PARTIAL_DIR
from ..io.mp4_segments import fsync_dir
from ..io.seqnames import frames_of, is_pattern, parse_pattern

if TYPE_CHECKING:
    from ..engine.core import DepthEngine
    from .options import PredictOptions

_logger = logging.getLogger(__name__)

STATE_DIR = PARTIAL_DIR
CHECKPOINT_S = 30.0
SEGMENT_FRAMES = 120  # frames per H.264 segment (one IDR frame each; see io.mp4_segments)
VERSION = 2  # 2: frame-number subsample of the clip statistics


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def segment_frames() -> int:
    """H.264 segment length; `DEPTHCLI_SEGMENT_FRAMES` changes it (tests: short clips)."""
    return _env_int("DEPTHCLI_SEGMENT_FRAMES") or SEGMENT_FRAMES


def state_folder(out_dir: Path, base: Path) -> Path:
    """The partial-state folder of the video whose output stem is `base`."""
    try:
        rel = str(base.relative_to(out_dir))
    except ValueError:
        rel = str(base)
    tag = hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return out_dir / STATE_DIR / f"{base.name[:60]}.{tag}"


def fingerprint(src: Path, est: DepthEngine, opts: PredictOptions,
                formats: list[str]) -> str:
    """What must be equal for a rerun to continue a partial video instead of starting over."""
    o = opts.output
    parts = {
        "v": VERSION, "src": _source_id(src),
        "model": est.spec.name, "weights": est.digest, "input": est.preprocess.input_size,
        "precision": str(est.dtype), "backend": est.backend.name, "device": est.device_type,
        "output_size": est.output_size, "formats": sorted(formats), "render": repr(o.render),
        "metric": o.metric, "near": o.near_is_large, "norm": opts.video_norm,
        "temporal": opts.temporal,
        "batch": opts.batch_size, "segment": segment_frames(), "max_pixels": opts.max_pixels,
        "threads": current_threads(),  # the sums of a forward pass may differ with the threads
        **({"int8": est.calibration.identity} if est.calibration is not None else {}),
        **({"cuts": opts.scene_cuts} if opts.scene_cuts is not None else {}),
        **({"fps": str(opts.fps), "npy": opts.sequence_npy, "mp4": opts.sequence_video}
           if is_pattern(src) else {}),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _source_id(src: Path) -> list[object]:
    """A file: path, size, mtime; an image sequence: its pattern and every frame's."""
    if not is_pattern(src):
        st = src.stat()
        return [str(src.resolve()), st.st_size, st.st_mtime_ns]
    pat = parse_pattern(str(src))
    assert pat is not None
    rows: list[object] = [str(pat.folder.resolve() / Path(src).name)]
    for n, p in frames_of(pat):
        st = p.stat()
        rows.append([n, st.st_size, st.st_mtime_ns])
    return rows


class Checkpoints:
    """When progress is made durable: every CHECKPOINT_S seconds, or every N frames (env)."""

    def __init__(self) -> None:
        self.every = _env_int("DEPTHCLI_CHECKPOINT_FRAMES")
        self.last_t = time.perf_counter()
        self.last_n = 0

    def start(self, n: int) -> None:
        self.last_t, self.last_n = time.perf_counter(), n

    def due(self, n: int) -> bool:
        if self.every is not None:
            return n - self.last_n >= self.every
        return time.perf_counter() - self.last_t >= CHECKPOINT_S


def _lock(folder: Path) -> int | None:
    """An exclusive lock on `<folder>.lock`, or None when another live run holds it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.with_name(folder.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class VideoState:
    """The partial-state folder of one video: its `state.npz` and the partial outputs."""

    def __init__(self, folder: Path, fp: str) -> None:
        self.folder, self.fp = folder, fp
        self.meta: dict[str, Any] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self._lock: int | None = None

    def release(self) -> None:
        """Unlock (the lock file goes with the folder; a kill releases it too)."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self.folder.with_name(self.folder.name + ".lock").unlink()
            os.close(self._lock)
            self._lock = None

    @classmethod
    def open(cls, folder: Path, fp: str, resume: bool) -> VideoState:
        """The folder's saved state when `resume` and the fingerprint matches; else a fresh one.

        The folder is locked (flock) while the run uses it: a second run on the same video at
        once gets a private folder of its own (no resume) instead of mixing its frames in.
        """
        lock = _lock(folder)
        if lock is None:
            folder = folder.with_name(f"{folder.name}.{os.getpid()}")
            resume = False
            lock = _lock(folder)
        vs = cls(folder, fp)
        vs._lock = lock
        path = folder / "state.npz"
        if resume and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    meta = json.loads(bytes(z["meta"]).decode())
                    arrays = {k: z[k] for k in z.files if k != "meta"}
            except (OSError, ValueError, KeyError) as exc:
                _logger.warning("%s: unreadable partial state (%s); starting over", folder, exc)
            else:
                if meta.get("fingerprint") == fp:
                    vs.meta, vs.arrays = meta, arrays
                    return vs
                _logger.info("%s: settings differ from the interrupted run; starting over",
                             folder.name)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return vs

    @property
    def resumed(self) -> bool:
        return bool(self.meta)

    def save(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Replace state.npz atomically (after the writers made their part durable)."""
        meta = {**meta, "fingerprint": self.fp}
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                 **arrays)  # type: ignore[arg-type]
        tmp = self.folder / "state.npz.new"
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / "state.npz")
        fsync_dir(self.folder)
        self.meta, self.arrays = meta, arrays

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.release()
        with contextlib.suppress(OSError):
            self.folder.parent.rmdir()  # the last partial video of -o
