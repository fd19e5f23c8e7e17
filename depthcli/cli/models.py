"""`depthcli models`: the registry as a table or JSON; never imports torch."""

from __future__ import annotations

import json
import os

import click

from ..engine.precision import precision_note
from ..models.registry import (
    DEFAULT_MODEL,
    DEFAULT_VIDEO_MODEL,
    MODEL_SPECS,
    ModelSpec,
    list_models,
)


def _output(s: ModelSpec) -> str:
    """'relative inverse depth', 'relative depth', 'metric (0-20 m)', 'metric depth (f/300)'."""
    if s.output == "metric":
        return f"metric (0-{s.max_depth:g} m)" if s.max_depth else "metric depth (f/300)"
    return "relative inverse depth" if s.near_is_large else "relative depth"


@click.command(epilog="\b\nExamples:\n  depthcli models\n  depthcli models --json")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def models(as_json: bool) -> None:
    """List the models: size, licence, kind, output, and whether weights are on disk."""
    from ..checkpoints.weights import cached_path

    rows = []
    for name in list_models():
        s = MODEL_SPECS[name]
        path = cached_path(s)
        rows.append({
            "name": name, "kind": "video" if getattr(s, "temporal", False) else "image",
            "params_m": s.params_m, "encoder": s.encoder.name,
            "output": _output(s), "quantity": s.quantity,
            "licence": s.licence, "repo": s.hub_repo, "file": s.hub_file,
            "hf_repo": s.hf_repo or None, "cached": path is not None,
            "path": str(path) if path else None,
            "default": name in (DEFAULT_MODEL, DEFAULT_VIDEO_MODEL),
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    lic = max(len(str(r["licence"])) for r in rows) + 2
    click.echo(f"{'name':<27}{'kind':<7}{'params':>8}  {'output':<24}{'licence':<{lic}}cached")
    for r in rows:
        star = "*" if r["default"] else " "
        click.echo(f"{str(r['name']) + star:<27}{r['kind']:<7}{r['params_m']:>7.1f}M  "
                   f"{r['output']:<24}{str(r['licence']):<{lic}}{'yes' if r['cached'] else 'no'}")
    click.echo(f"* default ({DEFAULT_MODEL} for images, {DEFAULT_VIDEO_MODEL} for videos). "
               "Weights: --weights FILE, a weights folder (official file names), or the "
               "Hugging Face hub.")
    click.echo("Weights folders: " + "; ".join(_folders()))
    click.echo(precision_note())


def _folders() -> list[str]:
    """The weights folders searched, the first being where to put files."""
    from ..checkpoints.userdirs import checkout_weights_dir, weights_dirs

    out = []
    for i, d in enumerate(weights_dirs()):
        why = ("$DEPTHCLI_WEIGHTS_DIR" if os.environ.get("DEPTHCLI_WEIGHTS_DIR")
               else "this checkout" if d == checkout_weights_dir() else "per user")
        out.append(f"{d} ({why}{', put files here' if i == 0 else ''})")
    return out
