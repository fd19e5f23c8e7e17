"""Which cached OpenVINO model belongs to a checkpoint file, known without reading the file.

The runtime cache (backends/cache.py) keys an entry by the sha256 of the weights' numbers, so
finding it means loading the checkpoint into the torch model first: importing torch and timm,
reading ~100 MB and hashing them, several seconds before the first image. A warm record maps
what can be had from the file system alone (the checkpoint's real path, size and mtime, the
model name and max depth, the versions) to the entry that the full path found and checked, so
that a later run goes straight to the entry (`engine/warm.py`) without torch.

Records are written by a run that took the full path (its entry passed the sha256 check of
every file), under `<cache root>/runtimes/openvino/warm/<key>.json`, atomically. A record is
trusted only while every file of its entry has the size and mtime it had then; a checkpoint
rewritten in place has another mtime, hence another key. Anything off: no record, the full
path runs (and records again). Deleting the folder is safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from ..version import __version__
from .cache import FORMAT, RuntimeCache
from .int8 import scheme_id

if TYPE_CHECKING:
    from ..models.registry import ModelSpec

_logger = logging.getLogger(__name__)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


@dataclass(frozen=True)
class WarmKey:
    """A checkpoint file as the file system knows it, and what the conversion depended on
    beyond its numbers (the cache key's other fields)."""

    model: str
    weights: str  # the real path
    size: int
    mtime_ns: int
    max_depth: float  # the model's, default resolved
    openvino: str  # openvino.__version__, as in the cache key
    torch: str
    depthcli: str
    precision: str = "fp32"  # or int8: the entry quantised on `calibration`
    calibration: str = ""  # int8: the calibration's identity (images @ network size)
    nncf: str = ""  # int8: NNCF's version and the int8 settings, as in the int8 cache key

    @classmethod
    def of(cls, model: str, weights: str | os.PathLike[str], max_depth: float,
           openvino_version: str, *, calibration: str | None = None) -> WarmKey | None:
        """The key of checkpoint `weights` (its int8 entry when `calibration` is given), or
        None if it cannot be stat'ed."""
        try:
            path = Path(weights).resolve()
            st = path.stat()
        except OSError:
            return None
        int8 = ("int8", calibration, scheme_id()) if calibration is not None else ()
        return cls(model, str(path), st.st_size, st.st_mtime_ns, float(max_depth),
                   openvino_version, _version("torch"), __version__, *int8)

    @property
    def digest(self) -> str:
        text = json.dumps({**asdict(self), "format": FORMAT}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class WarmRecord:
    """A checked entry of the OpenVINO cache and the engine digest of its weights."""

    entry: Path
    digest: str  # engine.core._param_digest of the weights (a resumed video checks it)


def serves(spec: ModelSpec) -> bool:
    """Whether a warm start can serve model `spec`: a V1/V2 per-frame model (Depth Anything
    3's extras and the temporal models' windows need torch)."""
    return spec.family != "v3" and not spec.temporal


def _folder(cache: RuntimeCache) -> Path:
    return cache.root / "openvino" / "warm"


def _stats(entry: Path) -> dict[str, list[int]]:
    stats = {p.name: p.stat() for p in sorted(entry.iterdir()) if p.is_file()}
    return {name: [st.st_size, st.st_mtime_ns] for name, st in stats.items()}


def remember(key: WarmKey, entry: Path, digest: str, cache: RuntimeCache) -> None:
    """Record that `key`'s checkpoint converts to the (checked) entry `entry`. Never fatal."""
    folder = _folder(cache)
    try:
        record = {"key": asdict(key), "entry": entry.name, "files": _stats(entry),
                  "digest": digest}
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".warm.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        os.replace(tmp, folder / f"{key.digest}.json")
    except OSError as exc:
        _logger.debug("no warm record for %s (%s)", key.weights, exc)


def recall(key: WarmKey, cache: RuntimeCache) -> WarmRecord | None:
    """The entry recorded for `key`, if it and its files are as they were when recorded."""
    path = _folder(cache) / f"{key.digest}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("key") != asdict(key):
            return None
        entry = cache.root / "openvino" / str(record["entry"])
        if _stats(entry) != record["files"]:
            _logger.debug("warm record %s: entry %s changed", path.name, entry)
            return None
        return WarmRecord(entry, str(record["digest"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_backend(backend: object, spec: ModelSpec, max_depth: float,
                     weights: str | os.PathLike[str] | None, digest: str) -> None:
    """After the full path: record `backend`'s checked OpenVINO entry for checkpoint `weights`,
    when a warm start (engine/warm.py) could use it: a V1/V2 per-frame model, fp32 or int8
    quantised on the built-in calibration set (`--calibrate DIR` would need its images read
    to know the entry)."""
    from .openvino import OpenVINOBackend

    if (weights is None or not isinstance(backend, OpenVINOBackend)
            or getattr(backend, "entry", None) is None
            or not serves(spec) or not Path(weights).is_file()):
        return
    calibration = backend.calibration
    if backend.precision == "int8":
        if calibration is None or calibration.images.folder is not None:
            return
    elif backend.precision != "fp32":
        return
    import openvino as ov

    key = WarmKey.of(spec.name, weights, max_depth, ov.__version__,
                     calibration=calibration.identity if calibration is not None else None)
    if key is not None:
        remember(key, backend.entry, digest, backend.cache)
