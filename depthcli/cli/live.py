"""`depthcli predict SOURCE` for a live source (rtsp://, rtmp://, srt://, udp://, tcp://, ...,
/dev/videoN, `-` for stdin): checks the command, loads the model, runs `runs.live`, reports.

A live run takes one source and no other inputs. Temporal models always stream on a live source
(`--temporal stream`: a window would hold each depth back by up to 32 frames). With `-o -` the
depth video goes to stdout as MPEG-TS (one visual format), and the summary/JSON to stderr; with
`-o URL` (rtmp://, srt://, udp://, tcp://) it is streamed there (FLV for rtmp, MPEG-TS for the
others). Exit codes: 0 the stream ended, 1 it failed (could not be opened, stalled, lost, the
receiver went away), 130 Ctrl-C, 143 SIGTERM; the outputs are finished and playable in every
case.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..io.live import OUTPUT_SCHEMES, is_live, is_url, output_format


def live_input(inputs: tuple[str, ...]) -> str | None:
    """The live source of the command, or None; a usage error if mixed with other inputs."""
    live = [a for a in inputs if is_live(a)]
    if not live:
        return None
    if len(inputs) > 1:
        raise click.UsageError(f"a live source ({live[0]}) must be the only input")
    return live[0]


def stream_target(out: str, live: str | None, fmts: tuple[str, ...]) -> str | None:
    """`-` or the URL when `-o` streams rather than names a folder; usage errors, before
    anything starts, for what cannot be streamed."""
    from .. import outputs

    if not is_url(out) and not (out == "-" and live):
        return None
    if not live:
        raise click.UsageError(
            f"-o {out}: only a live source streams to a URL; write a file's depth to a folder, "
            f"or stream the file as a live source: ffmpeg -re -i CLIP -f mpegts - | depthcli "
            f"predict - -o {out} -f color")
    scheme = out.split(":", 1)[0].lower()
    if out != "-" and scheme not in OUTPUT_SCHEMES:
        schemes = ", ".join(f"{s}://" for s in OUTPUT_SCHEMES)
        raise click.UsageError(f"-o {out}: depth streams to {schemes} (or - for stdout)")
    visual = [f for f in fmts if outputs.FORMATS[f].video == "mp4"]
    if len(visual) != 1 or len(fmts) != 1:
        kind = "MPEG-TS to stdout" if out == "-" else (
            "FLV" if output_format(out) == "flv" else "MPEG-TS")
        raw = [f for f in fmts if f not in visual]
        why = (f"{', '.join(raw)} {'is' if len(raw) == 1 else 'are'} written to a folder "
               f"(-o FOLDER)" if raw else "give exactly one -f")
        raise click.UsageError(f"-o {out} streams one visual format (color, gray or side) as "
                               f"{kind}; {why}")
    return out


def run_live_command(source: str, stream_to: str | None, *, opts: Any, video_model: str, settings: Any,
                     threads: int | None, timeout: float, reconnects: int, as_json: bool,
                     quiet: bool) -> None:
    from .. import outputs
    from ..engine.device import torch_threads
    from ..runs.live import LiveOptions, LiveSummary, run_live
    from . import preflight
    from .common import estimator_loader
    from .runtime import require_torch_stack

    to_stdout = stream_to == "-"
    fmts = list(opts.output.formats)
    if stream_to is None and not any(outputs.FORMATS[f].video for f in fmts):
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
                        stdout=sys.stdout.buffer if to_stdout else None,
                        url=stream_to if stream_to not in (None, "-") else None)
    with torch_threads(threads):
        est = load(video_model)
        summary.load_seconds = 0.0
        run_live(opts, lopts, est, summary)
    if as_json:
        click.echo(json.dumps(summary.as_dict({"source": source, "temporal": "stream" if
                                               getattr(est.spec, "temporal", False) else None,
                                               "output": stream_to or str(opts.out_dir)},
                                              True)),
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

