"""What `predict` checks before any model loads, and before torch is even imported.

A mistake should cost a second, not a model load: inputs that do not exist, formats that
cannot be written for the inputs named, a model that cannot take them, a runtime that is not
installed and a `--weights` file that is missing or not a checkpoint are usage errors (exit 2)
at once. The checkpoints of the models the run will need are then looked up (and downloaded
when missing and the hub is reachable) before torch is imported, so that an offline first
run answers with its one line in about a second.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import DepthCliError
from ..models.registry import ModelSpec, get_spec, is_hf_repo_name


def explicit_kinds(inputs: tuple[str, ...]) -> tuple[set[str], bool]:
    """(kinds of the files named one by one, whether other arguments are walked or expanded).

    A named path that does not exist (and is not a glob pattern) is a usage error.
    """
    from ..io.kinds import has_magic, kind_of

    kinds: set[str] = set()
    open_ended = False
    for arg in inputs:
        p = Path(arg)
        if p.is_dir() or (p.suffix.lower() == ".txt" and p.is_file()):
            open_ended = True
        elif p.exists() or p.is_symlink():
            kinds.add(kind_of(p) or "image")
        elif has_magic(arg):
            open_ended = True
        elif _is_pattern(arg):  # an image sequence: a clip
            kinds.add("video")
        else:
            raise click.BadParameter(f"{arg}: no such file or folder", param_hint="'INPUTS...'")
    return kinds, open_ended


def _is_pattern(arg: str) -> bool:
    from ..io.seqnames import is_pattern

    return is_pattern(arg)


def check_fit(fmts: tuple[str, ...], image_spec: ModelSpec, kinds: set[str],
              open_ended: bool) -> None:
    """Formats and model against the kinds of input named (only when every input is known)."""
    from ..outputs import FORMATS, VIDEO_FORMATS

    if open_ended or not kinds:
        return
    if kinds == {"video"} and not any(FORMATS[f].video for f in fmts):
        raise click.BadParameter(
            f"none of the formats {', '.join(fmts)} can be written for a video (use "
            f"{', '.join(VIDEO_FORMATS)})", param_hint="--format")
    if kinds == {"image"} and all(FORMATS[f].kind == "video" for f in fmts):
        raise click.BadParameter(
            f"{', '.join(fmts)} can be written for videos and image sequences only; name a "
            "sequence as plate.####.png (or a folder with --sequence)", param_hint="--format")
    if kinds == {"image"} and getattr(image_spec, "temporal", False):
        raise click.BadParameter(
            f"model {image_spec.name} needs a video (it is a temporal video model); use an "
            "image model such as da2-small for images", param_hint="--model")


def check_backend(backend: str, device: str) -> None:
    """An explicit runtime must be installed (found, not imported) and fit an explicit device."""
    from ..backends import RUNTIME_BACKENDS, BackendError, resolve_backend

    if backend not in RUNTIME_BACKENDS:
        return
    try:
        resolve_backend(backend, device if device != "auto" else "cpu")
    except BackendError as exc:
        msg = str(exc).split(": ", 1)[-1] if str(exc).startswith("--backend") else str(exc)
        raise click.BadParameter(msg, param_hint="--backend") from None


def check_int8(precision: str, backend: str, device: str, calibrate: Path | None,
               engine: str = "local") -> None:
    """--precision int8 must fit the backend and device, and --calibrate name readable images,
    before any model loads; --calibrate without int8 is a usage error."""
    if precision != "int8":
        if calibrate is not None:
            raise click.BadParameter("is for --precision int8", param_hint="--calibrate")
        return
    from ..backends import BackendError
    from ..backends import check_int8 as backend_int8

    try:
        backend_int8(backend, device if device != "auto" else _auto_device())
    except BackendError as exc:
        raise click.BadParameter(str(exc).removeprefix("--precision int8 "),
                                 param_hint="--precision int8") from None
    if calibrate is None:
        return
    if engine == "ray":
        raise click.BadParameter("is read on this machine; with --engine ray the built-in "
                                 "set is used (leave --calibrate out)", param_hint="--calibrate")
    from ..backends.calibration import CalibrationError, check_readable, from_folder

    try:
        check_readable(from_folder(calibrate))
    except CalibrationError as exc:
        raise click.BadParameter(str(exc), param_hint="--calibrate") from None


def _auto_device() -> str:
    """What --device auto is, without importing torch: cuda where a GPU driver is loaded."""
    from .common import _surely_absent

    return "cpu" if _surely_absent("cuda") else "cuda"


def check_weights_file(weights: Path | None) -> None:
    """`--weights` must be a readable file that looks like a checkpoint (from its first bytes)."""
    if weights is None:
        return
    from ..checkpoints.weights import ACCEPTED, checkpoint_kind

    if not weights.exists():
        raise click.BadParameter(f"{weights}: weights file not found", param_hint="--weights")
    if weights.is_dir():  # a Depth Anything 3 folder: model.safetensors beside its config.json
        if not (weights / "model.safetensors").is_file():
            raise click.BadParameter(f"{weights}: a folder without model.safetensors; --weights "
                                     f"takes {ACCEPTED}", param_hint="--weights")
        weights = weights / "model.safetensors"
    if not weights.is_file():
        raise click.BadParameter(f"{weights}: not a file", param_hint="--weights")
    try:
        kind = checkpoint_kind(weights)
    except DepthCliError as exc:
        raise click.BadParameter(str(exc), param_hint="--weights") from None
    if kind == "other":
        raise click.BadParameter(f"{weights}: not a checkpoint (neither a PyTorch nor a "
                                 f"safetensors file); --weights takes {ACCEPTED}",
                                 param_hint="--weights")


def first_kind(inputs: tuple[str, ...], out_dir: Path, sequence: bool = False) -> str | None:
    """The kind of the first input that walking the open-ended arguments would yield."""
    from ..io.images import Discovery, discover, has_magic
    from ..io.manifest import OutputFolders

    walked = [a for a in inputs if Path(a).is_dir() or has_magic(a) or a.lower().endswith(".txt")]
    state = Discovery(exclude=OutputFolders(out_dir), quiet=True, sequence=sequence)
    item = next(iter(discover(walked, state)), None)
    return item.kind if item is not None else None


def resolve_checkpoints(needed: list[str], weights: Path | None) -> dict[str, Path]:
    """Checkpoint paths of the registry models `needed`, found or downloaded, without torch.

    An offline machine without the file gets the weights module's one-line error (exit 1).
    """
    from ..checkpoints.weights import resolve

    out: dict[str, Path] = {}
    if weights is not None:
        return out
    for name in dict.fromkeys(needed):
        spec = get_spec(name)
        try:
            out[name] = resolve(spec, None, prefer_hf=is_hf_repo_name(name))
        except DepthCliError as exc:
            raise click.ClickException(str(exc)) from None
    return out


def needed_models(inputs: tuple[str, ...], out_dir: Path, kinds: set[str], open_ended: bool,
                  image_model: str, video_model: str, sequence: bool = False) -> list[str]:
    """Models the run will load first: by the kinds named, else by the first input found."""
    found = set(kinds)
    if open_ended and not found:
        k = first_kind(inputs, out_dir, sequence)
        if k is not None:
            found.add(k)
    image_ok = not getattr(get_spec(image_model), "temporal", False)  # else refused per image
    return ([image_model] if "image" in found and image_ok else []) + (
        [video_model] if "video" in found else [])
