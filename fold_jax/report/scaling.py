"""Report section for results/scaling.csv: throughput vs device count.

Reads whatever the scaling suite writes, needing only a device-count column
(``devices`` / ``mesh_devices`` / ``n_devices_used``, else the metadata ``n_devices``)
and a throughput column (the first present of ``THROUGHPUT``). One line per
(method, other configuration) on log-log axes, with the fitted slope (1 = linear
scaling) and the efficiency at the largest count relative to the smallest.
:func:`headline` gives the summary's finding: per method, the throughput ratio between
the largest and the smallest device count.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from fold_jax.report._common import fmt, loglog_slope, ratio_spread, save, table

__all__ = ["headline", "section", "speedup"]

DEVICE_COLUMNS = ("devices", "mesh_devices", "n_devices_used", "n_devices")
THROUGHPUT = ("evals_per_s", "throughput", "examples_per_s", "directions_per_s", "steps_per_s")
SERIES = ("bench", "method", "kind", "num_directions", "batch_size", "n_params")


def _columns(frame: pd.DataFrame) -> tuple[str | None, str | None]:
    """The device-count and throughput columns ``frame`` has (None where it has none)."""
    return (next((c for c in DEVICE_COLUMNS if c in frame.columns), None),
            next((c for c in THROUGHPUT if c in frame.columns), None))


def _series(frame: pd.DataFrame, devices: str, value: str
            ) -> Iterator[tuple[list[str], tuple, pd.DataFrame]]:
    """Per configuration (machine, then the ``SERIES`` columns present): ``(by, keys,
    rows)``, the rows' medians per device count, sorted by it (columns ``devices``,
    ``value`` and, when present, ``step_median_s`` and ``step_iqr_s``)."""
    frame = frame.assign(where=frame["backend"].astype(str) + ":"
                         + frame["device_kind"].astype(str))
    by = ["where", *[c for c in SERIES if c in frame.columns]]
    steps = [c for c in ("step_median_s", "step_iqr_s") if c in frame.columns]
    for keys, g in frame.dropna(subset=[devices, value]).groupby(by, dropna=False):
        g = g.groupby(devices, as_index=False)[[value, *steps]].median().sort_values(devices)
        yield by, keys, g


def speedup(rows: pd.DataFrame, devices: str, value: str) -> dict[str, float]:
    """Throughput at the largest device count over that at the smallest, for one
    configuration's medians per count (as :func:`_series` gives them).

    The throughput is a fixed amount of work over the median step time, so the ratio
    is ``step_small / step_large``; ``low`` and ``high`` are its range with each step
    time at its median -/+ IQR/2 (:func:`~fold_jax.report._common.ratio_spread`), NaN
    without ``step_median_s`` and ``step_iqr_s``.

    Args:
        rows: one configuration's rows, one per device count, sorted by it.
        devices: the device-count column.
        value: the throughput column.

    Returns:
        ``{"small", "large", "ratio", "efficiency", "low", "high"}``: the two device
        counts, the ratio, ratio / (large / small), and the ratio's range.
    """
    first, last = rows.iloc[0], rows.iloc[-1]
    small, large = float(first[devices]), float(last[devices])
    ratio = float(last[value] / first[value])
    low = high = math.nan
    if {"step_median_s", "step_iqr_s"} <= set(rows.columns):
        low, high = ratio_spread(*(float(r[c]) for r in (first, last)
                                   for c in ("step_median_s", "step_iqr_s")))
    return {"small": small, "large": large, "ratio": ratio,
            "efficiency": ratio / (large / small), "low": low, "high": high}


ALT = "throughput vs devices"  # the figure's alt text
FIGURE = f"![{ALT}](figures/scaling_throughput.png)"
HEADLINE_SERIES = 6  # configurations in the summary; the page has them all


def headline(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """The summary's finding: per method (and machine), at its largest configuration,
    the throughput at the largest device count over that at the smallest, its range
    from the step times' IQRs and the efficiency; "" without data.

    Args:
        frames: file stem -> DataFrame (the "scaling" entry is used).
        fig_dir: the figures folder (the section's figure is linked, not redrawn).

    Returns:
        Markdown: a list, then the figure's link.
    """
    frame = frames.get("scaling")
    if frame is None or frame.empty:
        return ""
    devices, value = _columns(frame)
    if devices is None or value is None:
        return "_scaling.csv has no device-count or throughput column._"
    best: dict[tuple, tuple] = {}  # (where, method) -> its largest configuration
    for by, keys, g in _series(frame, devices, value):
        if len(g) < 2:
            continue
        named = dict(zip(by, keys, strict=True))
        size = tuple(-math.inf if pd.isna(named.get(c)) else named[c]
                     for c in ("num_directions", "batch_size", "n_params") if c in named)
        line = (named["where"], named.get("method", named.get("bench", "")))
        if line not in best or size > best[line][0]:
            best[line] = (size, named, g)
    if not best:
        return "_No configuration was measured at more than one device count._"
    units = ({str(m): str(u) for m, u in frame[["method", "throughput_unit"]].dropna()
              .itertuples(index=False)} if {"method", "throughput_unit"} <= set(frame) else {})
    machines = sorted({where for where, _ in best})
    items = []
    for (where, method), (_, named, g) in sorted(best.items())[:HEADLINE_SERIES]:
        s = speedup(g, devices, value)
        spread = "" if math.isnan(s["low"]) else f" [{fmt(s['low'])}, {fmt(s['high'])}]"
        config = [text.format(fmt(named[c])) for c, text in (
            ("num_directions", "{} directions"), ("batch_size", "batch {}"))
            if c in named and not pd.isna(named[c])]
        on = f" on {where}" if len(machines) > 1 else ""
        items.append(f"- **{method}** ({', '.join([*config, units.get(method, value)])}){on}: "
                     f"{fmt(s['ratio'])}x{spread} on {fmt(s['large'])} devices vs "
                     f"{fmt(s['small'])}, efficiency {fmt(s['efficiency'])}")
    more = len(best) - HEADLINE_SERIES
    where = f" on {machines[0]}" if len(machines) == 1 else ""
    return (f"Throughput at the largest device count over the smallest{where}, per method "
            "at its largest configuration (in brackets: with each step time at its median "
            "-/+ IQR/2):\n\n" + "\n".join(items)
            + (f"\n- ... and {more} more on the page" if more > 0 else "")
            + (f"\n\n{FIGURE}" if (Path(fig_dir) / "scaling_throughput.png").exists() else ""))


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
    devices, value = _columns(frame)
    if devices is None or value is None:
        return (f"_scaling.csv has no device-count column ({', '.join(DEVICE_COLUMNS)}) or "
                f"no throughput column ({', '.join(THROUGHPUT)}); nothing to plot._\n")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    rows = []
    for by, keys, g in _series(frame, devices, value):
        slope = loglog_slope(g[devices], g[value])
        name = ", ".join(str(k) for k in keys if not pd.isna(k))
        ax.plot(g[devices], g[value], marker="o", label=f"{name} (slope {slope:.2f})")
        rows.append({**dict(zip(by, keys, strict=True)), "device counts": g[devices].nunique(),
                     "max devices": g[devices].max(), f"{value} at max": g[value].iloc[-1],
                     "slope": slope,
                     "efficiency": speedup(g, devices, value)["efficiency"] if len(g) > 1
                     else math.nan})
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
            + save(fig, fig_dir, "scaling_throughput", ALT) + "\n"
            + table(pd.DataFrame(rows)))
