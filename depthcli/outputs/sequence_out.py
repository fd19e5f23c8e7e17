"""An image sequence's outputs: one file per frame, named with the input's frame numbers.

For a sequence `plate.####.exr` whose output stem is OUT/rel/plate (`runs.paths`), the files
are (`<base>` = OUT/rel/plate_depth, the separator and the digits' width those of the input):

- exr, pfm, npy with `--sequence-npy frames`: `<base>.1001.exr` / `.pfm` / `.npy` (raw values);
- color: `<base>.1001.png`; png16, gray, side: `<base>_<format>.1001.png` (as for images, the
  default format has the plain name);
- npy (default `--sequence-npy stack`): one (T, H, W) stack `<base>.npy`, frames in numbering
  order (gaps are not in it: the `--json` clip entry lists the numbers missing);
- ffv1: one lossless video `<base>.mkv` (`outputs.ffv1`);
- with `--sequence-video`, color, gray, side are H.264 videos instead (`<base>.mp4`,
  `<base>_gray.mp4`, `<base>_side.mp4`), as for a video file.

`NamedFramesWriter` is the video pipeline's frame-folder writer with these names: frames go to
the clip's partial-state folder and move to their final names, file by file, when the clip is
complete (a killed run leaves no partial frame under a final name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io.atomic import publish
from ..io.seqnames import Pattern, stem_and_sep
from ..io.sequence import SequenceInfo
from .formats import FORMATS, OutputOptions
from .frame_files import FrameFiles
from .sinks import FrameOut

PNG_FORMATS = ("png16", "color", "gray", "side")
RAW_SUFFIX = {"exr": ".exr", "pfm": ".pfm", "npy": ".npy"}


@dataclass(frozen=True)
class SequenceNames:
    """The output names of one sequence."""

    base: Path  # OUT/rel/plate_depth
    sep: str
    width: int
    numbers: tuple[int, ...]
    npy_frames: bool = False  # npy: one file per frame instead of one stack
    video: bool = False  # color, gray, side: one H.264 video instead of numbered PNGs

    @classmethod
    def of(cls, info: SequenceInfo, base: Path, npy_frames: bool = False,
           video: bool = False) -> SequenceNames:
        pat = info.pattern
        assert isinstance(pat, Pattern)
        _, sep = stem_and_sep(pat)
        name = base.name if base.name.endswith("_depth") else base.name + "_depth"
        return cls(base.parent / name, sep, pat.width, info.numbers, npy_frames, video)

    def per_frame(self, fmt: str) -> bool:
        if self.video and FORMATS[fmt].video == "mp4":
            return False
        return fmt in PNG_FORMATS or fmt in ("exr", "pfm") or (fmt == "npy" and self.npy_frames)

    def _stem_suffix(self, fmt: str) -> tuple[str, str]:
        if fmt == "color":  # as for images: the default format has the plain name
            return self.base.name, ".png"
        if fmt in PNG_FORMATS:
            return f"{self.base.name}_{fmt}", ".png"
        return self.base.name, RAW_SUFFIX[fmt]

    def file_name(self, fmt: str, number: int) -> str:
        stem, suffix = self._stem_suffix(fmt)
        return f"{stem}{self.sep}{number:0{self.width}d}{suffix}"

    def pattern(self, fmt: str) -> Path:
        """The per-frame output as a pattern (`OUT/plate_depth.####.exr`), for messages."""
        stem, suffix = self._stem_suffix(fmt)
        return self.base.parent / f"{stem}{self.sep}{'#' * max(1, self.width)}{suffix}"

    def files(self, fmt: str) -> list[Path]:
        return [self.base.parent / self.file_name(fmt, n) for n in self.numbers]

    def paths(self, formats: list[str]) -> dict[str, Path]:
        """Format → its output: the pattern of a per-frame format, else the one file."""
        out: dict[str, Path] = {}
        for f in formats:
            if self.per_frame(f):
                out[f] = self.pattern(f)
            elif FORMATS[f].video == "npy":
                out[f] = self.base.parent / (self.base.name + ".npy")
            elif f == "ffv1":
                out[f] = self.base.parent / (self.base.name + ".mkv")
            elif FORMATS[f].video == "mp4":  # --sequence-video
                out[f] = self.base.parent / (self.base.name + (".mp4" if f == "color"
                                                               else f"_{f}.mp4"))
        return out

    def exists(self, fmt: str, path: Path) -> bool:
        """Every file of the output is there (names are final only when complete)."""
        if not self.per_frame(fmt):
            return path.is_file() and path.stat().st_size > 0
        return all(p.is_file() and p.stat().st_size > 0 for p in self.files(fmt))


class NamedFramesWriter(FrameFiles):
    """Per-frame files of one format, named by frame number (from the frame's pts)."""

    def __init__(self, fmt: str, folder: Path, names: SequenceNames, first: int,
                 opts: OutputOptions, vrange: tuple[float, float] | None) -> None:
        super().__init__(fmt, folder, opts, vrange)
        self.names, self.first = names, first

    def file_name(self, it: FrameOut) -> str:
        return self.names.file_name(self.name, self.first + it.pts)

    def state(self) -> dict[str, Any]:
        return {"names": sorted(p.name for p in self.folder.iterdir())}

    def stale(self, path: Path, state: dict[str, Any]) -> bool:
        return path.name not in set(state.get("names", []))

    def publish(self, dst: Path) -> None:
        """Every frame file to its final name beside `dst` (the output's pattern)."""
        publish_frames(self.folder, dst.parent)


def publish_frames(folder: Path, dst_folder: Path) -> list[Path]:
    """Move finished frame files to their final names (also a partial folder found again after
    a resume), then remove the emptied folder."""
    out = []
    for p in sorted(folder.iterdir()):
        dst = dst_folder / p.name
        publish(p, dst)
        out.append(dst)
    folder.rmdir()
    return out


def listed_outputs(src: Path, base: Path, formats: list[str], npy_frames: bool,
                   video: bool = False) -> list[Path]:
    """Every file a sequence's run would write, from a listing alone (no frame decoded): for
    the check that nothing but our own outputs is replaced (`--no-clobber`)."""
    from ..io.seqnames import frames_of, parse_pattern

    pat = parse_pattern(str(src))
    if pat is None:
        return []
    numbers = tuple(n for n, _ in frames_of(pat))
    _, sep = stem_and_sep(pat)
    name = base.name if base.name.endswith("_depth") else base.name + "_depth"
    names = SequenceNames(base.parent / name, sep, pat.width, numbers, npy_frames, video)
    out: list[Path] = []
    for f, p in names.paths([f for f in formats if FORMATS[f].video]).items():
        out += names.files(f) if names.per_frame(f) else [p]
    return out
