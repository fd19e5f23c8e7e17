"""One range of a split video on a model actor, then the join when it is the last range to
finish (the plan, the state and the claims are in `runs.video_ranges`; the passes are
`runs.video.predict_video`'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .video_ranges import Claims, Span, load_state


def run_range(src: Path, base: Path, est: Any, opts: Any, span: Span, spans: list[Span],
              token: str) -> tuple[dict[str, Any] | None, int]:
    """One range of a split video (on a model actor), then the join when it is the last to
    finish: (the video's report when this call joined it, else None; the range's frames).

    The report is a dict: frames, written, skipped, errors (as `VideoReport`'s)."""
    from .. import outputs
    from .video import predict_video
    from .video_resume import fingerprint, state_folder

    folder = state_folder(opts.out_dir, base)
    claims = Claims(folder, token)
    done = claims.report()
    if done is not None:  # joined in this run already (a retry after the join)
        return done, 0
    fp = fingerprint(src, est, opts, [f for f in opts.output.formats if outputs.FORMATS[f].video])

    def joined() -> bool:  # the join was done, its second pass not yet (a killed actor)
        got = load_state(folder)
        return got is not None and got[0].get("fingerprint") == fp and \
            got[0].get("phase") in ("pass2", "publish")

    frames = 0
    if not joined():
        rep = predict_video(src, base, est, opts, resume=True, span=span)
        if rep.skipped:
            report = {"frames": 0, "written": False, "skipped": True, "errors": []}
            return (report if span.index == 0 else None), 0
        frames = rep.frames

    def finished(sp: Span) -> bool:
        got = load_state(sp.folder(folder))
        return got is not None and got[0].get("phase") == "range" and \
            got[0].get("fingerprint") == sp.fingerprint(fp)

    ready = joined() or all(finished(sp) for sp in spans)
    if not claims.claim(span.index, ready):
        return None, frames
    rep = predict_video(src, base, est, opts, resume=True, join=spans)
    report = {"frames": rep.frames, "written": rep.written, "skipped": rep.skipped,
              "errors": list(rep.errors)}
    claims.done(report)
    return report, frames
