"""The models of one run: which model serves images and which videos, each loaded on first use."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..engine.core import DepthEngine


def image_model_error(name: str) -> str | None:
    """Why model `name` cannot take images (a video-only model), or None: one reason for
    both engines (`RunModels.for_images`, the Ray actors' `ModelStage`)."""
    from ..models import get_spec

    if getattr(get_spec(name), "temporal", False):
        return (f"model {name} needs a video (it is a temporal video model); "
                "use an image model such as da2-small for images")
    return None


class RunModels:
    """The models of one run, each loaded on first use.

    Images and videos may use different models (by default a per-frame model for images and a
    temporal one for videos); a run with only images never loads the video model.
    """

    def __init__(self, load: Callable[[str], DepthEngine], image_model: str,
                 video_model: str | None = None) -> None:
        self._load = load
        self.names = {"images": image_model, "videos": video_model or image_model}
        self._cache: dict[str, DepthEngine] = {}
        self._lock = threading.Lock()
        self._used: set[str] = set()
        self.load_seconds = 0.0

    @classmethod
    def of(cls, est: DepthEngine) -> RunModels:
        """One already loaded estimator for everything."""
        out = cls(lambda _name: est, est.spec.name)
        out._cache[est.spec.name] = est
        return out

    def _get(self, name: str) -> DepthEngine:
        with self._lock:
            if name not in self._cache:
                t = time.perf_counter()
                self._cache[name] = self._load(name)
                self.load_seconds += time.perf_counter() - t
            return self._cache[name]

    def for_images(self) -> DepthEngine:
        """The image model; InputError (one line per image) if it is a video-only model."""
        name = self.names["images"]
        why = image_model_error(name)
        if why is not None:
            raise InputError(why)
        est = self._get(name)
        self._used.add("images")
        return est

    def for_videos(self) -> DepthEngine:
        est = self._get(self.names["videos"])
        self._used.add("videos")
        return est

    def estimator(self, name: str) -> DepthEngine | None:
        """A loaded estimator, without loading it."""
        return self._cache.get(name)

    def used(self) -> dict[str, str]:
        """Which model ran on what (kinds of input that were processed)."""
        return {k: v for k, v in self.names.items() if k in self._used}
