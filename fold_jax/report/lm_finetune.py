"""Report section for results/lm_finetune.csv and lm_finetune_curves.csv: fine-tuning a
pretrained character LM forward-only vs backprop (issue 32, item 5).

Per arm (:data:`fold_jax.learn.suite_recipes.LM_FINETUNE_ARMS` order), over its final seeds:
the median test bits/char with a percentile-bootstrap 95% interval
(:func:`fold_jax.report._common.bootstrap_median`), the **fraction of Adam
fine-tuning's gain over zero-shot recovered** ``(zero_shot - arm) / (zero_shot -
adam_finetune)`` on the median test bits/char, evaluations and seconds to the stated
validation target (``target_bpc``; a miss is inf), step time and compiled step memory
(and its ratio to inference on the same B sequences). Arms that did not run say why.

The goal ``[[lm_finetune_goal]]`` of ``fold_jax/bench/goals.toml``: fold_jax's best
forward-only arm (library ``ours``, arms in ``exclude`` left out) reaches the ``peer``
arm's (MeZO's) median final validation bits/char at least ``seconds_ratio`` times sooner
in training seconds. Each seed's seconds (and evaluations) to that level are read off
its validation curve (inf when never reached); the best arm is the one with the fewest
median seconds; the ratio peer / ours of the median seconds gets a bootstrap interval
(seeds resampled on both sides): **met** when its low end is >= seconds_ratio, **missed**
when its high end is below, a **tie** otherwise. Whether ``zo_scratch`` (random init)
gets anywhere is stated beside it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from fold_jax.report._common import bootstrap_median, fmt, interval_text, method_styles, save, table

__all__ = ["FineTuneGoal", "goal_verdict", "goals", "headline", "section", "summary"]

FILE, CURVES = "lm_finetune", "lm_finetune_curves"
N_RESAMPLES = 2000


class FineTuneGoal(NamedTuple):
    """One ``[[lm_finetune_goal]]`` of ``fold_jax/bench/goals.toml``."""

    ours: str
    peer: str
    exclude: tuple[str, ...] = ()
    seconds_ratio: float = 2.0
    why: str = ""


def goals() -> list[FineTuneGoal]:
    """The ``[[lm_finetune_goal]]`` entries of the shipped goals file.

    Returns:
        The goals, in file order.

    Raises:
        ValueError: an entry without ``ours`` / ``peer``.
    """
    import tomllib
    from importlib import resources

    text = resources.files("fold_jax.bench").joinpath("goals.toml").read_text()
    out = []
    for i, g in enumerate(tomllib.loads(text).get("lm_finetune_goal", [])):
        if not all(isinstance(g.get(k), str) for k in ("ours", "peer")):
            raise ValueError(f"fold_jax/bench/goals.toml: lm_finetune_goal {i} lacks ours / "
                             f"peer")
        out.append(FineTuneGoal(g["ours"], g["peer"], tuple(g.get("exclude", ())),
                                float(g.get("seconds_ratio", 2.0)), g.get("why", "")))
    return out


def _frames(frames: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    rows, curves = frames.get(FILE), frames.get(CURVES)
    rows = None if rows is None or rows.empty else rows
    curves = None if curves is None or curves.empty else curves
    return rows, curves


def _order(arms) -> list[str]:
    from fold_jax.learn.suite_recipes import LM_FINETUNE_ARMS

    known = [a for a in LM_FINETUNE_ARMS if a in set(arms)]
    return known + sorted(set(arms) - set(known))


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-arm statistics of the final rows.

    Args:
        frame: lm_finetune.csv rows.

    Returns:
        One row per arm: library, seeds, test bits/char (median, interval), fraction of
        Adam's gain recovered, evaluations and seconds to target (medians), step time,
        memory, memory / inference, and the reason of an arm that did not run.
    """
    fits = frame["fits"].astype(bool)
    ran = frame[fits]
    zero = ran.loc[ran["arm"] == "zero_shot", "final_test_bpc"].median()
    adam = ran.loc[ran["arm"] == "adam_finetune", "final_test_bpc"].median()
    gain = zero - adam
    out = []
    for arm in _order(frame["arm"].unique()):
        g = frame[frame["arm"] == arm]
        if not g["fits"].astype(bool).any():
            out.append({"arm": arm, "library": g["library"].iloc[0], "seeds": len(g),
                        "reason": str(g["reason"].fillna("").iloc[0])})
            continue
        med, lo, hi, n = bootstrap_median(g["final_test_bpc"], n_resamples=N_RESAMPLES)
        out.append({"arm": arm, "library": g["library"].iloc[0], "seeds": n,
                    "test bpc": med, "test bpc 95%": interval_text(lo, hi, n),
                    "gain recovered": (zero - med) / gain if gain > 0 else math.nan,
                    "final val bpc": g["final_val_bpc"].median(),
                    "evals to target": g["evals_to_target"].median(),
                    "s to target": g["time_to_target_s"].median(),
                    "step s": g["step_mean_s"].median(), "memory bytes": g["mem_bytes"].median(),
                    "memory / inference": g["mem_ratio"].median(), "reason": ""})
    return pd.DataFrame(out)


def _to_level(curves: pd.DataFrame, arm: str, level: float) -> pd.DataFrame:
    """Per seed of ``arm``: evaluations and seconds until its validation curve first
    reaches ``level`` (inf when it never does)."""
    g = curves[(curves["arm"] == arm) & (curves["split"] == "val")]
    out = []
    for seed, c in g.sort_values("evals").groupby("seed"):
        hit = c[c["bits_per_char"] <= level]
        out.append({"seed": seed,
                    "seconds": float(hit["elapsed_s"].iloc[0]) if len(hit) else math.inf,
                    "evals": float(hit["evals"].iloc[0]) if len(hit) else math.inf})
    return pd.DataFrame(out, columns=["seed", "seconds", "evals"])


def _ratio_interval(peer: np.ndarray, ours: np.ndarray) -> tuple[float, float]:
    """Bootstrap 95% interval of median(peer) / median(ours), seeds resampled on both
    sides (quantiles without interpolation: inf stays inf); NaN with < 2 seeds a side."""
    if len(peer) < 2 or len(ours) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(0)
    p = np.median(peer[rng.integers(0, len(peer), (N_RESAMPLES, len(peer)))], axis=1)
    o = np.median(ours[rng.integers(0, len(ours), (N_RESAMPLES, len(ours)))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(np.isinf(o), 0.0, p / o)  # ours never got there: ratio 0
    low, high = np.quantile(r, [0.025, 0.975], method="inverted_cdf")
    return float(low), float(high)


def goal_verdict(rows: pd.DataFrame, curves: pd.DataFrame, goal: FineTuneGoal
                 ) -> dict[str, Any] | None:
    """Judge ``goal`` from the rows (module docstring).

    Args:
        rows: lm_finetune.csv rows.
        curves: lm_finetune_curves.csv rows.
        goal: the goal.

    Returns:
        ``{"verdict": "met" | "missed" | "tie", "arm", "level", "ratio", "low", "high",
        "ours_s", "peer_s", "ours_evals", "peer_evals"}``, or None when the peer or every
        candidate arm is missing.
    """
    ran = rows[rows["fits"].astype(bool)]
    peer_rows = ran[ran["arm"] == goal.peer]
    candidates = [a for a in _order(ran["arm"].unique()) if a not in goal.exclude
                  and a != goal.peer and (ran.loc[ran["arm"] == a, "library"] == goal.ours).all()]
    if peer_rows.empty or not candidates:
        return None
    level = float(peer_rows["final_val_bpc"].median())
    peer = _to_level(curves, goal.peer, level)
    best = None
    for arm in candidates:
        t = _to_level(curves, arm, level)
        if t.empty:
            continue
        key = (float(np.median(t["seconds"])), float(np.median(t["evals"])))
        if best is None or key < best[0]:
            best = (key, arm, t)
    if best is None or peer.empty:
        return None
    (ours_s, ours_e), arm, t = best
    peer_s = float(np.median(peer["seconds"]))
    ratio = 0.0 if math.isinf(ours_s) else peer_s / ours_s
    low, high = _ratio_interval(peer["seconds"].to_numpy(), t["seconds"].to_numpy())
    if math.isnan(low):
        verdict = "met" if ratio >= goal.seconds_ratio else "missed"
    else:
        verdict = ("met" if low >= goal.seconds_ratio else
                   "missed" if high < goal.seconds_ratio else "tie")
    return {"verdict": verdict, "arm": arm, "level": level, "ratio": ratio, "low": low,
            "high": high, "ours_s": ours_s, "peer_s": peer_s, "ours_evals": ours_e,
            "peer_evals": float(np.median(peer["evals"]))}


def _scratch_text(rows: pd.DataFrame, curves: pd.DataFrame | None) -> str:
    g = rows[(rows["arm"] == "zo_scratch") & rows["fits"].astype(bool)]
    if g.empty:
        return ""
    start = math.nan
    if curves is not None:
        c = curves[(curves["arm"] == "zo_scratch") & (curves["split"] == "val")
                   & (curves["evals"] == 0)]
        start = c["bits_per_char"].median()
    end, zs = g["final_val_bpc"].median(), g["zero_shot_val_bpc"].median()
    where = ("below the pretrained model's zero-shot" if end < zs else
             "still above the pretrained model's zero-shot")
    return (f"zo_scratch (es_lowrank's recipe from random init, same budget): validation "
            f"{fmt(start)} -> {fmt(end)} bits/char, {where} {fmt(zs)}.")


def headline(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """The goal's verdict, the forward-only arms' share of Adam's gain, and zo_scratch.

    Args:
        frames: file stem -> DataFrame ("lm_finetune", "lm_finetune_curves").
        fig_dir: unused.

    Returns:
        Markdown ("" without rows).
    """
    rows, curves = _frames(frames)
    if rows is None:
        return ""
    s = summary(rows)
    lines = []
    ran = s[s["reason"].fillna("") == ""] if "reason" in s else s
    parts = [f"{r['arm']} {fmt(r['gain recovered'])}" for _, r in ran.iterrows()
             if r["arm"] not in ("zero_shot", "adam_finetune")]
    if parts:
        profile = ", ".join(sorted(rows["profile"].dropna().unique()))
        lines.append(f"- LM fine-tuning ({profile} profile, {fmt(rows['n_params'].iloc[0])} "
                     f"params, {fmt(rows['budget_evals'].iloc[0])} evaluations each): share "
                     f"of Adam fine-tuning's test gain over zero-shot recovered: "
                     + "; ".join(parts) + ".")
    for goal in goals():
        v = None if curves is None else goal_verdict(rows, curves, goal)
        if v is None:
            lines.append(f"- Goal ({goal.why}): not judged, rows of {goal.peer} or of a "
                         f"{goal.ours} arm are missing.")
            continue
        interval = ("no interval" if math.isnan(v["low"]) else
                    f"95% [{fmt(v['low'])}, {fmt(v['high'])}]")
        level = f"{goal.peer}'s final validation {fmt(v['level'])} bits/char"
        if math.isinf(v["ours_s"]):  # the median seed of the best arm never got there
            lines.append(f"- Goal ({goal.why}): **{v['verdict']}**. No {goal.ours} arm "
                         f"reaches {level} within the budget in most seeds (best: "
                         f"{v['arm']}); {goal.peer} takes {fmt(v['peer_s'])} s, "
                         f"{fmt(v['peer_evals'])} evaluations.")
            continue
        lines.append(
            f"- Goal ({goal.why}): **{v['verdict']}**. {v['arm']} reaches {level} in "
            f"{fmt(v['ours_s'])} s vs {fmt(v['peer_s'])} s: {fmt(v['ratio'])}x sooner "
            f"({interval}; needs >= {fmt(goal.seconds_ratio)}x), evaluations "
            f"{fmt(v['ours_evals'])} vs {fmt(v['peer_evals'])}.")
    scratch = _scratch_text(rows, curves)
    if scratch:
        lines.append(f"- {scratch}")
    return "\n".join(lines) + "\n"


def _figure(curves: pd.DataFrame, rows: pd.DataFrame, fig_dir: Path) -> str:
    import matplotlib.pyplot as plt

    val = curves[curves["split"] == "val"]
    if val.empty:
        return ""
    arms = _order(val["arm"].unique())
    styles = method_styles(arms)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    target = rows["target_bpc"].median()
    for ax, x, label in ((axes[0], "evals", "loss evaluations"),
                         (axes[1], "elapsed_s", "training seconds")):
        for arm in arms:
            g = val[val["arm"] == arm]
            m = g.groupby("evals", as_index=False)[["elapsed_s", "bits_per_char"]].median()
            ax.plot(m[x], m["bits_per_char"], label=arm, **styles[arm])
        ax.axhline(target, color="grey", ls="--", lw=1, label="target")
        ax.set_xlabel(f"{label} (median over seeds)")
        ax.set_ylabel("Milton validation bits/char")
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle("Fine-tuning a pretrained LM: validation bits/char")
    return save(fig, fig_dir, "lm_finetune_curves", "validation bits per character "
                "against evaluations and seconds, per fine-tuning arm") + "\n"


def section(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """Markdown for the fine-tuning section (headline, table, figure); "" without rows.

    Args:
        frames: file stem -> DataFrame ("lm_finetune", "lm_finetune_curves").
        fig_dir: the folder figures are saved in.

    Returns:
        The markdown.
    """
    rows, curves = _frames(frames)
    if rows is None:
        return ""
    parts = [headline(frames, fig_dir),
             f"\nEvery arm: {fmt(rows['budget_evals'].iloc[0])} loss evaluations of "
             f"{fmt(rows['batch_size'].iloc[0])} sequences, tuned with the same number of "
             f"trials on validation; the target is {fmt(rows['target_bpc'].median())} "
             f"validation bits/char (zero-shot minus the profile's drop). Test bits/char "
             f"with 95% bootstrap intervals over seeds.\n\n", table(summary(rows)), "\n"]
    if curves is not None:
        parts.append(_figure(curves, rows, fig_dir))
    return "".join(parts)
