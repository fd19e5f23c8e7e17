"""`depthcli predict SOURCE` for a live source (rtsp://, rtmp://, srt://, udp://, tcp://, ...,
/dev/videoN, `-` for stdin): checks the command, loads the model, runs `runners.live`, reports.

A live run takes one source and no other inputs. Temporal models always stream on a live source
(`--temporal stream`: a window would hold each depth back by up to 32 frames). With `-o -` the
depth video goes to stdout as MPEG-TS (one visual format), and the summary/JSON to stderr.
Exit codes: 0 the stream ended, 1 it failed (could not be opened, stalled, lost), 130 Ctrl-C,
143 SIGTERM; the outputs are finished and playable in every case.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..io.live import is_live


def live_input(inputs: tuple[str, ...]) -> str | None:
    """The live source of the command, or None; a usage error if mixed with other inputs."""
    live = [a for a in inputs if is_live(a)]
    if not live:
        return None
    if len(inputs) > 1:
        raise click.UsageError(f"a live source ({live[0]}) must be the only input")
    return live[0]


def run_live_command(source: str, *, opts: Any, video_model: str, settings: Any,
                     threads: int | None, timeout: float, reconnects: int, as_json: bool,
                     quiet: bool) -> None:
    from .. import outputs
    from ..device import torch_threads
    from ..runners.live import LiveOptions, LiveSummary, run_live
    from . import preflight
    from .common import estimator_loader
    from .runtime import require_torch_stack

    to_stdout = str(opts.out_dir) == "-"
    fmts = list(opts.output.formats)
    if to_stdout:
        visual = [f for f in fmts if outputs.FORMATS[f].video == "mp4"]
        if len(visual) != 1 or len(fmts) != 1:
            raise click.UsageError("-o - streams one visual format (color, gray or side) as "
                                   "MPEG-TS to stdout; give exactly one -f")
    elif not any(outputs.FORMATS[f].video for f in fmts):
        raise click.UsageError(f"none of the formats {', '.join(fmts)} can be written for a "
                               f"video (use {', '.join(outputs.VIDEO_FORMATS)})")
    if opts.video_norm == "clip":
        opts.video_norm = "frame"  # a live stream has no end to take a clip range over
    s = settings
    found = preflight.resolve_checkpoints([video_model], s.weights)
    require_torch_stack()
    load = estimator_loader(weights=s.weights, input_size=s.input_size, device=s.device,
                            precision=s.precision, backend=s.backend, max_depth=s.max_depth,
                            compile_=s.compile_, channels_last=s.channels_last,
                            output_size=s.output_size, camera=s.camera, resolved=found,
                            calibrate=s.calibrate)
    summary = LiveSummary(models={"videos": video_model})
    lopts = LiveOptions(source, timeout=timeout, reconnects=reconnects, to_stdout=to_stdout,
                        stdout=sys.stdout.buffer if to_stdout else None)
    with torch_threads(threads):
        est = load(video_model)
        summary.load_seconds = 0.0
        run_live(opts, lopts, est, summary)
    if as_json:
        click.echo(json.dumps(summary.as_dict({"source": source, "temporal": "stream" if
                                               getattr(est.spec, "temporal", False) else None,
                                               "output": str(opts.out_dir)}, True)),
                   err=to_stdout)
    if not quiet or summary.failed:
        click.echo(summary.line(), err=True)
    for path, reason in summary.failures:
        click.echo(f"error: {path}: {reason}", err=True)
    if summary.terminated:
        sys.exit(143)
    if summary.interrupted:
        sys.exit(130)
    if summary.failed:
        sys.exit(1)


def stdout_is_out(out_dir: Path) -> bool:
    return str(out_dir) == "-"
