"""Report section for results/hypotheses.csv: "The essays' claims, tested".

A verdict table, one row per claim and workload: the claim in one line, the workload,
the best backprop setup (with its workaround) and the best forward-only setup (best by
the median over seeds), the deciding numbers with 95% bootstrap intervals over seeds
(:func:`fold_jax.report._common.bootstrap_median`), memory and time where they decide,
and a verdict in words with the condition under which it flips. Everything is computed
from the CSV rows (the report trains nothing); :func:`verdicts` is the logic, testable on
a small frame. Figures: accuracy vs depth by method; memory and step time vs T (log-log,
slopes printed); accuracy vs evaluations on the categorical and threshold nets.
:func:`headline` condenses the verdict table for the summary: one line per claim.

Verdict rules (the essay predicts forward-only is at least as good):

- a comparison of a metric (higher is better): **supported** when the best forward-only
  setup's interval lies above the best backprop setup's, **refuted** when it lies below,
  **mixed** when they overlap;
- recurrent memory: log-log slope of compiled step memory against T. **supported** when
  full BPTT grows (slope >= ``GROWS``), forward-only stays flat (slope <= ``FLAT``) and
  the workaround (truncated BPTT) does not; **mixed** when truncated BPTT is flat too;
  **refuted** when full BPTT does not grow or forward-only grows as much;
- linear regression (the essay says it worked): the relative-loss search's test R^2
  interval above ``WORKED_R2``: supported; below: refuted; else mixed;
- RSO on deep nets (it works, at a huge time): RSO's median accuracy at the deepest
  depth within ``RSO_MARGIN`` of Adam's: supported (time ratio shown); its interval
  entirely more than the margin below Adam's: refuted; else mixed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fold_jax.report._common import (
    bootstrap_median,
    fmt,
    interval_text,
    loglog_slope,
    method_styles,
    save,
    table,
)

__all__ = [
    "CLAIMS",
    "DEPTH_TARGET",
    "FLAT",
    "GROWS",
    "RSO_MARGIN",
    "WORKED_R2",
    "compare",
    "depth_to_target",
    "headline",
    "memory_verdict",
    "section",
    "verdicts",
]

GROWS = 0.5  # log-log slope of memory vs T that counts as growing with T
FLAT = 0.25  # ... and as flat
WORKED_R2 = 0.9  # test R^2 that counts as "it worked" on linear regression
RSO_MARGIN = 0.05  # accuracy within which RSO counts as working as well as Adam

CLAIMS: dict[str, str] = {
    "depth": "Deep non-linear stacks shrink the gradient; a loss-comparison method "
             "has no depth problem.",
    "rso": "RSO (per-weight sampling) shows it can work on deep nets, at a huge "
           "training time.",
    "nondiff_parts": "Every part must be differentiable (reparameterization, Gumbel); "
                     "a loss-comparison method trains them without tricks.",
    "nondiff_objective": "A loss-comparison method can optimize the metric itself "
                         "(0-1 error, exact match) instead of a surrogate.",
    "recurrent_memory": "BPTT must keep the sequence for the backward pass; a forward-only "
                        "relative loss suits recurrent nets (memory flat in T).",
    "recurrent_accuracy": "... and trains them (the adding problem, per sequence length).",
    "linear_regression": "The relative-loss search worked on plain linear regression.",
}
SHORT: dict[str, str] = {  # the claims' names in the summary
    "depth": "Depth", "rso": "RSO on deep nets", "nondiff_parts": "Non-differentiable parts",
    "nondiff_objective": "Non-differentiable objective", "recurrent_memory": "Recurrent memory",
    "recurrent_accuracy": "Recurrent accuracy", "linear_regression": "Linear regression"}
BACKPROP = ("adam", "bptt", "tbptt", "ste_adam", "gumbel_annealed", "st_gumbel",
            "reinforce", "adam_ce")


def _family(frame: pd.DataFrame) -> pd.Series:
    if "family" in frame.columns:
        return frame["family"].astype(str)
    return frame["method"].map(lambda m: "backprop" if m in BACKPROP else "forward_only")


def _values(frame: pd.DataFrame, workload: str, metric: str, setting: str | None = None
            ) -> dict[str, np.ndarray]:
    """method -> values over seeds of the final ``metric`` (largest step per seed)."""
    sub = frame[(frame["workload"] == workload) & (frame["metric"] == metric)]
    if setting is not None:
        sub = sub[sub["setting"] == setting]
    out = {}
    for method, g in sub.groupby("method"):
        g = g.sort_values("step").groupby("seed").tail(1)
        out[str(method)] = pd.to_numeric(g["value"], errors="coerce").to_numpy(float)
    return out


def _init(frame: pd.DataFrame, workload: str, setting: str | None, metric: str) -> float:
    """Median over methods and seeds of the curve's step-0 value (the initial metric)."""
    sub = frame[(frame["workload"] == workload) & (frame["metric"] == f"curve_{metric}")
                & (frame["step"] == 0)]
    if setting is not None:
        sub = sub[sub["setting"] == setting]
    return float(np.median(sub["value"])) if len(sub) else math.nan


def _best(values: dict[str, np.ndarray], higher: bool = True) -> tuple[str | None, tuple]:
    best, stats = None, (math.nan, math.nan, math.nan, 0)
    for method, v in values.items():
        s = bootstrap_median(v)
        if s[3] == 0:
            continue
        if best is None or (s[0] > stats[0] if higher else s[0] < stats[0]):
            best, stats = method, s
    return best, stats


def _ci(stats: tuple) -> str:
    median, low, high, n = stats
    return f"{fmt(median)} {interval_text(low, high, n)}"


def compare(backprop: dict[str, np.ndarray], forward: dict[str, np.ndarray], *,
            metric: str = "accuracy", init: float | None = None) -> dict[str, str]:
    """The best backprop and forward-only setups on a metric (higher is better) and the
    verdict on "forward-only is at least as good".

    Args:
        backprop: backprop method -> values over seeds.
        forward: forward-only method -> values over seeds.
        metric: the metric's name (for the text).
        init: the metric at initialisation; when neither best median is more than
            ``RSO_MARGIN`` above it, neither family learned and the verdict is mixed.

    Returns:
        A dict: backprop, forward_only (method names), numbers, verdict (supported /
        refuted / mixed / no data) and flips (the condition under which it flips).
    """
    bp, sb = _best(backprop)
    fo, sf = _best(forward)
    if bp is None or fo is None:
        return {"backprop": bp or "-", "forward_only": fo or "-", "numbers": "-",
                "verdict": "no data", "flips": "-"}
    numbers = f"{metric}: {bp} {_ci(sb)} vs {fo} {_ci(sf)}"
    _, bl, bh, _ = sb
    _, fl, fh, _ = sf
    if init is not None and max(sb[0], sf[0]) <= init + RSO_MARGIN:
        return {"backprop": bp, "forward_only": fo, "numbers": numbers, "verdict": "mixed",
                "flips": f"neither family learned (both within {RSO_MARGIN} of the initial "
                         f"{fmt(init)}): a longer budget or another setup decides"}
    if fl > bh:
        verdict, gap = "supported", fl - bh
        flips = (f"flips if {bp} gained more than {fmt(gap)} {metric} (its interval "
                 f"would reach {fo}'s)")
    elif bl > fh:
        verdict, gap = "refuted", bl - fh
        flips = (f"flips if {fo} gained more than {fmt(gap)} {metric} (e.g. a larger "
                 f"budget or tuned settings)")
    else:
        verdict = "mixed"
        flips = "intervals overlap: more seeds or a longer budget would separate them"
    return {"backprop": bp, "forward_only": fo, "numbers": numbers, "verdict": verdict,
            "flips": flips}


def _slopes(frame: pd.DataFrame, method: str, metric: str) -> tuple:
    """Per-seed log-log slopes of ``metric`` vs T (adding_memory rows) and their
    bootstrap median interval."""
    sub = frame[(frame["workload"] == "adding_memory") & (frame["method"] == method)
                & (frame["metric"] == metric)]
    if sub.empty:
        return (math.nan, math.nan, math.nan, 0)
    T = _length(sub["setting"])
    slopes = [loglog_slope(T[g.index], pd.to_numeric(g["value"]))
              for _, g in sub.groupby("seed")]
    return bootstrap_median(slopes)


def memory_verdict(frame: pd.DataFrame) -> dict[str, str]:
    """The recurrent memory claim from the adding_memory rows (see the module docstring).

    Args:
        frame: hypotheses rows.

    Returns:
        A dict as :func:`compare` returns.
    """
    sub = frame[frame["workload"] == "adding_memory"]
    if sub.empty or "bptt" not in set(sub["method"]):
        return {"backprop": "-", "forward_only": "-", "numbers": "-", "verdict": "no data",
                "flips": "-"}
    fam = _family(sub)
    fo_methods = sorted(set(sub["method"][fam == "forward_only"]))
    mem = {m: _slopes(frame, m, "mem_bytes") for m in ["bptt", "tbptt", *fo_methods]}
    time = {m: _slopes(frame, m, "step_s") for m in ["bptt", "tbptt", *fo_methods]}
    fo = min(fo_methods, key=lambda m: mem[m][0]) if fo_methods else None
    if fo is None:
        return {"backprop": "bptt", "forward_only": "-", "numbers": "-",
                "verdict": "no data", "flips": "-"}
    T = _length(sub["setting"])
    top = T.max()
    at_top = sub[(T == top) & (sub["metric"] == "mem_bytes")]
    top_mem = at_top.groupby("method")["value"].median()
    ratio = top_mem.get("bptt", math.nan) / top_mem.get(fo, math.nan)
    numbers = (f"memory slope: bptt {_ci(mem['bptt'])}, tbptt {_ci(mem['tbptt'])}, {fo} "
               f"{_ci(mem[fo])}; time slope: bptt {_ci(time['bptt'])}, {fo} "
               f"{_ci(time[fo])}; at T={int(top)} bptt/{fo} memory = {fmt(ratio)}x")
    b, t, f = mem["bptt"][0], mem["tbptt"][0], mem[fo][0]
    if b >= GROWS and f <= FLAT and not t <= FLAT:
        verdict = "supported"
        flips = "flips against truncated BPTT if its truncation is fixed (then flat too)"
    elif b >= GROWS and f <= FLAT:
        verdict = "mixed"
        flips = (f"supported against full BPTT only: truncated BPTT (the workaround) is "
                 f"flat too (slope {fmt(t)}); it flips to supported where the dependency "
                 f"is longer than any affordable truncation and tbptt fails")
    else:
        verdict = "refuted"
        flips = (f"flips if full BPTT memory grew (slope {fmt(b)} < {GROWS}) faster than "
                 f"forward-only's ({fmt(f)})")
    return {"backprop": "bptt (workaround: tbptt)", "forward_only": fo, "numbers": numbers,
            "verdict": verdict, "flips": flips}


def _split(values: dict[str, np.ndarray], frame: pd.DataFrame) -> tuple[dict, dict]:
    fam = dict(zip(frame["method"], _family(frame), strict=True))
    bp = {m: v for m, v in values.items() if fam.get(m) == "backprop"}
    fo = {m: v for m, v in values.items() if fam.get(m) == "forward_only"}
    return bp, fo


def _deepest(frame: pd.DataFrame) -> str | None:
    sub = frame[frame["workload"] == "mlp_depth"]
    if sub.empty:
        return None
    depth = sub["setting"].astype(str).str.extract(r"^(\w+)/d(\d+)$")
    depth.columns = ["act", "d"]
    depth["d"] = depth["d"].astype(float)
    # the deepest setting of the activation with the most vanishing (sigmoid first)
    for act in ("sigmoid", "tanh", "relu"):
        d = depth[depth["act"] == act]
        if len(d):
            return f"{act}/d{int(d['d'].max())}"
    return None


def _length(settings: pd.Series) -> pd.Series:
    """The sequence lengths T of recurrent settings ("<cell>/T<length>"), as floats."""
    return settings.astype(str).str.extract(r"T(\d+)$")[0].astype(float)


def _by_length(frame: pd.DataFrame, workload: str) -> list[str]:
    """The settings of ``workload`` ("<cell>/T<length>"), shortest sequence first."""
    settings = frame.loc[frame["workload"] == workload, "setting"].dropna().astype(str)
    lengths = dict(zip(settings, _length(settings), strict=True))
    return sorted(set(settings), key=lambda s: (lengths[s], s))


def verdicts(frame: pd.DataFrame) -> pd.DataFrame:
    """One verdict row per claim and workload, computed from hypotheses rows only.

    Args:
        frame: hypotheses.csv rows (one run).

    Returns:
        Columns claim, workload, best backprop, best forward-only, deciding numbers,
        verdict, flips when.
    """
    rows = []

    def add(claim: str, workload: str, result: dict[str, str]) -> None:
        rows.append({"claim": CLAIMS[claim], "workload": workload,
                     "best backprop": result["backprop"],
                     "best forward-only": result["forward_only"],
                     "deciding numbers (median [95% CI] over seeds)": result["numbers"],
                     "verdict": result["verdict"], "flips when": result["flips"]})

    deep = _deepest(frame)
    if deep is not None:
        act, d = deep.split("/")
        values = _values(frame, "mlp_depth", "test_accuracy", deep)
        bp, fo = _split(values, frame)
        relu = _values(frame, "mlp_depth", "test_accuracy", f"relu/{d}")
        if act != "relu" and "adam" in relu:  # the practitioners' workaround: ReLU
            bp["adam (relu)"] = relu["adam"]
        init = _init(frame, "mlp_depth", deep, "test_accuracy")
        result = compare(bp, fo, init=None if math.isnan(init) else init)
        depths = frame.loc[frame["setting"].astype(str).str.startswith(act + "/d"),
                           "setting"].str.extract(r"d(\d+)")[0].astype(int)
        shallow = f"{act}/d{int(depths.min())}"
        sv = _values(frame, "mlp_depth", "test_accuracy", shallow)
        drops = [f"{m} {fmt(float(np.median(sv[m])))} at {shallow} -> "
                 f"{fmt(float(np.median(values[m])))}"
                 for m in dict.fromkeys(("adam", result["forward_only"])) if m in sv
                 and m in values]
        result["numbers"] += (f" at {d} (initial {fmt(init)}); " + "; ".join(drops))
        add("depth", f"mlp_depth ({deep})", result)
        add("rso", f"mlp_depth ({deep})", _rso(frame, values, deep, init))
    for workload in ("threshold_net", "categorical"):
        values = _values(frame, workload, "test_accuracy")
        if values:
            add("nondiff_parts", workload, compare(*_split(values, frame)))
    for workload in ("zero_one", "multilabel_exact"):
        values = _values(frame, workload, "test_accuracy")
        if values:
            add("nondiff_objective", workload,
                compare(*_split(values, frame),
                        metric="test accuracy" if workload == "zero_one"
                        else "test exact match"))
    if (frame["workload"] == "adding_memory").any():
        add("recurrent_memory", "adding_memory", memory_verdict(frame))
    for setting in _by_length(frame, "adding_accuracy"):  # one verdict per T
        values = _values(frame, "adding_accuracy", "test_r2", setting)
        if values:
            add("recurrent_accuracy", f"adding_accuracy ({setting})",
                compare(*_split(values, frame), metric="test R^2"))
    values = _values(frame, "linreg", "test_r2")
    if values:
        add("linear_regression", "linreg", _linreg(values))
    return pd.DataFrame(rows)


def _rso(frame: pd.DataFrame, values: dict[str, np.ndarray], deep: str, init: float
         ) -> dict[str, str]:
    if "rso" not in values or "adam" not in values:
        return {"backprop": "adam", "forward_only": "rso", "numbers": "-",
                "verdict": "no data", "flips": "-"}
    sr, sa = bootstrap_median(values["rso"]), bootstrap_median(values["adam"])
    sub = frame[(frame["workload"] == "mlp_depth") & (frame["setting"] == deep)
                & (frame["metric"] == "test_accuracy")]
    secs = sub.groupby("method")["elapsed_s"].median() if "elapsed_s" in sub else {}
    evals = sub.groupby("method")["evals"].median()
    ratio = (secs.get("rso", math.nan) / secs.get("adam", math.nan)) if len(secs) else math.nan
    numbers = (f"test accuracy: adam {_ci(sa)} vs rso {_ci(sr)} (initial {fmt(init)}); "
               f"rso/adam training time {fmt(ratio)}x, evaluations "
               f"{fmt(evals.get('rso', math.nan))} vs {fmt(evals.get('adam', math.nan))}")
    learned = math.isnan(init) or sr[0] > init + RSO_MARGIN
    if learned and sr[0] >= sa[0] - RSO_MARGIN:
        verdict = "supported"
        flips = f"flips if rso fell more than {RSO_MARGIN} below adam (a shorter budget)"
    elif not learned:
        verdict = "refuted"
        flips = (f"rso did not learn (within {RSO_MARGIN} of the initial accuracy) in this "
                 f"budget ({fmt(ratio)}x adam's time); flips only with a longer budget"
                 + ("; adam did not learn either" if sa[0] <= init + RSO_MARGIN else ""))
    elif sr[2] < sa[1] - RSO_MARGIN:
        verdict = "refuted"
        flips = (f"at this budget; flips if rso's budget (x{fmt(ratio)} adam's time already) "
                 f"closed a gap of {fmt(sa[1] - RSO_MARGIN - sr[2])}")
    else:
        verdict = "mixed"
        flips = "intervals within the margin: more seeds or steps decide"
    return {"backprop": "adam", "forward_only": "rso", "numbers": numbers,
            "verdict": verdict, "flips": flips}


def _linreg(values: dict[str, np.ndarray]) -> dict[str, str]:
    if "relative_loss" not in values:
        return {"backprop": "adam", "forward_only": "relative_loss", "numbers": "-",
                "verdict": "no data", "flips": "-"}
    s = bootstrap_median(values["relative_loss"])
    others = ", ".join(f"{m} {_ci(bootstrap_median(v))}" for m, v in sorted(values.items())
                       if m != "relative_loss")
    numbers = f"test R^2: relative_loss {_ci(s)}; {others}"
    if s[1] >= WORKED_R2:
        verdict = "supported"
    elif s[2] < WORKED_R2:
        verdict = "refuted"
    else:
        verdict = "mixed"
    flips = ("a fixed radius r cannot get closer to the optimum than about r/2 in "
             "parameter space: it flips when r is large beside the precision the fit needs "
             "(GLD's shrinking radii and the (1+1)-ES's adapted step remove the floor)")
    return {"backprop": "adam", "forward_only": "relative_loss", "numbers": numbers,
            "verdict": verdict, "flips": flips}


# --------------------------------------------------------------------------- figures


def _depth_figure(frame: pd.DataFrame, fig_dir: Path) -> str:
    import matplotlib.pyplot as plt

    sub = frame[(frame["workload"] == "mlp_depth") & (frame["metric"] == "test_accuracy")]
    if sub.empty:
        return ""
    parts = sub["setting"].astype(str).str.extract(r"^(\w+)/d(\d+)$")
    sub = sub.assign(act=parts[0], depth=parts[1].astype(int))
    acts = sorted(sub["act"].unique())
    styles = method_styles(sub["method"])
    fig, axes = plt.subplots(1, len(acts), figsize=(4.5 * len(acts), 3.6), squeeze=False)
    for ax, act in zip(axes[0], acts, strict=True):
        for method, g in sub[sub["act"] == act].groupby("method"):
            stats = [(d, *bootstrap_median(v["value"])) for d, v in g.groupby("depth")]
            d, med, lo, hi, _ = (np.array(c, float) for c in zip(*stats, strict=True))
            ax.plot(d, med, label=method, **styles[method])
            ax.fill_between(d, np.where(np.isnan(lo), med, lo), np.where(np.isnan(hi), med, hi),
                            color=styles[method]["color"], alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden layers (log2)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"digits, {act}")
        ax.grid(True, alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    return save(fig, fig_dir, "hypotheses_depth", "test accuracy vs depth by method")


def _memory_figure(frame: pd.DataFrame, fig_dir: Path) -> str:
    import matplotlib.pyplot as plt

    sub = frame[frame["workload"] == "adding_memory"]
    if sub.empty:
        return ""
    sub = sub.assign(T=_length(sub["setting"]))
    styles = method_styles(sub["method"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, label in ((axes[0], "mem_bytes", "compiled step memory (bytes)"),
                              (axes[1], "step_s", "median step time (s)")):
        for method, g in sub[sub["metric"] == metric].groupby("method"):
            med = g.groupby("T")["value"].median()
            slope = _slopes(frame, method, metric)[0]
            ax.plot(med.index, med.values, label=f"{method} (slope {slope:.2f})",
                    **styles[method])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T (log2)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("memory vs T (GRU, adding problem)")
    axes[1].set_title("step time vs T")
    return save(fig, fig_dir, "hypotheses_recurrent", "memory and step time vs T, log-log")


def _curves_figure(frame: pd.DataFrame, fig_dir: Path) -> str:
    import matplotlib.pyplot as plt

    workloads = [w for w in ("categorical", "threshold_net")
                 if ((frame["workload"] == w) & (frame["metric"] == "curve_test_accuracy")).any()]
    if not workloads:
        return ""
    sub = frame[frame["metric"] == "curve_test_accuracy"]
    styles = method_styles(sub["method"])
    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 3.6),
                             squeeze=False)
    for ax, w in zip(axes[0], workloads, strict=True):
        for method, g in sub[sub["workload"] == w].groupby("method"):
            curve = g.groupby("step").agg(evals=("evals", "median"), acc=("value", "median"))
            curve = curve[curve["evals"] > 0]
            ax.plot(curve["evals"], curve["acc"], label=method, **styles[method])
        ax.set_xscale("log")
        ax.set_xlabel("loss evaluations (log)")
        ax.set_ylabel("test accuracy (median over seeds)")
        ax.set_title({"categorical": "categorical bottleneck", "threshold_net":
                      "hard-threshold (sign) net"}[w])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, fig_dir, "hypotheses_curves", "accuracy vs evaluations")


def _cost_table(frame: pd.DataFrame) -> str:
    sub = frame[(frame["workload"] == "adding_memory")
                & frame["metric"].isin(["mem_bytes", "step_s"])]
    if sub.empty:
        return ""
    sub = sub.assign(T=_length(sub["setting"]).astype(int))
    wide = sub.pivot_table(index="T", columns=["metric", "method"], values="value",
                           aggfunc="median")
    wide.columns = [f"{'MiB' if m == 'mem_bytes' else 'ms'} {meth}" for m, meth in wide.columns]
    for c in wide.columns:
        wide[c] = wide[c] / (2**20) if c.startswith("MiB") else wide[c] * 1e3
    return table(wide, index=True)


DEPTH_TARGET = 0.9  # test accuracy the depth table's time- and evaluations-to-target use


def depth_to_target(frame: pd.DataFrame, target: float = DEPTH_TARGET) -> pd.DataFrame:
    """Per (setting, method) of the depth workload: the median over seeds of the
    training seconds, steps and loss evaluations until the first evaluation whose test
    accuracy reaches ``target`` (from the stored ``curve_test_accuracy`` rows; inf for a
    seed that never reached it) and how many seeds reached it.

    Args:
        frame: the hypotheses.csv rows.
        target: the test accuracy to reach.

    Returns:
        Columns setting, method, reached ("k/n"), time (s), steps, evals; sorted by
        setting and time.
    """
    curves = frame[(frame["workload"] == "mlp_depth")
                   & (frame["metric"] == "curve_test_accuracy")]
    rows = []
    for (setting, method), g in curves.groupby(["setting", "method"]):
        firsts = []
        for _, run in g.groupby("seed"):
            hit = run[run["value"] >= target].sort_values("step")
            firsts.append((math.inf,) * 3 if hit.empty else
                          tuple(float(hit.iloc[0][c]) for c in ("elapsed_s", "step", "evals")))
        a = np.array(firsts, float)
        rows.append({"setting": setting, "method": method,
                     "reached": f"{int(np.isfinite(a[:, 0]).sum())}/{len(a)}",
                     "time (s)": float(np.median(a[:, 0])), "steps": float(np.median(a[:, 1])),
                     "evals": float(np.median(a[:, 2]))})
    out = pd.DataFrame(rows, columns=["setting", "method", "reached", "time (s)", "steps",
                                      "evals"])
    depth = out["setting"].str.extract(r"(\d+)$")[0].astype(float)  # "relu/d16" -> 16
    return (out.assign(_depth=depth).sort_values(["_depth", "setting", "time (s)"])
            .drop(columns="_depth").reset_index(drop=True))


def _count(seeds: pd.Series) -> str:
    low, high = int(seeds.min()), int(seeds.max())
    return str(low) if low == high else f"{low}-{high}"


def _prepare(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(trials, results)``: the tuning trials' rows and the others, numbers parsed."""
    frame = frame.copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    for c in ("evals", "step", "elapsed_s"):
        if c in frame.columns:
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
    is_trial = frame["metric"].astype(str).str.startswith("trial_")
    return frame[is_trial], frame[~is_trial]


def headline(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """The summary's finding: the verdict table (:func:`verdicts`) in one line per
    claim: per workload its verdict and the first of its deciding numbers (medians
    over seeds with 95% bootstrap intervals); "" without data.

    Args:
        frames: file stem -> DataFrame (the "hypotheses" entry is used).
        fig_dir: the figures folder (the section's figure is linked, not redrawn).

    Returns:
        Markdown: a list, then the depth figure's link.
    """
    frame = frames.get("hypotheses")
    if frame is None or frame.empty:
        return ""
    v = verdicts(_prepare(frame)[1])
    if v.empty:
        return "_No claim has rows to judge it._"
    numbers = "deciding numbers (median [95% CI] over seeds)"
    key = {text: k for k, text in CLAIMS.items()}
    items = []
    for claim, g in v.groupby("claim", sort=False):
        found = [f"**{r['verdict']}** on {r['workload']}: {r[numbers].split('; ')[0]}"
                 for r in g.to_dict("records")]
        items.append(f"- {SHORT[key[claim]]}: " + "; ".join(found))
    figure = Path(fig_dir) / "hypotheses_depth.png"
    return ("Is forward-only training at least as good as the best backprop setup where "
            "the essay says gradients fail? Verdicts, with medians over seeds and 95% "
            "bootstrap intervals:\n\n" + "\n".join(items)
            + ("\n\n![test accuracy vs depth by method](figures/hypotheses_depth.png)"
               if figure.exists() else ""))


def section(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """Markdown for "The essays' claims, tested"; "" without data.

    Args:
        frames: file stem -> DataFrame (the "hypotheses" entry is used).
        fig_dir: the folder figures are saved in.

    Returns:
        The section's markdown.
    """
    frame = frames.get("hypotheses")
    if frame is None or frame.empty:
        return ""
    trials, frame = _prepare(frame)
    v = verdicts(frame)
    seeds = frame.groupby(["workload", "method", "setting"])["seed"].nunique()
    parts = [
        "Each claim of the gradient-free essay, put where gradients are said to fail, with "
        "the workaround practitioners use beside the forward-only methods. "
        + _protocol(trials) + f" Fixed step budgets (each row's `steps` and `evals`), "
        f"{_count(seeds)} seeds per result; 95% "
        "percentile-bootstrap intervals of the median over seeds. Best = highest median. "
        "Verdict rules are in `fold_jax/report/hypotheses.py`.\n",
        table(v),
        _depth_figure(frame, fig_dir),
        f"Depth: training time, steps and loss evaluations to {DEPTH_TARGET:.0%} test "
        f"accuracy (medians over seeds; inf = not reached within the budget):\n\n"
        + table(depth_to_target(frame)),
        _memory_figure(frame, fig_dir),
        "Median compiled memory (MiB) and step time (ms) per T:\n\n" + _cost_table(frame),
        _curves_figure(frame, fig_dir),
        _tuning_table(trials),
    ]
    return "\n".join(p for p in parts if p)


def _protocol(trials: pd.DataFrame) -> str:
    """One sentence on how the rows' settings were chosen."""
    if trials.empty:
        return ("Settings fixed by hand (no tuning trials in these rows), the same for "
                "every seed and stated in each row's `hparams`.")
    n = sorted(pd.to_numeric(trials["n_trials"], errors="coerce").dropna().astype(int).unique())
    counts = "/".join(str(k) for k in n)
    return (f"Every method, backprop included, is tuned alike: {counts} settings drawn from "
            "its space (the recipe `hypotheses/<method>` of `fold_jax.recipes`, a Halton "
            "sequence), each trained on its own seed and scored by its final metric on the "
            "validation split; the best reruns on the seeds below, which alone read the test split "
            "(selected settings: each row's `hparams`; trials: the table at the end).")


def tuning_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (workload, setting, method): trials, the selected one and its validation
    metric, the range over trials, and skipped steps summed over the trials.

    Args:
        trials: the ``trial_*`` rows of hypotheses.csv.

    Returns:
        One row per tuned (workload, setting, method).
    """
    if trials.empty:
        return pd.DataFrame()
    val = trials[trials["metric"].astype(str).str.startswith("trial_val_")]
    skipped = trials[trials["metric"] == "trial_skipped_steps"]
    out = []
    for (w, s, m), g in val.groupby(["workload", "setting", "method"], sort=True):
        chosen = g[g["selected"].astype(str) == "True"]
        sk = skipped[(skipped["workload"] == w) & (skipped["setting"] == s)
                     & (skipped["method"] == m)]
        out.append({"workload": w, "setting": s, "method": m, "trials": len(g),
                    "metric": str(g["metric"].iloc[0]).removeprefix("trial_"),
                    "selected trial": int(chosen["trial"].iloc[0]) if len(chosen) else -1,
                    "selected val": float(chosen["value"].iloc[0]) if len(chosen) else np.nan,
                    "worst val": float(g["value"].min()),
                    "skipped steps": int(pd.to_numeric(sk["value"]).sum())})
    return pd.DataFrame(out)


def _tuning_table(trials: pd.DataFrame) -> str:
    summary = tuning_summary(trials)
    if summary.empty:
        return ""
    return ("Tuning: per method and setting, the selected trial (highest final "
            "validation metric) and the worst trial's, i.e. what tuning bought:\n\n"
            + table(summary))
