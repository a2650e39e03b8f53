"""Helpers shared by report sections: number formatting, markdown tables, log-log
slopes, bootstrap intervals of medians, a fixed colour and marker per method, and
saving figures (legends moved outside the axes, nothing clipped)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fold_jax.learn import recipes

__all__ = ["KNOWN_METHODS", "MARKERS", "bootstrap_mean", "bootstrap_median", "fmt", "interval_text",
           "legends_outside", "loglog_slope", "method_styles", "ratio_spread", "save",
           "table"]

# The race methods in a fixed order (the recipe registry, fold_jax.learn.recipes): each owns
# one style slot, so it looks the same in every figure whatever else is plotted beside it.
KNOWN_METHODS: tuple[str, ...] = recipes.names()
# 9 markers x 20 colours (lcm 180): slot i gets colour i % 20 and marker i % 9, so the
# first 20 slots differ in colour and the first 180 in (colour, marker).
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "<", "*")
# tab20 indices: the 10 saturated hues first, then their light twins
_COLOUR_ORDER: tuple[int, ...] = (*range(0, 20, 2), *range(1, 20, 2))
_SLOTS = 180


def fmt(x) -> str:
    """Short text for a number (3 significant digits, inf/NaN spelled out).

    Args:
        x: a number, None or anything else (shown with ``str``).

    Returns:
        The text ("-" for None and NaN).
    """
    if x is None:
        return "-"
    if isinstance(x, bool | np.bool_):
        return str(bool(x))
    if isinstance(x, int | np.integer):
        return str(int(x))
    if isinstance(x, float | np.floating):
        x = float(x)
        if math.isnan(x):
            return "-"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if x == 0:
            return "0"
        if x.is_integer() and abs(x) < 1e7:
            return str(int(x))
        if abs(x) >= 1e5 or abs(x) < 1e-3:
            return f"{x:.2e}"
        return f"{x:.3g}"
    return str(x)


def table(frame: pd.DataFrame, index: bool = False) -> str:
    """A markdown table of ``frame`` (numbers through :func:`fmt`).

    Args:
        frame: the rows.
        index: include the index as columns.

    Returns:
        The markdown text, ending in a newline.
    """
    if index:
        frame = frame.reset_index()
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def loglog_slope(x, y) -> float:
    """Least-squares slope of log(y) against log(x) (NaN with < 2 distinct positive x).

    Args:
        x: the x values.
        y: the y values; only pairs with both positive and finite count.

    Returns:
        The slope, a float.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if len(np.unique(x[ok])) < 2:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def bootstrap_median(values, *, confidence: float = 0.95, n_resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float, float, int]:
    """``(median, low, high, n)``: the median of ``values`` and its percentile-bootstrap
    interval (``n_resamples`` resamples with replacement, a fixed ``seed``, so a report
    rebuilds identically).

    NaN is no measurement and is dropped; +inf (a miss) is kept, so the median and the
    bounds are inf where enough resamples miss. Quantiles are taken without
    interpolation (``inverted_cdf``), so infinite medians never turn into NaN, and the
    bounds are widened to contain the sample median. With n = 1 there is nothing to
    resample: the bounds are NaN (see :func:`interval_text`), not a zero-width
    interval; with n = 0 everything is NaN.

    Args:
        values: the measurements (any array-like).
        confidence: the interval's coverage.
        n_resamples: bootstrap resamples.
        seed: the resampling seed.

    Returns:
        ``(median, low, high, n)``, n the count of non-NaN values.
    """
    return _bootstrap(values, np.median, confidence, n_resamples, seed, "inverted_cdf")


def _bootstrap(values, statistic: Callable[..., Any], confidence: float, n_resamples: int,
               seed: int, method: str) -> tuple[float, float, float, int]:
    """``(statistic, low, high, n)`` of the non-NaN ``values`` with its percentile-bootstrap
    bounds (quantiles by ``method``), widened to contain the statistic; NaN bounds for
    n = 1, all NaN for n = 0."""
    x = np.asarray(values, float).ravel()
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    centre = float(statistic(x))
    if n == 1:
        return centre, math.nan, math.nan, 1
    rng = np.random.default_rng(seed)
    resampled = statistic(x[rng.integers(0, n, size=(n_resamples, n))], axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(resampled, [tail, 1 - tail], method=method)
    return centre, min(float(low), centre), max(float(high), centre), n


def bootstrap_mean(values, *, confidence: float = 0.95, n_resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)``: the mean of ``values`` and its percentile-bootstrap
    interval (``n_resamples`` resamples with replacement, a fixed ``seed``), for finite
    measurements such as the share of targets a run reached. NaN is dropped; as in
    :func:`bootstrap_median`, n = 1 gives NaN bounds and n = 0 all NaN, and the bounds
    are widened to contain the sample mean.

    Args:
        values: the measurements (any array-like).
        confidence: the interval's coverage.
        n_resamples: bootstrap resamples.
        seed: the resampling seed.

    Returns:
        ``(mean, low, high, n)``, n the count of non-NaN values.
    """
    return _bootstrap(values, np.mean, confidence, n_resamples, seed, "linear")


def ratio_spread(top: float, top_iqr: float, bottom: float, bottom_iqr: float
                 ) -> tuple[float, float]:
    """The range of the time ratio ``top / bottom`` when each time moves to its median
    -/+ IQR/2 (the middle half of its timed rounds): ``((top - top_iqr/2) / (bottom +
    bottom_iqr/2), (top + top_iqr/2) / (bottom - bottom_iqr/2))``. It is a spread of
    the rounds, not a confidence interval. The low end is at least 0; the high end is
    inf when ``bottom_iqr/2`` reaches ``bottom``; NaN in, NaN out.

    Args:
        top: the numerator's median time (s).
        top_iqr: its interquartile range (s; 0 where unknown).
        bottom: the denominator's median time (s).
        bottom_iqr: its interquartile range (s).

    Returns:
        ``(low, high)``.
    """
    if any(math.isnan(v) for v in (top, top_iqr, bottom, bottom_iqr)):
        return math.nan, math.nan
    low = max(0.0, (top - top_iqr / 2) / (bottom + bottom_iqr / 2))
    high = (top + top_iqr / 2) / (bottom - bottom_iqr / 2) if bottom > bottom_iqr / 2 \
        else math.inf
    return low, high


def interval_text(low: float, high: float, n: int) -> str:
    """Table text for a :func:`bootstrap_median` interval: ``[low, high]``, or
    ``n=1, no interval`` for a single seed (``-`` with none).

    Args:
        low: the lower bound.
        high: the upper bound.
        n: the number of measurements.

    Returns:
        The text.
    """
    if n <= 0:
        return "-"
    if n == 1 or math.isnan(low) or math.isnan(high):
        return f"n={n}, no interval"
    return f"[{fmt(low)}, {fmt(high)}]"


def _slot(index: int) -> dict:
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"]
    return {"color": tab20(_COLOUR_ORDER[index % 20]), "marker": MARKERS[index % len(MARKERS)]}


def method_styles(methods: Iterable[str]) -> dict[str, dict]:
    """``{method: {"color": rgba, "marker": str}}``, for ``plot(..., **style)``.

    A method of :data:`KNOWN_METHODS` always gets its own slot (the same colour and
    marker in every figure); any other name gets a slot chosen from a hash of its name
    (stable across runs and figures), moved to the next free slot only when it collides
    with another name of ``methods``. Styles are distinct within one call for up to 180
    names.

    Args:
        methods: the method names.

    Returns:
        method -> style dict.
    """
    names = sorted({str(m) for m in methods})
    taken = {KNOWN_METHODS.index(m) for m in names if m in KNOWN_METHODS}
    out = {m: _slot(KNOWN_METHODS.index(m)) for m in names if m in KNOWN_METHODS}
    first = len(KNOWN_METHODS)
    for m in names:
        if m in out:
            continue
        slot = first + zlib.crc32(m.encode()) % (_SLOTS - first)
        for _ in range(_SLOTS):
            if slot not in taken:
                break
            slot = first + (slot + 1 - first) % (_SLOTS - first)
        taken.add(slot)
        out[m] = _slot(slot)
    return out


def _twin_overhang(ax) -> float:
    """Pixels by which twin axes drawn over ``ax`` (``twinx``) reach past its right edge."""
    twins = [o for o in ax.figure.axes if o is not ax
             and np.allclose(o.get_position().bounds, ax.get_position().bounds)]
    if not twins:
        return 0.0
    renderer = ax.figure.canvas.get_renderer()
    right = ax.get_window_extent(renderer).x1
    return max(0.0, *(o.get_tightbbox(renderer).x1 - right for o in twins))


def legends_outside(fig, pad_in: float = 0.05) -> None:
    """Move every axes legend left at its default anchor (``loc="best"``, ``"upper
    left"``, ...: drawn over the data) to the right of its axes, past any twin axis's
    ticks and label, and widen the figure by what the legends take in each row of axes,
    so the axes keep their size. Legends a caller anchored itself (``bbox_to_anchor``)
    and figure legends are left alone.

    Args:
        fig: a matplotlib figure.
        pad_in: the gap between the axes (or twin axis) and the legend, in inches.
    """
    from matplotlib.transforms import ScaledTranslation

    moved = []
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None or getattr(legend, "_bbox_to_anchor", None) is not None:
            continue
        shift = pad_in + _twin_overhang(ax) / fig.dpi
        legend.set_loc("upper left")
        legend.set_bbox_to_anchor(
            (1.0, 1.0), transform=ax.transAxes + ScaledTranslation(shift, 0, fig.dpi_scale_trans))
        moved.append((ax, legend, shift))
    if not moved:
        return
    renderer = fig.canvas.get_renderer()
    rows: dict[float, float] = {}
    for ax, legend, shift in moved:
        row = round(ax.get_position().y0, 3)
        width = legend.get_window_extent(renderer).width / fig.dpi + shift
        rows[row] = rows.get(row, 0.0) + width
    fig.set_figwidth(fig.get_figwidth() + max(rows.values()))


def save(fig, fig_dir: Path, name: str, alt: str | None = None) -> str:
    """Save ``fig`` as ``fig_dir/name.png``; return its markdown image link. Axes legends
    are moved outside the axes (:func:`legends_outside`), the layout is tightened
    (unless the figure has a layout engine, such as ``layout="constrained"``) and the
    saved box is fitted to everything drawn, so titles and legends are never clipped.

    Args:
        fig: a matplotlib figure.
        fig_dir: the figures folder.
        name: the file's stem.
        alt: the image's alt text (None: ``name``).

    Returns:
        The markdown link, ending in a newline.
    """
    legends_outside(fig)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    # no Software entry: the bytes do not change with matplotlib's version
    fig.savefig(Path(fig_dir) / f"{name}.png", dpi=110, bbox_inches="tight",
                metadata={"Software": None})
    return f"![{alt or name}](figures/{name}.png)\n"
