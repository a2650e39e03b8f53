"""Report section for results/kernels.csv: cost of a step relative to inference (and
of binarized / sparse matmuls relative to dense), how step time grows with
num_directions and n_params (log-log, fitted slopes), memory.

Column meanings are those of :data:`fold_jax.results.SCHEMA` (``results/COLUMNS.md``);
:func:`harmonize` maps rows written before they were fixed onto them. :func:`headline`
gives the summary's finding: the fused step's fraction of inference, and each method
family's at its largest measured size.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fold_jax.report._common import fmt, loglog_slope, ratio_spread, save, table

__all__ = ["FAMILIES", "HEADLINE_KERNEL", "MATMUL_BENCHES", "family", "harmonize",
           "headline", "label", "section"]

MAX_SERIES = 10
MATMUL_BENCHES = ("xnor_matmul", "bcsr_matmul")  # timed against the dense matmul
# the suite's headline row: the fused low-rank step with every option at its default
HEADLINE_KERNEL = "zo_gaussian_fused_default"
FUSED_TARGET = 0.95  # its target fraction of inference (fold_jax/bench/suites/kernels.py)
# the method families of the summary, in its order (see family())
FAMILIES: tuple[str, ...] = ("low-rank ZO", "full-rank ZO", "materialized OpenAI-ES",
                             "forward gradient", "direct search", "backprop (Adam)")


def harmonize(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of older runs in today's column meanings: on binarized / sparse matmul rows
    ``frac_of_inference`` held the speedup over dense (now ``speedup_vs_dense``, and
    ``frac_of_inference`` is empty there); "no chunking" was 0 or empty (now
    ``chunk_size`` = num_directions, see :func:`label`).

    Args:
        frame: kernels.csv rows.

    Returns:
        A copy with ``speedup_vs_dense`` and ``dense_median_s`` columns, filled from the
        old columns where they were empty.
    """
    frame = frame.copy()
    for column in ("speedup_vs_dense", "dense_median_s", "chunk_size", "rank"):
        if column not in frame:
            frame[column] = math.nan
    old = frame["bench"].isin(MATMUL_BENCHES) & frame["speedup_vs_dense"].isna()
    frame.loc[old, "speedup_vs_dense"] = frame.loc[old, "frac_of_inference"]
    frame.loc[old, "dense_median_s"] = frame.loc[old, "inference_equiv_s"]
    frame.loc[old, ["frac_of_inference", "inference_equiv_s"]] = math.nan
    return frame


def label(row) -> str:
    """A kernel's name: method, noise, rank, chunk size, layout (the ones present).

    The rank is shown when low (0 and empty: full rank or no perturbation), the chunk
    size when the directions run in several chunks (0 < chunk_size < num_directions).

    Args:
        row: a kernels.csv row (a mapping with ``get``).

    Returns:
        The name, space separated.
    """
    parts = [str(row["method"])]
    noise = row.get("noise")
    if isinstance(noise, str) and noise and noise not in parts[0]:
        parts.append(noise)
    directions = row.get("num_directions")
    for column, short in (("rank", "r"), ("chunk_size", "chunk")):
        value = row.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == 0:
            continue
        if column == "chunk_size" and directions is not None and not pd.isna(directions) \
                and value >= directions:
            continue  # one chunk: not chunked
        if not (column == "rank" and parts[0].endswith(f"_r{int(value)}")):
            parts.append(f"{short}={int(value)}")
    layout = row.get("layout")
    if isinstance(layout, str) and layout:
        parts.append(layout)
    if row.get("variant", "dense") not in ("dense", None) and isinstance(row.get("variant"), str):
        parts.append(row["variant"])
    return " ".join(parts)


def family(row) -> str | None:
    """The method family of a kernels.csv row (one of ``FAMILIES``), or None for the
    references (inference, the binarized and sparse matmuls).

    Zeroth-order kernels (methods ``zo*``) split by rank: low rank (> 0; fused into
    the layers where they allow, the default) or full rank (0 or empty).

    Args:
        row: a kernels.csv row (a mapping with ``get``).

    Returns:
        The family's name, or None.
    """
    bench, method = str(row.get("bench")), str(row.get("method"))
    if bench in MATMUL_BENCHES or method == "inference":
        return None
    named = {"gradient_step": "backprop (Adam)", "forward_gradient_step": "forward gradient",
             "search_step": "direct search"}
    if bench in named:
        return named[bench]
    if method == "openai_es_materialized":
        return "materialized OpenAI-ES"
    if method.startswith("zo"):
        rank = row.get("rank")
        low = rank is not None and not pd.isna(rank) and rank > 0
        return "low-rank ZO" if low else "full-rank ZO"
    return None


def _size(row) -> str:
    """A kernel's size in words: parameters, directions, batch (the ones present)."""
    parts = [text.format(fmt(row.get(c))) for c, text in (
        ("n_params", "d = {}"), ("num_directions", "{} directions"), ("batch_size", "batch {}"))
        if row.get(c) is not None and not pd.isna(row.get(c))]
    return ", ".join(parts)


def _fraction(row) -> str:
    """``frac_of_inference`` and its range with the step time at its median -/+ IQR/2."""
    step, iqr = row.get("step_median_s", math.nan), row.get("step_iqr_s", math.nan)
    inference = row.get("inference_equiv_s", math.nan)
    low, high = ratio_spread(inference, 0.0, step, iqr)
    spread = "" if math.isnan(low) else f" [{fmt(low)}, {fmt(high)}]"
    return f"{fmt(row['frac_of_inference'])}{spread}"


def headline(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """The summary's finding: the fraction of inference of the fused step at its
    defaults (``HEADLINE_KERNEL``) against its target, then per method family (see
    :func:`family`) at its largest measured model (parameters; each kernel at its
    largest directions and batch there) the kernel closest to inference, and the
    range over the family's kernels there; "" without data.

    Args:
        frames: file stem -> DataFrame (the "kernels" entry is used).
        fig_dir: the figures folder (the section's figure is linked, not redrawn).

    Returns:
        Markdown: a list, then a figure's link.
    """
    frame = frames.get("kernels")
    if frame is None or frame.empty:
        return ""
    frame = _prepare(frame)
    frame = frame[np.isfinite(pd.to_numeric(frame["frac_of_inference"], errors="coerce"))]
    frame = frame.assign(family=[family(r) for r in frame.to_dict("records")])
    items = []
    for r in frame[frame["method"] == HEADLINE_KERNEL].to_dict("records")[-1:]:
        met = "met" if r["frac_of_inference"] >= FUSED_TARGET else "**not met**"
        items.append(f"- **fused low-rank step, defaults** ({r['kernel']}, {_size(r)}): "
                     f"{_fraction(r)}, target >= {FUSED_TARGET} {met}")
    for name in FAMILIES:
        g = frame[frame["family"] == name]
        if g.empty:
            continue
        g = g[g["n_params"].fillna(-1) == g["n_params"].fillna(-1).max()]
        # each kernel at its largest directions and batch there
        at = g.sort_values(["num_directions", "batch_size"], na_position="first").groupby(
            "kernel").tail(1)
        best = at.sort_values("frac_of_inference").iloc[-1].to_dict()
        others = (f" ({len(at)} kernels: {fmt(at['frac_of_inference'].min())} to "
                  f"{fmt(at['frac_of_inference'].max())})" if len(at) > 1 else "")
        alone = ", vs inference on its batch" if name == "backprop (Adam)" else ""
        items.append(f"- **{name}**: {best['kernel']} {_fraction(best)}{others} at "
                     f"{_size(best)}{alone}")
    if not items:
        return "_No kernel row has a finite `frac_of_inference`._"
    figure = Path(fig_dir) / "kernels_time_vs_params.png"
    return ("Inference time on the same examples over step time (1: a step costs that "
            "inference; brackets: the step time at its median -/+ IQR/2), per method "
            "family at its largest model:\n\n" + "\n".join(items)
            + ("\n\n![Step time vs number of parameters](figures/kernels_time_vs_params.png)"
               if figure.exists() else ""))


def _prepare(frame: pd.DataFrame) -> pd.DataFrame:
    frame = harmonize(frame)
    frame["kernel"] = [label(r) for r in frame.to_dict("records")]
    frame["where"] = frame["backend"].astype(str) + ":" + frame["device_kind"].astype(str)
    return frame


def _fits(frame: pd.DataFrame, x: str, y: str, line: list[str], config: list[str]):
    """Every (line, config) group with >= 2 distinct ``x``: (line keys, config keys, data)."""
    out = []
    for keys, g in frame.dropna(subset=[x, y]).groupby(line + config, dropna=False):
        g = g.groupby(x, as_index=False)[y].median().sort_values(x)
        if g[x].nunique() >= 2:
            out.append((keys[: len(line)], keys[len(line):], g))
    return out


def _pick(fits):
    """One config per line: the one with most points, then the largest config values."""
    best = {}
    for line, config, g in fits:
        rank = (len(g), tuple(-math.inf if pd.isna(v) else v for v in config))
        if line not in best or rank > best[line][0]:
            best[line] = (rank, config, g)
    return [(line, config, g) for line, (_, config, g) in best.items()][:MAX_SERIES]


def _loglog(frame, x, y, line, config, xlabel, ylabel, title, fig_dir, name, scale=1.0):
    """Log-log plot, one line per ``line`` group (at its best-covered config)."""
    import matplotlib.pyplot as plt

    fits = _fits(frame, x, y, line, config)
    if not fits:
        return "", pd.DataFrame()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for keys, cfg, g in _pick(fits):
        slope = loglog_slope(g[x], g[y])
        where = ", ".join(f"{c}={fmt(v)}" for c, v in zip(config, cfg, strict=True)
                          if not pd.isna(v))
        ax.plot(g[x], g[y] * scale, marker="o",
                label=f"{': '.join(map(str, keys))} [{where}] slope {slope:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    slopes = pd.DataFrame([{**dict(zip(line, keys, strict=True)),
                            "slope": loglog_slope(g[x], g[y])} for keys, _, g in fits])
    summary = slopes.groupby(line, dropna=False)["slope"].agg(
        configs="size", median="median", min="min", max="max").reset_index()
    return save(fig, fig_dir, name, title), summary.assign(x=x)


def _targets(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per kernel measurement that a target of the zeroth-order engine names."""
    rows = []

    def add(g, what, value, target, ok):
        for r, v in zip(g.to_dict("records"), value, strict=True):
            rows.append({"ratio": what, "kernel": r["kernel"],
                         "num_directions": r.get("num_directions"),
                         "chunk_size": r.get("chunk_size"), "value": v, "target": target,
                         "met": bool(ok(v)) if np.isfinite(v) else False})

    g = frame[frame["bench"] == "zo_fused_lowrank"]
    add(g, "inference time / step time", g["frac_of_inference"], ">= 0.95", lambda v: v >= 0.95)
    if "speedup_vs_baseline" in frame:
        g = frame[(frame["bench"] == "zo_fullrank_vs_es") & frame["speedup_vs_baseline"].notna()]
        add(g, "materialized OpenAI-ES time / step time", g["speedup_vs_baseline"], ">= 1",
            lambda v: v >= 1)
    if "inference_mem_bytes" in frame:
        g = frame[(frame["bench"] == "zo_chunk_memory") & (frame["method"] != "inference")]
        add(g, "memory / (inference memory + params)",
            g["mem_bytes"] / (g["inference_mem_bytes"] + 4 * g["n_params"]), "<= 1.25",
            lambda v: v <= 1.25)
    return pd.DataFrame(rows)


def section(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """Markdown for the kernels section (cost tables, log-log figures); "" without data.

    Args:
        frames: file stem -> DataFrame (the "kernels" entry is used).
        fig_dir: the folder figures are saved in.

    Returns:
        The section's markdown.
    """
    frame = frames.get("kernels")
    if frame is None or frame.empty:
        return ""
    import matplotlib.pyplot as plt

    frame = _prepare(frame)
    multi = frame["where"].nunique() > 1
    out = [f"{len(frame)} kernel measurements (fold_jax/bench/suites/kernels.py: AOT-compiled "
           "callables, median and IQR over rounds of >= 1 ms). `frac_of_inference` = time "
           "of plain inference on num_directions x batch examples divided by the step time, "
           "both timed in alternating rounds: 1 means a step costs exactly that inference; "
           "backprop rows compare with inference on the batch alone. Binarized and sparse "
           "matmuls compare with the f32 dense matmul instead (`speedup_vs_dense`). Every "
           "column: [COLUMNS.md](COLUMNS.md).\n"]

    # 1. cost relative to inference, per kernel
    group = (["where"] if multi else []) + ["bench", "kernel"]
    rows = []
    for keys, g in frame.groupby(group, dropna=False, sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        frac = g["frac_of_inference"].replace([np.inf, -np.inf], np.nan).dropna()
        dense = g["speedup_vs_dense"].replace([np.inf, -np.inf], np.nan).dropna()
        rows.append({**dict(zip(group, keys, strict=True)), "configs": len(g),
                     "frac_of_inference (median)": frac.median() if len(frac) else math.nan,
                     "min": frac.min() if len(frac) else math.nan,
                     "max": frac.max() if len(frac) else math.nan,
                     "speedup_vs_dense (median)": dense.median() if len(dense) else math.nan,
                     "step median (ms)": g["step_median_s"].median() * 1e3,
                     "evals/s (median)": g["evals_per_s"].median(),
                     "compile (s)": g["compile_s"].median()})
    out += ["### Step cost relative to inference (matmuls: relative to dense)\n",
            table(pd.DataFrame(rows))]

    targets = _targets(frame)
    if len(targets):
        out += ["### Same-run ratios against the suite's targets\n",
                "Each ratio divides two timings from the same alternating rounds (or two "
                "memory sizes of the same compile). Memory: the estimator's compiled memory "
                "over that of inference on chunk_size x batch examples plus the parameters "
                "(the gradient it returns; float32).\n", table(targets)]

    # 2. step time vs num_directions and n_params (log-log with slopes)
    line = (["where"] if multi else []) + ["bench", "kernel"]
    link, s1 = _loglog(frame, "num_directions", "step_median_s", line,
                       ["n_params", "batch_size"], "num_directions (count)",
                       "step time (ms, median)", "Step time vs number of directions",
                       fig_dir, "kernels_time_vs_directions", scale=1e3)
    out.append(link or "_No kernel was measured at several num_directions._\n")
    link, s2 = _loglog(frame, "n_params", "step_median_s", line,
                       ["batch_size", "num_directions"], "parameters (count)",
                       "step time (ms, median)", "Step time vs number of parameters", fig_dir,
                       "kernels_time_vs_params", scale=1e3)
    out.append(link or "_No kernel was measured at several n_params._\n")
    slopes = pd.concat([s1, s2], ignore_index=True)
    if len(slopes):
        slopes = slopes[["x", *line, "configs", "median", "min", "max"]]
        out += ["### Fitted log-log slopes of step time\n",
                "Per kernel, the slope of log(step time) against log(x), fitted separately "
                "for every configuration of the other sizes (median, min, max over those). "
                "1: time grows in proportion; 0: flat (fixed overheads dominate). The figures "
                "show the best-covered configuration of each kernel.\n", table(slopes)]

    # 3. memory per kernel
    mem = frame.dropna(subset=["mem_bytes"])
    if len(mem):
        link, _ = _loglog(mem, "n_params", "mem_bytes", line, ["batch_size", "num_directions"],
                          "parameters (count)",
                          "compiled memory (MiB): argument + output + temp - alias",
                          "Memory vs number of parameters", fig_dir, "kernels_memory",
                          scale=1 / 2**20)
        order = ["bench", "kernel", "n_params", "batch_size", "num_directions"]
        largest = mem.sort_values(order, na_position="first").groupby(
            ["bench", "kernel"]).tail(1)
        largest = largest.assign(**{"memory (MiB)": largest["mem_bytes"] / 2**20})
        fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(largest) + 1.5))
        names = [f"{b}: {k} (n={fmt(n)}, batch={fmt(bs)}, dirs={fmt(d)})" for b, k, n, bs, d in
                 largest[["bench", "kernel", "n_params", "batch_size",
                          "num_directions"]].itertuples(index=False)]
        ax.barh(names, largest["memory (MiB)"])
        spread = largest["memory (MiB)"].max() / max(largest["memory (MiB)"].min(), 1e-12)
        if spread > 20:
            ax.set_xscale("log")
        ax.set_xlabel("compiled memory (MiB" + (", log scale)" if spread > 20 else ")"))
        ax.set_title("Memory per kernel at its largest measured model")
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(True, axis="x", which="both", alpha=0.3)
        out += ["### Memory\n", "From `memory_analysis()`: argument + output + temp - alias "
                "bytes of the compiled step (NaN where the backend reports none).\n",
                save(fig, fig_dir, "kernels_memory_bars", "Memory per kernel"), link]
    return "\n".join(x for x in out if x)
