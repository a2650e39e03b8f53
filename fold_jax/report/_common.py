"""Helpers shared by report sections: number formatting, markdown tables, log-log
slopes, saving figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["fmt", "loglog_slope", "save", "table"]


def fmt(x) -> str:
    """Short text for a number (3 significant digits, inf/NaN spelled out)."""
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
    """A markdown table of ``frame`` (numbers through :func:`fmt`)."""
    if index:
        frame = frame.reset_index()
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def loglog_slope(x, y) -> float:
    """Least-squares slope of log(y) against log(x) (NaN with < 2 distinct positive x)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if len(np.unique(x[ok])) < 2:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def save(fig, fig_dir: Path, name: str, alt: str | None = None) -> str:
    """Save ``fig`` as ``fig_dir/name.png``; return its markdown image link."""
    fig.tight_layout()
    fig.savefig(Path(fig_dir) / f"{name}.png", dpi=110, bbox_inches="tight")
    return f"![{alt or name}](figures/{name}.png)\n"
