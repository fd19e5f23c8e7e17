"""One run's plan: inputs -> jobs, each with its output stem and the files still to write.

The one planner of both engines (the local run, `runs.local`, and the Ray driver,
`runs.ray`), so that names, `--skip-existing` and `--no-clobber` decisions, confinement
refusals and their error lines are the same by construction. It runs in discovery order
(which `OutputMapper` relies on for reruns to map the same way) and reports what it decides
on its own (a refused, skipped or protected input) into the run's tally.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import outputs
from ..errors import DepthCliError, strip_path
from ..io import images
from ..io.images import Discovery, InputItem
from ..io.manifest import OutputFolders
from ..io.seqnames import is_pattern
from ..outputs.sequence_out import listed_outputs
from .options import PredictOptions
from .paths import OutputMapper, foreign_files, output_exists, overlaps
from .tally import Tally

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One input to process: where its outputs go and which of them are still to be made."""

    idx: int  # its place in discovery order (the Ray driver's row key)
    item: InputItem
    base: Path  # the output stem under -o (`OutputMapper`)
    # format -> file still to write (--skip-existing leaves out those present); for an image
    # sequence, frame number -> file
    paths: dict[str, Path]

    @property
    def src(self) -> Path:
        return self.item.src

    @property
    def kind(self) -> str:
        return self.item.kind


class Planner:
    """Discovery -> jobs for one run, excluding `-o`'s own files (the run's journal)."""

    def __init__(self, opts: PredictOptions, run: Tally) -> None:
        if run.journal is None:
            raise ValueError("a planned run keeps an output journal")
        self.opts, self.run = opts, run
        self.discovery = Discovery(exclude=OutputFolders(opts.out_dir, run.journal),
                                   sequence=opts.sequence)
        tag = "_depth" if overlaps(opts.out_dir, opts.inputs) else ""
        self.mapper = OutputMapper(opts.out_dir, outputs.output_suffixes(opts.output.formats), tag)

    def jobs(self) -> Iterator[Job]:
        """The jobs in discovery order; stops when the run is stopped (disk full)."""
        opts, run = self.opts, self.run
        for idx, item in enumerate(images.discover(opts.inputs, self.discovery)):
            if run.full.is_set():
                return
            try:
                base = self.mapper.base(item)
            except DepthCliError as exc:  # its output would leave -o: refused, the run goes on
                run.fail(str(item.src), strip_path(str(exc), str(item.src)))
                run.progress(1)
                continue
            paths = self._paths(item, base)
            if opts.skip_existing:
                paths = {f: p for f, p in paths.items() if not output_exists(p)}
                if not paths and item.kind == "image":  # a video decides itself (resume)
                    run.skipped()
                    run.progress(1)
                    continue
            if self._clobber_ok(item.src, paths):
                yield Job(idx, item, base, paths)

    def finish(self) -> None:
        """Discovery's own findings into the summary: unreadable paths, files not inputs."""
        for path, reason in self.discovery.errors or []:
            self.run.fail(path, reason)
        self.run.not_inputs(self.discovery.skipped_other)

    def _paths(self, item: InputItem, base: Path) -> dict[str, Path]:
        opts = self.opts
        fmts = opts.output.formats
        if item.kind != "video":
            return outputs.image_paths(base, fmts)
        if is_pattern(item.src):  # an image sequence: its frame files
            return {str(i): p for i, p in enumerate(listed_outputs(
                item.src, base, list(fmts), opts.sequence_npy == "frames",
                opts.sequence_video))}
        return outputs.video_paths(base, fmts)

    def _clobber_ok(self, src: Path, paths: dict[str, Path]) -> bool:
        """Files in the way that are not our outputs of `src`: warned about, or refused."""
        assert self.run.journal is not None
        foreign = foreign_files(paths.values(), src, self.run.journal)
        if not foreign:
            return True
        names = ", ".join(str(p) for p in foreign)
        if self.opts.no_clobber:
            self.run.fail(str(src), f"not replacing {names}: not a depthcli output of this "
                                    "input (--no-clobber)")
            self.run.progress(1)
            return False
        _logger.warning("%s: replacing %s, which is not a depthcli output of this input "
                        "(--no-clobber refuses)", src, names)
        return True
