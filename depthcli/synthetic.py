"""The synthetic-weight recipe of ../shared/golden/README.md: realistic random weights anyone can
rebuild exactly, seeded by official checkpoint key names.

Tests, the benchmark and `depthcli bench`'s default weights all use it; the golden outputs of
the official code were made with it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np
import torch

from .layouts import is_swiglu, official_name


def recipe_tensor(key: str, shape: tuple[int, ...], salt: str = "") -> torch.Tensor:
    """One tensor of the golden synthetic-weight recipe (../shared/golden/README.md).

    A non-empty `salt` gives other, equally realistic weights (tests use it).
    """
    z = np.random.default_rng(zlib.crc32((salt + key).encode())).standard_normal(
        tuple(shape), dtype=np.float64)
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


def load_recipe_weights(model: torch.nn.Module) -> None:
    """Fill `model` with the recipe weights (seeded by the official checkpoint key names)."""
    sw = is_swiglu(model)
    sd = {k: recipe_tensor(official_name(k, sw), tuple(v.shape))
          for k, v in model.state_dict().items()}
    model.load_state_dict(sd, strict=True)


def recipe_state_dict(keys: Iterable[tuple[str, Iterable[int]]], salt: str = "") -> dict[str, torch.Tensor]:
    """An official-layout state_dict from [(key, shape), ...] in the official file's order."""
    return {k: recipe_tensor(k, tuple(s), salt) for k, s in keys}
