"""The `depthcli` command line: a click group whose commands load on first use.

Each command lives in its own module (`predict`, `models`, `download`, `export`, `bench`); only
the one that runs is imported, and none imports torch before it needs a model, so `--help`,
`models`, `--version`, completion and usage errors answer at once.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any

import click

from ..version import __version__

STARTED = time.perf_counter()  # the summary's wall time counts from here (start-up included)

_COMMANDS = {  # name -> (module, attribute, one-line help shown by `depthcli --help`)
    "predict": ("predict", "predict", "Depth for images, folders, lists, globs and videos."),
    "models": ("models", "models", "List the models: size, licence, kind, weights on disk."),
    "download": ("download", "download", "Download checkpoints for offline use."),
    "export": ("export", "export", "Export a model to ONNX, checked against PyTorch."),
    "bench": ("bench", "bench", "Benchmark speed, memory and accuracy vs the transformers pipeline."),
}


class LazyGroup(click.Group):
    """Imports a command's module only when the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[cmd_name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the table above: `--help` imports no command module."""
        rows = [(name, short) for name, (_, _, short) in _COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        """Ctrl-C anywhere (model loading included) exits 130 without a traceback.

        Native libraries' stderr is filtered first (see native_stderr) so that no C message can
        split one of our lines.
        """
        from .native_stderr import capture_native_stderr

        capture_native_stderr()
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.stderr.flush()
            raise click.exceptions.Exit(130) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Examples:\n\n\b\n  depthcli predict photo.jpg\n"
                    "  depthcli predict photos/ clip.mp4 -o depth -f color,npy\n"
                    "  depthcli models\n  depthcli download da2-small vda-small\n\n"
                    "Shell completion (bash): eval \"$(_DEPTHCLI_COMPLETE=bash_source depthcli)\"")
@click.version_option(__version__, prog_name="depthcli")
def main() -> None:
    """Monocular depth (Depth Anything V1/V2, relative and metric, and Video Depth Anything)
    for images, folders, lists, globs and videos."""
