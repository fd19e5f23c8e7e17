"""How to build a `DepthEngine` elsewhere (a Ray actor): names and a checkpoint path, no weights.

A spec is small, picklable and torch-free until `build()`: the driver ships it to every actor,
and the read tasks take the engine's preprocessing from it without loading a model
(`engine_preprocess`, the rule the engine itself applies).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .transforms import Da3Preprocess, Preprocess, engine_preprocess

if TYPE_CHECKING:
    from .core import DepthEngine


@dataclass(frozen=True)
class EngineSpec:
    """How to build the model on an actor: names and a resolved checkpoint path, never weights.

    The driver resolves `weights` (a file, the cache, or a download) once (`resolved`), so every
    actor loads the very checkpoint the driver saw; the path must be readable on every node
    (shared filesystem, or the same cache path on each).
    """

    model: str
    weights: str | None = None
    max_depth: float | None = None
    device: str = "auto"
    precision: str = "auto"
    input_size: int | None = None
    compile: bool = False
    channels_last: bool = False
    threads: int | None = None
    backend: str = "auto"
    output_size: str = "input"  # "network": the network-size maps (--output-size)
    # --focal-px / --fov-deg / --cx / --cy as (name, value) pairs: da3-metric-large's metres
    camera: tuple[tuple[str, float], ...] = ()

    @staticmethod
    def camera_pairs(camera: dict[str, float | None] | None) -> tuple[tuple[str, float], ...]:
        """The camera options given (None values left out) as the spec's hashable pairs."""
        return tuple(sorted((k, float(v)) for k, v in (camera or {}).items() if v is not None))

    def resolved(self, weights: str | os.PathLike[str] | None = None) -> EngineSpec:
        """The spec with its checkpoint resolved here (`weights`, the cache, or a download).

        Raises DepthCliError when the checkpoint cannot be had."""
        from ..checkpoints.weights import resolve
        from ..models.registry import get_spec, is_hf_repo_name

        given = weights if weights is not None else self.weights
        path = resolve(get_spec(self.model), given, prefer_hf=is_hf_repo_name(self.model))
        return replace(self, weights=str(Path(path).resolve()))

    def build(self) -> DepthEngine:
        """The actor's engine (torch threads set first: Ray gives actors 1 by default)."""
        from .core import DepthEngine
        from .device import set_threads

        if self.threads:
            set_threads(self.threads)
        return DepthEngine.from_name(
            self.model, weights=self.weights, max_depth=self.max_depth, device=self.device,
            precision=self.precision, input_size=self.input_size, compile=self.compile,
            channels_last=self.channels_last, backend=self.backend,
            output_size=self.output_size, camera=dict(self.camera),
        )

    def preprocess(self) -> Preprocess | Da3Preprocess:
        """The preprocessing `build()`'s engine will use, decided without loading a model.

        It depends on the precision, hence on the device: place the spec (`on`) first."""
        from ..models.registry import get_spec

        return engine_preprocess(get_spec(self.model), self.input_size, self.precision,
                                 self.device.split(":")[0])

    def on(self, device: str, threads: int | None) -> EngineSpec:
        """The same model placed on `device` with `threads` torch threads (unless set)."""
        return replace(self, device=device, threads=self.threads or threads)
