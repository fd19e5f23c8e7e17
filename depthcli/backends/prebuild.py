"""`python -m depthcli.backends.prebuild RUNTIME MODEL WEIGHTS [AFTER_PID]`: fill the runtime cache.

Started detached by `--backend auto` (backends/autoplan.py) when a job is too small to earn its
conversion back: the job runs on torch, this converts for the next run. It holds the
checkpoint's pending lock from its start, so that runs starting meanwhile do not start
another, and it waits for process AFTER_PID (the run that started it) to exit before it
imports torch or reads the checkpoint: converting beside that run took CPU from it (7 s of a
23 s torch run of 10 photos, 2-core EPYC), although the run chose torch for finishing sooner.
It runs at nice 19.
"""

from __future__ import annotations

import os
import sys

# The run it follows is a small job (below the break-even, a few minutes at most); after
# this long the conversion goes ahead anyway, at nice 19.
WAIT_MAX_S = 900.0


def main(argv: list[str]) -> int:
    runtime, model_name, weights, *after = argv
    from .autoplan import mark_pending, pending_lock
    from .locks import exclusive, wait_until

    try:
        os.nice(19)
    except (AttributeError, OSError):  # no nice (Windows): the wait below still applies
        pass
    lock = pending_lock(runtime, model_name, weights)
    with exclusive(lock, wait=False) as mine:
        if not mine:  # another background conversion of this checkpoint is under way
            return 0
        if after:
            mark_pending(lock, "queued")
            parent = int(after[0])  # reparented once it has exited
            wait_until(lambda: os.getppid() != parent, WAIT_MAX_S)
        mark_pending(lock, "converting")  # a run starting now waits for this one
        from ..models import create_model
        from . import create_runtime_backend

        model = create_model(model_name, weights=weights)
        backend = create_runtime_backend(runtime, model, model.spec, precision="fp32")
        from ..engine.core import weights_digest
        from .warm import remember_backend

        # the next run starts warm (engine/warm.py)
        remember_backend(backend, model.spec, model.max_depth, weights, weights_digest(model))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
