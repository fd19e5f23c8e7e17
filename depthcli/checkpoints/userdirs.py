"""Where checkpoints live on this machine, independent of where the package is installed.

After `pip install .` the package sits in site-packages, so a folder "beside the package" is
nowhere a user would look. The default folder follows the platform's convention for per-user
application data (the same rules as `platformdirs.user_data_dir("depthcli")`, without the
dependency):

- Linux and other Unix: `$XDG_DATA_HOME/depthcli/checkpoints/weights` (default `~/.local/share/...`);
- macOS: `~/Library/Application Support/depthcli/checkpoints/weights`;
- Windows: `%LOCALAPPDATA%\\depthcli\\weights`.

`$DEPTHCLI_WEIGHTS_DIR` replaces it. A development install (the package imported from a
source checkout: editable install or PYTHONPATH) also reads the checkout's `weights/`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "depthcli"


def user_data_dir() -> Path:
    """The per-user data folder of depthcli on this platform (it need not exist)."""
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / APP
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / APP
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    base_path = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".local" / "share"
    return base_path / APP


def user_weights_dir() -> Path:
    return user_data_dir() / "weights"


def checkout_weights_dir() -> Path | None:
    """`weights/` of the source checkout the package is imported from, if it is one."""
    root = Path(__file__).resolve().parents[2]
    try:
        if (root / "pyproject.toml").is_file() and (root / "depthcli" / "__init__.py").is_file():
            return root / "weights"
    except OSError:
        return None
    return None


def weights_dirs() -> list[Path]:
    """Folders searched for checkpoints under their official names, in order."""
    env = os.environ.get("DEPTHCLI_WEIGHTS_DIR")
    if env:
        return [Path(env).expanduser()]
    dirs = [user_weights_dir()]
    dev = checkout_weights_dir()
    if dev is not None:
        dirs.append(dev)
    return dirs
