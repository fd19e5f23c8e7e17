"""`python -m depthcli.backends.prebuild RUNTIME MODEL WEIGHTS`: fill the runtime cache.

Started detached by `--backend auto` (backends/autoplan.py) when a job is too small to earn its
conversion back: the job runs on torch, this converts for the next run.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    runtime, model_name, weights = argv
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
