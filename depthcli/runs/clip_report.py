"""What a clip's run says about the clip beyond its outputs: an image sequence's numbering and
gaps, the scene cuts found (log line and the `--json` `clips` entry), and each frame's colour
range when the shots have their own (`--scene-cuts`). Plain data in, plain data out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..io import sequence as seq
from ..io.video_decode import VideoInfo
from .scenecuts import shot_of

_logger = logging.getLogger("depthcli.runs.video")


def frame_label(index: int, info: VideoInfo, pts: Sequence[int]) -> int:
    """What a user calls frame `index`: a sequence's frame number, else the index."""
    if isinstance(info, seq.SequenceInfo) and index < len(pts):
        return info.number(pts[index])
    return index


def log_cuts(name: str, cuts: list[int], info: VideoInfo, pts: Sequence[int]) -> None:
    where = ", ".join(str(frame_label(i, info, pts)) for i in cuts[:20])
    more = ", ..." if len(cuts) > 20 else ""
    _logger.info("%s: %d scene cut(s) found%s", name, len(cuts),
                 f", at frame {where}{more}" if cuts else "")


def clip_entry(meta: dict[str, Any], info: VideoInfo,
               pts: Sequence[int]) -> dict[str, object] | None:
    """The clip's entry of the --json summary: numbering and gaps, the cuts found (None: no
    entry: a video file run without --scene-cuts)."""
    row: dict[str, object] = {}
    if isinstance(info, seq.SequenceInfo):
        row.update(info.describe())
    if "cuts" in meta:
        cuts = [int(c) for c in meta["cuts"]]
        row["scene_cuts"] = [{"index": c, "frame": frame_label(c, info, pts)} for c in cuts]
        if "shot_ranges" in meta:
            row["shot_ranges"] = meta["shot_ranges"]
    return row or None


def shot_range(meta: dict[str, Any], index: int) -> tuple[float, float] | None:
    """A frame's own colour range when the shots have theirs (`--scene-cuts`), else None."""
    ranges = meta.get("shot_ranges")
    if not ranges or len(ranges) < 2:
        return None
    lo, hi = ranges[min(shot_of(meta.get("cuts", []), index), len(ranges) - 1)]
    return float(lo), float(hi)
