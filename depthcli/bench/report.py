"""The benchmark's text report, and the facts about the machine it states."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from ..cpu import cpu_name

if TYPE_CHECKING:
    import torch


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def device_name(dev: torch.device) -> str:
    import torch

    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    if dev.type == "cpu":
        name = cpu_name()
        return f"cpu ({name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return dev.type


def print_report(r: dict) -> None:
    e = click.echo
    e("")
    e(f"{'stage (serial)':<16}{'ms/img':>10}{'spread':>9}")
    for s, d in r["stages_ms"].items():
        e(f"{s:<16}{d['median']:>10.1f}{d['spread_pct']:>8.1f}%")
    e(f"{'sum of stages':<16}{r['sum_of_stages_ms']:>10.1f}")
    ee = r["end_to_end"]
    e(f"{'end-to-end':<16}{ee['ms_per_image']['median']:>10.1f}"
      f"{ee['ms_per_image']['spread_pct']:>8.1f}%   {ee['images_per_s']:.3f} img/s "
      f"(predict path, {r['workers']} workers; {ee['vs_model_only_pct']:+.1f}% vs model alone)")
    c = r["compute"]
    shapes = ", ".join(f"{k}: {v}" for k, v in c["gflop_by_shape"].items())
    e(f"model compute   {c['gflop_per_image']} GFLOP/img ({shapes}); {c['model_gflop_s']} GFLOP/s "
      f"= {c['pct_of_peak']}% of the best {c['matmul_dtype']} matmul peak (torch or OpenVINO) "
      f"{c['matmul_peak_gflop_s']} GFLOP/s")
    e(f"                {c['pct_of_same_run_peak']}% of the peak measured in the same run "
      f"(median; runs {c['pct_of_same_run_peak_runs']}; peaks {c['matmul_gflop_s_runs']})")
    m = r["memory"]
    dev_mem = (f", device {m['end_to_end']['device_mb']} MB"
               if m["end_to_end"]["device_mb"] is not None else "")
    e(f"peak memory     host {m['end_to_end']['host_mb']} MB end-to-end "
      f"({m['stages']['host_mb']} MB serial stages; {m['resident_before_runs_mb']} MB resident "
      f"before the runs, models loaded){dev_mem}")
    if "deviation_vs_fp32" in r:
        d = r["deviation_vs_fp32"]
        e(f"vs fp32 depth   |d| as % of the depth range (worst image): max "
          f"{100 * d['max_of_range']:.2f}%, p99 {100 * d['p99_of_range']:.2f}%, "
          f"mean {100 * d['mean_of_range']:.3f}% (all images: {100 * d['mean_of_range_avg']:.3f}%)")
    if "int8" in r:
        q = r["int8"]
        e(f"int8            calibrated on the {q['calibration']}; quantised in "
          f"{q['quantize_s']} s (NNCF {q['nncf']}){'; loaded from the cache' if q.get('cached') else ''}")
    if "peer" in r:
        p = r["peer"]
        e(f"peer            {p['what']}")
        e(f"  model         {p['model_ms']['median']:>8.1f} ms/img ({p['model_ms']['spread_pct']}% "
          f"spread; {p['model_gflop_s']} GFLOP/s; input {', '.join(p['network_shapes'])})")
        pe = p["end_to_end"]
        pdev = p["memory"]["end_to_end"]["device_mb"]
        e(f"  end-to-end    {pe['ms_per_image']['median']:>8.1f} ms/img "
          f"({pe['ms_per_image']['spread_pct']}% spread) {pe['images_per_s']:.3f} img/s; "
          f"peak host {p['memory']['end_to_end']['host_mb']} MB"
          + (f", device {pdev} MB" if pdev is not None else ""))
        ra = r["ratio"]
        e(f"ours / peer     throughput x{ra['end_to_end']:.2f} end-to-end "
          f"(runs {ra['end_to_end_runs']}), x{ra['model']:.2f} model (runs {ra['model_runs']})")
    if r.get("load_average"):
        e(f"load average    {r['load_average']} (other processes skew timings; rerun if high)")


def print_backends(r: dict) -> None:
    """The backends side by side: one column each, the rows of the single-backend report."""
    e = click.echo
    per: dict[str, dict] = r["by_backend"]
    names = list(per)
    width = max(14, *(len(n) + 2 for n in names))

    def row(label: str, cells: list[str]) -> None:
        e(f"{label:<22}" + "".join(f"{c:>{width}}" for c in cells))

    e("")
    row("backends side by side", names)
    for s in next(iter(per.values()))["stages_ms"]:
        row(f"{s} ms/img", [f"{per[n]['stages_ms'][s]['median']:.1f}" for n in names])
    row("end-to-end ms/img", [f"{per[n]['end_to_end']['ms_per_image']['median']:.1f}"
                              for n in names])
    row("end-to-end img/s", [f"{per[n]['end_to_end']['images_per_s']:.3f}" for n in names])
    row("model GFLOP/s", [f"{per[n]['compute']['model_gflop_s']:.1f}" for n in names])
    row("% of peak (same run)", [f"{per[n]['compute']['pct_of_same_run_peak']:.1f}"
                                 for n in names])
    row("peak host MB (e2e)", [f"{per[n]['memory']['end_to_end']['host_mb']}" for n in names])

    def dev(n: str, k: str) -> str:
        d = per[n].get("deviation_vs_torch_fp32")
        return "ref" if d is None else f"{100 * d[k]:.4f}%"

    row("vs torch fp32: max", [dev(n, "max_of_range") for n in names])
    row("vs torch fp32: mean", [dev(n, "mean_of_range") for n in names])
    row("  mean, all images", [dev(n, "mean_of_range_avg") for n in names])
    if "peer" in r:
        row("x peer end-to-end", [f"{per[n]['ratio_vs_peer']['end_to_end']:.2f}" for n in names])
        row("x peer model", [f"{per[n]['ratio_vs_peer']['model']:.2f}" for n in names])
    e("(deviations: |d| as % of the depth range, worst image; the rows above this table are "
      f"the first backend's, {names[0]})")


def print_startup(r: dict) -> None:
    """Fixed cost per step, one column per backend (median of fresh processes)."""
    e = click.echo
    per: dict[str, dict] = r["startup"]
    names = list(per)
    first = next(iter(per.values()))
    e(f"start-up of {r['model']}: process start to the first image entering the network "
      f"(median of {first['runs']} fresh processes after {first['warmup']} warming; "
      f"{r['image']})")
    e(f"{'step (s)':<20}" + "".join(f"{n:>14}" for n in names))
    for step in next(iter(per.values()))["seconds"]:
        e(f"{step:<20}" + "".join(f"{per[n]['seconds'][step]:>14.3f}" for n in names))
    e(f"{'runs':<20}" + "".join(f"{str(per[n]['total_runs']):>14}" for n in names))
    if r.get("load_average"):
        e(f"load average    {r['load_average']}")
