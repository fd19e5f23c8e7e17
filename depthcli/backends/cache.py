"""On-disk cache of converted runtime models, so that only the first run pays for conversion.

Converting a ViT-S to OpenVINO takes ~10 s and exporting it to ONNX ~40 s on a 2-core CPU;
reading the result back takes well under a second. Entries are keyed by everything that changes
the artefact: the checkpoint content (sha256 of the state_dict bytes, so a retrained or
re-downloaded file with other numbers never hits an old entry), the model name and head settings
(taps, output kind, max depth), the precision the artefact is stored in, the shape policy, and
the versions of the runtime, torch and depthcli that produced it.

Where (Hugging Face cache conventions; `huggingface_hub` puts its files under `$HF_HOME/hub`):
  `$DEPTHCLI_CACHE` if set, else `$HF_HOME/depthcli`, with `HF_HOME` defaulting to
  `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
Layout: `<root>/runtimes/<runtime>/<model>-<precision>-<shapes>-<key>/` holding the artefact
files and `manifest.json` (key fields, file sizes and sha256). Deleting any of it is safe.

Writes are atomic: an entry is built in a temporary folder beside its final place and renamed
into place only when complete, so a killed run leaves a `.*.tmp` folder, never a half entry.
An entry that fails validation (missing/truncated/altered file, unreadable manifest) or fails to
load is removed and rebuilt with a warning, never fatal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from . import locks

if TYPE_CHECKING:
    import torch

    from ..models import DepthAnything

_logger = logging.getLogger(__name__)

FORMAT = 1  # bump when what an entry holds changes meaning
MANIFEST = "manifest.json"
T = TypeVar("T")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: explicit argument, `$DEPTHCLI_CACHE`, or `$HF_HOME/depthcli`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DEPTHCLI_CACHE")
    if env:
        return Path(env).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if not hf_home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        hf_home = os.path.join(xdg, "huggingface")
    return Path(hf_home).expanduser() / "depthcli"


def state_dict_digest(module: torch.nn.Module) -> str:
    """sha256 over every state_dict entry's name, dtype, shape and bytes (~0.1 s for ViT-S).

    Hashing the tensors rather than a weights file also covers models built in memory (the
    synthetic recipe, `--weights` in any layout) and gives one key per set of numbers.
    """
    import torch

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything an entry depends on; `digest` names it."""

    runtime: str  # "openvino" | "onnxruntime"
    model: str  # registry name
    weights: str  # state_dict_digest
    precision: str  # the precision the artefact is stored in
    shapes: str  # shape policy, e.g. "dynamic" or "static-518x784"
    versions: Mapping[str, str] = field(default_factory=dict)  # runtime, torch, depthcli...
    extra: Mapping[str, str] = field(default_factory=dict)  # head settings, opset...

    @property
    def digest(self) -> str:
        fields = asdict(self)
        fields["format"] = FORMAT
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]

    @property
    def dirname(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model)
        return f"{safe}-{self.precision}-{self.shapes}-{self.digest}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _problem(entry: Path, key: CacheKey) -> str | None:
    """Why `entry` cannot be used, or None if every file matches its manifest."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        if manifest.get("digest") != key.digest:
            return "manifest is for another key"
        files = manifest["files"]
        for name, meta in files.items():
            p = entry / name
            if not p.is_file():
                return f"{name} is missing"
            if p.stat().st_size != meta["size"]:
                return f"{name} has {p.stat().st_size} bytes, expected {meta['size']}"
            if _sha256(p) != meta["sha256"]:
                return f"{name} content changed"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest ({exc})"
    return None


class RuntimeCache:
    """Build-once storage for runtime artefacts under `cache_root(cache_dir)`."""

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = cache_root(cache_dir) / "runtimes"

    def entry_path(self, key: CacheKey) -> Path:
        return self.root / key.runtime / key.dirname

    def lookup(self, key: CacheKey) -> Path | None:
        """A valid entry for `key`, or None; a corrupt one is removed with a warning."""
        entry = self.entry_path(key)
        if not entry.exists():
            return None
        problem = _problem(entry, key)
        if problem is None:
            return entry
        self.discard(entry, problem)
        return None

    def discard(self, entry: Path, reason: str) -> None:
        _logger.warning("cache entry %s is unusable (%s); rebuilding it", entry, reason)
        shutil.rmtree(entry, ignore_errors=True)

    def build(self, key: CacheKey, build: Callable[[Path], None]) -> Path:
        """Run `build(folder)` in a temporary folder, then publish it atomically as the entry."""
        entry = self.entry_path(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.{os.getpid()}.", suffix=".tmp",
                                    dir=entry.parent))
        try:
            build(tmp)
            files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
                     for p in sorted(tmp.iterdir()) if p.is_file()}
            manifest = {"digest": key.digest, "key": asdict(key), "format": FORMAT, "files": files}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            try:
                os.rename(tmp, entry)
            except OSError:  # another process published the same key first (or a stale one)
                if self.lookup(key) is None:
                    shutil.rmtree(entry, ignore_errors=True)
                    os.rename(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return entry

    def get(self, key: CacheKey, build: Callable[[Path], None],
            load: Callable[[Path], T]) -> tuple[T, bool]:
        """`load(entry)` of a valid entry, building (or rebuilding) it first when needed.

        Returns (loaded, built): `built` is True when this call ran `build`. An entry that
        passes validation but fails to load is discarded and rebuilt once.
        """
        entry = self.lookup(key)
        if entry is not None:
            try:
                return load(entry), False
            except Exception as exc:  # noqa: BLE001 - any load failure means: rebuild
                self.discard(entry, f"failed to load: {exc}")
        lock = self.lock_path(key)
        with contextlib.ExitStack() as held:
            if not held.enter_context(locks.exclusive(lock, wait=False)):
                # another process converts this key (a background conversion, a second run):
                # waiting for it costs at most what converting here would
                _logger.warning("waiting for another depthcli process converting %s for %s",
                                key.model, key.runtime)
                held.enter_context(locks.exclusive(lock))
            found = self.lookup(key)  # published while this process waited, or just before
            built = found is None
            if found is None:
                _logger.info("converting %s for %s (once; cached in %s)", key.model,
                             key.runtime, self.root)
                found = self.build(key, build)
        return load(found), built

    @property
    def lock_dir(self) -> Path:
        """Where the cache's locks live (backends/locks.py)."""
        return self.root / ".locks"

    def lock_path(self, key: CacheKey) -> Path:
        """The lock a process holds while it builds `key`."""
        return self.lock_dir / f"{key.runtime}-{key.digest}.lock"


def model_cache_key(model: DepthAnything, runtime: str, precision: str, shapes: str,
                    versions: Mapping[str, str], **extra: str) -> CacheKey:
    """The key of a converted DepthAnything `model`: weights digest, head settings the
    state_dict does not hold (taps, output kind, max depth), and the producing versions."""
    import torch

    from ..version import __version__

    spec = model.spec
    max_depth = float(model.max_depth)
    head = {"layers": ",".join(map(str, spec.layers)), "output": spec.output,
            "max_depth": f"{max_depth:g}", "family": spec.family}
    return CacheKey(runtime=runtime, model=spec.name, weights=state_dict_digest(model),
                    precision=precision, shapes=shapes,
                    versions={**versions, "torch": torch.__version__, "depthcli": __version__},
                    extra={**head, **extra})
