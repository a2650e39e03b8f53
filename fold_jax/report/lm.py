"""Report section for results/lm_kernels.csv: the LM memory table and scale sweep.

A table of every configuration (model, T, B, K) and method: step time and compiled
memory relative to inference on the sequences the step evaluates (``time_ratio``,
``mem_ratio``), memory relative to one inference on B sequences (MeZO's claim), and
describe()'s fused / materialized leaf counts; rows that were not measured show their
reason. One figure: the two ratios against parameters, one line per method (median
over the sequence lengths and K of each model). ``headline`` is one sentence on the
fused step's goal (<= 1.2x inference time, <= 1.25x its memory, 0 materialized leaves).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fold_jax.report._common import fmt, method_styles, save, table

__all__ = ["headline", "section"]

FILE = "lm_kernels"
CONFIG = ["model", "n_params", "seq_len", "batch_size", "num_directions"]
SHOWN = {"method": "method", "evals": "evals", "time_ratio": "time / inference",
         "mem_ratio": "memory / inference", "mem_vs_single_inference": "memory / 1 inference",
         "step_median_s": "step s", "mem_bytes": "memory bytes", "materialized_leaves":
         "materialized", "fused_leaves": "fused", "goal": "goal / reason"}


def _frame(frames: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    frame = frames.get(FILE)
    return None if frame is None or frame.empty else frame


def headline(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """One line on the zo_fused goal over the measured configurations; "" without data.

    Args:
        frames: file stem -> DataFrame (the "lm_kernels" entry is used).
        fig_dir: the figure folder (unused: the headline draws nothing).

    Returns:
        The markdown line.
    """
    frame = _frame(frames)
    if frame is None:
        return ""
    fused = frame[(frame["method"] == "zo_fused") & frame["fits"].astype(bool)]
    if fused.empty:
        return "LM kernels: no fused zeroth-order step was measured.\n"
    met = int((fused["goal"] == "met").sum())
    return (f"LM kernels: the fused low-rank ES step met its goal in {met} of {len(fused)} "
            f"configurations ({fmt(fused['n_params'].min())}-{fmt(fused['n_params'].max())} "
            f"params): time {fmt(fused['time_ratio'].min())}-{fmt(fused['time_ratio'].max())}x "
            f"and compiled memory {fmt(fused['mem_ratio'].min())}-"
            f"{fmt(fused['mem_ratio'].max())}x of inference on K x B sequences, "
            f"{fmt(int(fused['materialized_leaves'].max()))} materialized leaves at most.\n")


def _figure(frame: pd.DataFrame, fig_dir: Path) -> str:
    import matplotlib.pyplot as plt

    measured = frame[frame["fits"].astype(bool) & (frame["method"] != "inference")]
    if measured.empty:
        return ""
    styles = method_styles(sorted(measured["method"].unique()))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, column, goal, what in ((axes[0], "time_ratio", 1.2, "step time"),
                                   (axes[1], "mem_ratio", 1.25, "compiled memory")):
        for method, g in measured.groupby("method"):
            g = g.groupby("n_params", as_index=False)[column].median().sort_values("n_params")
            ax.plot(g["n_params"], g[column], label=method, **styles[method])
        ax.axhline(goal, color="grey", ls="--", lw=1, label=f"fused goal {goal}x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters (log scale)")
        ax.set_ylabel(f"{what} / inference on the same sequences (log scale)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("Step time vs inference")
    axes[1].set_title("Compiled memory vs inference")
    axes[1].legend(fontsize=7)
    return save(fig, fig_dir, "lm_ratio_vs_params", "LM step cost relative to inference "
                "against parameters, per method") + "\n"


def section(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """Markdown for the LM section (table + figure); "" without data.

    Args:
        frames: file stem -> DataFrame (the "lm_kernels" entry is used).
        fig_dir: the folder figures are saved in.

    Returns:
        The section's markdown.
    """
    frame = _frame(frames)
    if frame is None:
        return ""
    frame = frame.assign(goal=[r if not f else g for f, g, r in zip(
        frame["fits"].astype(bool), frame["goal"].fillna(""), frame["reason"].fillna(""),
        strict=True)])
    parts = [headline(frames, fig_dir),
             "\nEach step is timed in alternating rounds with inference on the sequences it "
             "evaluates (evals x B) and compiled on its own; memory is compiled memory "
             "(argument + output + temp - alias bytes). Goal of zo_fused: <= 1.2x time, "
             "<= 1.25x memory, 0 materialized leaves.\n\n", _figure(frame, fig_dir)]
    for keys, g in frame.groupby(CONFIG, sort=True):
        title = ", ".join(f"{c} {fmt(v)}" for c, v in zip(CONFIG, keys, strict=True))
        shown = g[[c for c in SHOWN if c in g.columns]].rename(columns=SHOWN)
        parts.append(f"**{title}**\n\n" + table(shown) + "\n")
    return "".join(parts)
