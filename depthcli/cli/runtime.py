"""The torch stack a model needs: a broken install is one line with its repair, not a traceback.

pip can leave torch and torchvision of different builds (e.g. torch from PyPI, torchvision
from the CPU index when that index was unreachable); importing torchvision then dies with
`operator torchvision::nms does not exist` some sixty lines into a traceback. The commands
that run a model call `require_torch_stack()` once, before the first model import.
"""

from __future__ import annotations

import importlib
import sys

import click

STACK = ("torch", "torchvision", "timm")


def repair_command() -> str:
    return f"{sys.executable} -m pip install --force-reinstall torch torchvision timm"


def require_torch_stack() -> None:
    """Import torch, torchvision and timm; on failure one line naming it and the repair."""
    for name in STACK:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            text = str(exc).strip().splitlines()
            why = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
            hint = ("torch and torchvision do not match" if name == "torchvision"
                    and ("torchvision::" in why or "operator" in why) else
                    f"{name} is missing or broken")
            raise click.ClickException(
                f"cannot import {name} ({why}); {hint}: repair the install with "
                f"`{repair_command()}` (CPU-only wheels: add --index-url "
                "https://download.pytorch.org/whl/cpu)") from None
