"""Find, trust-check, load and convert checkpoints to the internal layout.

Resolution order: an explicit file → a weights folder holding the official file name
($DEPTHCLI_WEIGHTS_DIR, else the per-user folder of `depthcli.checkpoints.userdirs`, e.g.
~/.local/share/depthcli/checkpoints/weights, plus a source checkout's `weights/`) → the Hugging Face hub (its cache; HF_HUB_OFFLINE respected).
Only `torch.load(weights_only=True)` and safetensors are used: a pickle that carries code is
refused, never executed.

Without network: before asking the hub, a TCP connection to its endpoint (or to the proxy the
environment names) is tried for at most HUB_PROBE_TIMEOUT_S seconds, DNS included; when it
fails the run answers at once with the one actionable error line instead of spending ~30 s in
the hub client's retries. When it connects, the real download runs as before (its retries
included), with the hub's log lines printed once (its own handler, not also ours).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import WeightsError
from ..models.registry import ENCODERS, LOCAL_ALIASES, MODEL_SPECS, ModelSpec

if TYPE_CHECKING:
    import torch

    from .layouts import StateDict

_logger = logging.getLogger(__name__)

HF_FILE = "model.safetensors"
# Seconds to wait for a TCP connection to the hub (or proxy) before calling the hub offline;
# $DEPTHCLI_HUB_PROBE_TIMEOUT overrides it (0 skips the probe).
HUB_PROBE_TIMEOUT_S = 3.0


def weights_dir() -> Path:
    """The folder to put checkpoints in: $DEPTHCLI_WEIGHTS_DIR, else the per-user folder."""
    from .userdirs import weights_dirs

    return weights_dirs()[0]


def local_candidates(spec: ModelSpec) -> list[Path]:
    """Files in the weights folders that would be taken for `spec`, in order of preference."""
    from .userdirs import weights_dirs

    if spec.family == "v3":  # `model.safetensors` is too generic: the repo's folder or name
        repo = spec.hub_repo.split("/")[-1] or spec.name
        return [p for root in weights_dirs() for p in (
            root / repo / HF_FILE, root / f"{repo}.safetensors", root / f"{spec.name}.safetensors")]
    names = [spec.hub_file, *LOCAL_ALIASES.get(spec.name, ())]
    if spec.hub_file == "pytorch_model.bin":  # too generic a name for a shared folder
        names = list(LOCAL_ALIASES.get(spec.name, ())) + [f"{spec.hub_repo.split('/')[-1]}.bin"]
    return [root / n for root in weights_dirs() for n in names]


def cached_path(spec: ModelSpec, prefer_hf: bool = False) -> Path | None:
    """A checkpoint for `spec` already on disk (weights folder or hub cache), without network."""
    for path in local_candidates(spec):
        if path.is_file():
            return path
    order = [(spec.hf_repo, HF_FILE), (spec.hub_repo, spec.hub_file)]
    if not prefer_hf:
        order.reverse()
    for repo, fname in order:
        hit = _hub_cached(repo, fname) if repo else None
        if hit is not None:
            return hit
    return None


def _hub_cached(repo: str, filename: str) -> Path | None:
    """The hub cache's copy of `repo/filename` at revision `main`, or None.

    Reads the cache layout that `huggingface_hub.try_to_load_from_cache` reads
    (`<cache>/models--org--name/refs/main` names `snapshots/<rev>/<file>`) without importing the
    hub client, which costs ~0.3 s of `depthcli models`' start-up.
    """
    from huggingface_hub.constants import HF_HUB_CACHE

    folder = Path(HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))
    try:
        rev = (folder / "refs" / "main").read_text().strip()
    except OSError:
        return None
    path = folder / "snapshots" / rev / filename
    return path if path.is_file() else None


def resolve(spec: ModelSpec, weights: str | os.PathLike[str] | None = None,
            prefer_hf: bool = False) -> Path:
    """Return a local checkpoint path for `spec`, downloading from the hub if needed."""
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            return _from_folder(spec, path)
        if not path.is_file():
            raise WeightsError(f"{path}: weights file not found")
        return path
    found = cached_path(spec, prefer_hf=prefer_hf)
    if found is not None:
        _logger.info("using cached weights %s", found)
        return found
    repo, fname = (spec.hf_repo, HF_FILE) if prefer_hf else (spec.hub_repo, spec.hub_file)
    from huggingface_hub import constants  # the download client (~0.3 s) only when it can run

    local_name = fname if prefer_hf else spec.hub_file
    if spec.family == "v3":
        local_name = str(local_candidates(spec)[0].relative_to(weights_dir()))
    if not repo:
        raise WeightsError(f"{spec.name} is a test configuration with no published weights; "
                           "pass --weights FILE")

    def offline(why: str) -> WeightsError:
        return WeightsError(
            f"weights for {spec.name} are not available offline ({why}): {repo}/{fname} is not "
            f"in the Hugging Face cache; download it on a connected machine ('depthcli download "
            f"{spec.name}'), or put {local_name} in "
            f"{weights_dir()} (or set DEPTHCLI_WEIGHTS_DIR), or pass --weights FILE"
        )

    if constants.HF_HUB_OFFLINE:  # not in the cache (cached_path above): nothing to ask
        raise offline("HF_HUB_OFFLINE is set")
    why = hub_unreachable(constants.ENDPOINT, _probe_timeout())
    if why is not None:
        raise offline(why)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        _logger.info("downloading %s/%s", repo, fname)
        with _hub_logs_once():
            return Path(hf_hub_download(repo_id=repo, filename=fname))
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub cannot be reached"
        raise offline(why) from exc
    except Exception as exc:  # network, auth, missing file on the hub
        raise WeightsError(
            f"cannot download {repo}/{fname}: {type(exc).__name__}: {str(exc).splitlines()[0]}; "
            f"put the file in {weights_dir()} or pass --weights FILE"
        ) from exc


def _from_folder(spec: ModelSpec, folder: Path) -> Path:
    """A hub-style folder (`model.safetensors` + `config.json`, as `save_pretrained` writes):
    the file, after checking that config.json's `model_name` (DA3) is this model's."""
    path = folder / HF_FILE
    if not path.is_file():
        raise WeightsError(f"{folder}: a folder without {HF_FILE}; pass the checkpoint file")
    cfg = folder / "config.json"
    if spec.da3 is not None and cfg.is_file():
        import json

        try:
            name = json.loads(cfg.read_text()).get("model_name")
        except (ValueError, AttributeError, OSError):
            name = None
        if isinstance(name, str) and name != spec.da3.config:
            other = next((n for n, s in MODEL_SPECS.items()
                          if s.da3 is not None and s.da3.config == name), name)
            raise WeightsError(f"{folder}: config.json says model_name {name!r} ({other}), "
                               f"not {spec.da3.config!r} ({spec.name}); use --model {other}")
    return path


def _probe_timeout() -> float:
    try:
        return float(os.environ.get("DEPTHCLI_HUB_PROBE_TIMEOUT", HUB_PROBE_TIMEOUT_S))
    except ValueError:
        return HUB_PROBE_TIMEOUT_S


def _probe_target(endpoint: str) -> tuple[str, int] | None:
    """(host, port) a download from `endpoint` connects to first: the proxy when one applies."""
    url = urllib.parse.urlsplit(endpoint)
    if not url.hostname:
        return None
    scheme = url.scheme or "https"
    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(url.hostname):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if p.hostname:
            return p.hostname, p.port or (443 if p.scheme == "https" else 80)
    return url.hostname, url.port or (443 if scheme == "https" else 80)


def hub_unreachable(endpoint: str, timeout: float) -> str | None:
    """None if a TCP connection to the hub (or its proxy) opens within `timeout` s, else why.

    Runs in a daemon thread so that a slow DNS lookup (which has no timeout of its own) is
    bounded too. `timeout <= 0` skips the check.
    """
    target = _probe_target(endpoint)
    if timeout <= 0 or target is None:
        return None
    result: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection(target, timeout=timeout):
                result.append(None)
        except OSError as exc:
            result.append(exc.strerror or type(exc).__name__)

    t = threading.Thread(target=connect, name="depthcli-hub-probe", daemon=True)
    t.start()
    t.join(timeout + 0.5)
    where = f"{target[0]}:{target[1]}"
    if not result:
        return f"no answer from {where} within {timeout:g} s"
    return None if result[0] is None else f"{where}: {result[0].lower()}"


@contextlib.contextmanager
def _hub_logs_once() -> Iterator[None]:
    """The hub logger has its own stderr handler: keep its records from reaching ours too."""
    log = logging.getLogger("huggingface_hub")
    old = log.propagate
    log.propagate = not log.handlers
    try:
        yield
    finally:
        log.propagate = old


ACCEPTED = ("an official .pth/.bin (PyTorch state_dict) or a transformers .safetensors file")


def checkpoint_kind(path: Path) -> str:
    """'zip' (torch.save), 'pickle' (legacy torch.save), 'safetensors', or 'other', from the
    first bytes: so that a text file or an image is named as such, not as a KeyError."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32:
        return "safetensors"
    return "other"


def read_state_dict(path: Path) -> StateDict:
    """Read tensors from .safetensors or a torch pickle restricted to plain tensors."""
    import torch

    kind = checkpoint_kind(path)
    if kind == "other":
        raise WeightsError(f"{path}: not a checkpoint (neither a PyTorch nor a safetensors "
                           f"file); --weights takes {ACCEPTED}")
    if kind == "safetensors" or path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: refused: the pickle references code or objects outside the tensor "
            "allow-list (weights_only=True); only plain state_dicts are loaded"
        ) from exc
    except Exception as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: damaged or truncated checkpoint ({why.split('. ')[0]}); "
                           f"download it again; --weights takes {ACCEPTED}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state_dict of tensors")
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def describe(sd: Mapping[str, torch.Tensor]) -> str:
    """Name the registry models a (converted) checkpoint looks like, from its shapes."""
    pe = sd.get("encoder.vit.pos_embed")
    if pe is None:
        return "not a Depth Anything checkpoint (no DINOv2 encoder keys)"
    dim = int(pe.shape[-1])
    enc = next((e for e in ENCODERS.values() if e.embed_dim == dim), None)
    if enc is None:
        return f"an unknown encoder with width {dim}"
    depth = len({k.split(".")[3] for k in sd if k.startswith("encoder.vit.blocks.")})
    temporal = any(".motion_modules." in k for k in sd)
    any_view = "encoder.camera_token" in sd
    da3 = any_view or "head.scratch.sky_output_conv2.0.weight" in sd
    names = [n for n, s in MODEL_SPECS.items()
             if s.encoder.name == enc.name and s.temporal == temporal and s.listed
             and (s.da3 is not None) == da3 and (not da3 or s.da3.any_view == any_view)]  # type: ignore[union-attr]
    kind = "a Video Depth Anything (temporal) " if temporal else "a "
    if da3:
        kind = f"a Depth Anything 3 {'any-view' if any_view else 'monocular/metric'} "
    return (
        f"{kind}ViT-{enc.name[3:].upper()} model ({dim} wide, {depth} blocks): one of "
        f"{', '.join(names) or 'no registry model'}"
    )


def load_into(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict-load a converted state_dict; refuse with what the checkpoint looks like instead."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
        detail = []
        if bad_shape:
            k = bad_shape[0]
            detail.append(f"{len(bad_shape)} shape mismatches (e.g. {k}: "
                          f"{tuple(sd[k].shape)} vs {tuple(own[k].shape)})")
        if missing:
            detail.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise WeightsError(
            f"{source}: does not fit model {name}: {'; '.join(detail)}; it looks like {describe(sd)}"
        )
    model.load_state_dict(dict(sd), strict=True)
