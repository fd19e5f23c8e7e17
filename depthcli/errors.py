"""Exception types: every user-facing failure is a DepthCliError with a one-line message."""

from __future__ import annotations


class DepthCliError(Exception):
    """Base class; the CLI prints the message on one line and exits non-zero."""


class UnknownModelError(DepthCliError):
    """The model name is neither a registry name nor a known hub repo id."""


class WeightsError(DepthCliError):
    """A checkpoint cannot be found, read, trusted or fitted to the chosen model."""


class InputError(DepthCliError):
    """One input (image, video, list file) cannot be processed; the rest of the run goes on."""


def reason(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name): the text of an error line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def strip_path(text: str, path: str) -> str:
    """'PATH: why' → 'why' (an error line adds the path itself)."""
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


class UnsafeOutputError(InputError):
    """An input's output would leave the output folder (a symbolic link on the way); refused."""


class DiskFullError(DepthCliError):
    """The output file system is full (ENOSPC) or over quota (EDQUOT): the run stops at once.

    Every later write would fail the same way, so one error line replaces one per remaining
    input; finished outputs are kept and `--skip-existing` resumes after space is freed.
    """
