"""The synthetic-weight recipe of ../shared/golden/README.md, as tests use it."""

from __future__ import annotations

import torch

from depthcli.bench import recipe_tensor


def recipe_state_dict(keys: list, seed_salt: str = "") -> dict[str, torch.Tensor]:
    """An official-layout state_dict from [[key, shape], ...] (ordered as the official file)."""
    return {k: recipe_tensor(k, tuple(s), seed_salt) for k, s in keys}
