"""The synthetic-weight recipe of ../shared/golden/README.md, and small helpers for tests."""

from __future__ import annotations

import zlib

import numpy as np
import torch


def recipe_tensor(key: str, shape: list[int] | tuple[int, ...], seed_salt: str = "") -> torch.Tensor:
    """One tensor of the golden recipe (salt != "" gives other, equally realistic weights)."""
    z = np.random.default_rng(zlib.crc32((seed_salt + key).encode())).standard_normal(
        tuple(shape), dtype=np.float64
    )
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "gamma" or (leaf == "weight" and len(shape) == 1):
        v = 1.0 + 0.05 * z
    elif leaf == "bias":
        v = 0.05 * z
    elif leaf == "weight" and len(shape) >= 2:
        v = z / np.sqrt(np.prod(shape[1:]))
    else:
        v = 0.02 * z
    if key.endswith("scratch.output_conv2.2.bias"):
        v = v + 1.0
    return torch.from_numpy(v.astype(np.float32))


def recipe_state_dict(keys: list, seed_salt: str = "") -> dict[str, torch.Tensor]:
    """An official-layout state_dict from [[key, shape], ...] (ordered as the official file)."""
    return {k: recipe_tensor(k, s, seed_salt) for k, s in keys}
