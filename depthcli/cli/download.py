"""`depthcli download`: fetch checkpoints into the Hugging Face cache for offline use."""

from __future__ import annotations

import sys

import click

from ..errors import DepthCliError
from .common import spec_or_usage


@click.command(epilog="\b\nExamples:\n  depthcli download da2-small vda-small\n"
                      "  depthcli download da2-small --hf     # the transformers safetensors\n"
                      "  HF_HUB_OFFLINE=1 depthcli predict photo.jpg   # later, offline")
@click.argument("names", nargs=-1, required=True)
@click.option("--hf", is_flag=True, help="Fetch the transformers (-hf) safetensors instead.")
def download(names: tuple[str, ...], hf: bool) -> None:
    """Download checkpoints (registry names or hub repo ids) into the Hugging Face cache."""
    from ..checkpoints.weights import resolve

    failed = 0
    for name in names:
        spec = spec_or_usage(name, "NAMES")
        try:
            path = resolve(spec, None, prefer_hf=hf)
            click.echo(f"{spec.name}: {path}")
        except DepthCliError as exc:
            failed += 1
            click.echo(f"error: {exc}", err=True)
    if failed:
        sys.exit(1)
