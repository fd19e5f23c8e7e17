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

from .layouts import official_names


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
    # DA3 (golden/README.md): without this the camera's FoV ReLU is 0 for nearly every input.
    if key == "model.cam_dec.fc_fov.0.weight":
        v = v * 0.1
    elif key == "model.cam_dec.fc_fov.0.bias":
        v = v + 1.0
    return torch.from_numpy(v.astype(np.float32))


def recipe_entry(key: str, shape: tuple[int, ...], salt: str = "") -> torch.Tensor:
    """`recipe_tensor`, except Video Depth Anything's position tables, which the official
    checkpoints store with their sinusoidal values (golden/README.md)."""
    if key.endswith("pos_encoder.pe"):
        from ..models.temporal import sinusoidal_table

        return sinusoidal_table(shape[-1], shape[-2])
    return recipe_tensor(key, shape, salt)


def load_recipe_weights(model: torch.nn.Module) -> None:
    """Fill `model` with the recipe weights (seeded by the official checkpoint key names)."""
    names = official_names(model)
    sd = {k: recipe_entry(names[k], tuple(v.shape)) for k, v in model.state_dict().items()}
    model.load_state_dict(sd, strict=True)


def recipe_state_dict(keys: Iterable[tuple[str, Iterable[int]]],
                      salt: str = "") -> dict[str, torch.Tensor]:
    """An official-layout state_dict from [(key, shape), ...] in the official file's order."""
    return {k: recipe_entry(k, tuple(s), salt) for k, s in keys}
