"""Report section for results/scaling.csv: throughput vs device count.

Reads whatever the scaling suite writes, needing only a device-count column
(``devices`` / ``mesh_devices`` / ``n_devices_used``, else the metadata ``n_devices``)
and a throughput column (the first present of ``THROUGHPUT``). One line per
(method, other configuration) on log-log axes, with the fitted slope (1 = linear
scaling) and the efficiency at the largest count relative to the smallest.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fold_jax.report._common import loglog_slope, save, table

__all__ = ["section"]

DEVICE_COLUMNS = ("devices", "mesh_devices", "n_devices_used", "n_devices")
THROUGHPUT = ("evals_per_s", "throughput", "examples_per_s", "directions_per_s", "steps_per_s")
SERIES = ("bench", "method", "kind", "num_directions", "batch_size", "n_params")


def section(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """Markdown for the scaling section (throughput vs device count); "" without data.

    Args:
        frames: file stem -> DataFrame (the "scaling" entry is used).
        fig_dir: the folder figures are saved in.

    Returns:
        The section's markdown.
    """
    frame = frames.get("scaling")
    if frame is None or frame.empty:
        return ""
    devices = next((c for c in DEVICE_COLUMNS if c in frame.columns), None)
    value = next((c for c in THROUGHPUT if c in frame.columns), None)
    if devices is None or value is None:
        return (f"_scaling.csv has no device-count column ({', '.join(DEVICE_COLUMNS)}) or "
                f"no throughput column ({', '.join(THROUGHPUT)}); nothing to plot._\n")
    import matplotlib.pyplot as plt

    frame = frame.assign(where=frame["backend"].astype(str) + ":"
                         + frame["device_kind"].astype(str))
    by = ["where", *[c for c in SERIES if c in frame.columns]]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    rows = []
    for keys, g in frame.dropna(subset=[devices, value]).groupby(by, dropna=False):
        g = g.groupby(devices, as_index=False)[value].median().sort_values(devices)
        slope = loglog_slope(g[devices], g[value])
        name = ", ".join(str(k) for k in keys if not pd.isna(k))
        ax.plot(g[devices], g[value], marker="o", label=f"{name} (slope {slope:.2f})")
        eff = (g[value].iloc[-1] / g[value].iloc[0]) / (g[devices].iloc[-1] / g[devices].iloc[0])
        rows.append({**dict(zip(by, keys, strict=True)), "device counts": g[devices].nunique(),
                     "max devices": g[devices].max(), f"{value} at max": g[value].iloc[-1],
                     "slope": slope, "efficiency": eff if len(g) > 1 else float("nan")})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("devices (count, log2 scale)")
    ax.set_ylabel(f"{value.replace('_', ' ')} (log scale)")
    ax.set_title("Throughput vs device count")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return ("Throughput per configuration against the number of devices it ran on; slope "
            "1 on log-log axes is linear scaling; efficiency = speedup / device ratio "
            "between the smallest and largest count.\n\n"
            + save(fig, fig_dir, "scaling_throughput", "throughput vs devices") + "\n"
            + table(pd.DataFrame(rows)))
