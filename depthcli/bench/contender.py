"""One backend under test in `depthcli bench`: its estimator and what it measured, run by run.

Several contenders (`--backend torch,openvino,onnxruntime`) share one benchmark run so that
they see the same machine load, the same inputs and the same matmul peak; each keeps its own
series and is reported side by side.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .measure import STAGES, PeakMemory, Series
from .passes import e2e_pass, stage_pass

if TYPE_CHECKING:
    from ..engine.core import DepthEngine


@dataclass
class Contender:
    """The estimator of one backend plus its per-run series and peak memory."""

    label: str  # the backend asked for (e.g. "auto"); `est.backend.name` says what ran
    est: DepthEngine
    stage: dict[str, Series] = field(default_factory=lambda: {s: Series() for s in STAGES})
    e2e: Series = field(default_factory=Series)
    mem_max: dict[str, dict[str, float | None]] = field(default_factory=dict)
    tagged: bool = False  # several precisions (or int8): the precision is part of the name

    @property
    def backend(self) -> str:
        """The column's name: the backend that ran, with its precision when tagged."""
        b = self.est.backend
        return f"{b.name}-{b.precision}" if self.tagged else b.name

    @property
    def torch_fp32(self) -> bool:
        """The reference itself: nothing to compare."""
        return self.est.backend.name == "torch" and self.est.backend.precision == "fp32"

    def track(self, mem: PeakMemory, name: str) -> None:
        got = mem.read()
        old = self.mem_max.setdefault(name, got)
        for k, v in got.items():
            if v is not None and (old[k] is None or v > old[k]):  # type: ignore[operator]
                old[k] = v

    def one_run(self, mem: PeakMemory, files: list[Path], folder: Path, work: Path,
                batch_size: int, workers: int) -> str:
        """Serial stages, then the predict path, over `files`; returns the run's log fragment."""
        n = len(files)
        out = work / self.backend
        mem.reset()
        acc = stage_pass(self.est, files, out / "stages", batch_size)
        self.track(mem, "stages")
        for s in STAGES:
            self.stage[s].add(acc.get(s, 0.0) / n)
        shutil.rmtree(out / "e2e", ignore_errors=True)  # fresh outputs, bounded disk use
        mem.reset()
        self.e2e.add(e2e_pass(self.est, folder, out / "e2e", batch_size, workers) / n)
        self.track(mem, "end_to_end")
        return (f"{self.backend} model {self.stage['model'].values[-1] * 1e3:.0f} ms/img, "
                f"end-to-end {self.e2e.values[-1] * 1e3:.0f} ms/img")

    def figures(self, model_flops: float, peak: Series) -> dict[str, object]:
        """Stages, end to end and compute (GFLOP/s, % of the best and of the same-run peak)."""
        stage, e2e = self.stage, self.e2e
        gflops = model_flops / stage["model"].median / 1e9
        # Paired with the peak measured in the same run: robust to the machine's speed drifting
        # between runs (seen here: the fp32 peak moved 99-194 GFLOP/s over an afternoon).
        paired = Series([model_flops / m / 1e9 / p
                         for m, p in zip(stage["model"].values, peak.values, strict=True)])
        return {
            "stages_ms": {s: stage[s].as_dict(1e3, 1) for s in STAGES},
            "sum_of_stages_ms": round(sum(stage[s].median for s in STAGES) * 1e3, 1),
            "end_to_end": {
                "ms_per_image": e2e.as_dict(1e3, 1), "images_per_s": round(1 / e2e.median, 3),
                "vs_model_only_pct": round(100 * (e2e.median / stage["model"].median - 1), 1),
            },
            "compute": {
                "gflop_per_image": round(model_flops / 1e9, 1),
                "model_gflop_s": round(gflops, 1),
                "matmul_peak_gflop_s": round(max(peak.values), 1),
                "matmul_gflop_s_runs": [round(v, 1) for v in peak.values],
                "pct_of_peak": round(100 * gflops / max(peak.values), 1),
                "pct_of_same_run_peak": round(100 * paired.median, 1),
                "pct_of_same_run_peak_runs": [round(100 * v, 1) for v in paired.values],
            },
        }


def parse_backends(text: str, choices: tuple[str, ...]) -> tuple[str, ...]:
    """`torch,openvino` → ("torch", "openvino"): known names, each once, in the given order."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in choices]
    if not names or bad:
        raise ValueError(f"{text!r}: choose one or more of {', '.join(choices)}, "
                         "separated by commas")
    return tuple(dict.fromkeys(names))
