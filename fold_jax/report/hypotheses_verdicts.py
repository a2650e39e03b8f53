"""The verdict logic of the hypotheses report (:mod:`fold_jax.report.hypotheses`): one
verdict per claim and workload, computed from hypotheses.csv rows alone (the report trains
nothing), testable on a small frame (:func:`verdicts`).

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

import numpy as np
import pandas as pd

from fold_jax.report._common import bootstrap_median, fmt, interval_text, loglog_slope

__all__ = ["CLAIMS", "FLAT", "GROWS", "RSO_MARGIN", "SHORT", "WORKED_R2", "compare",
           "memory_slopes", "memory_verdict", "sequence_length", "verdicts"]

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


def memory_slopes(frame: pd.DataFrame, method: str, metric: str) -> tuple:
    """Per-seed log-log slopes of ``metric`` vs T (adding_memory rows) and their
    bootstrap median interval.

    Args:
        frame: hypotheses rows.
        method: the method.
        metric: "mem_bytes" or "step_s".

    Returns:
        :func:`fold_jax.report._common.bootstrap_median` of the slopes (NaNs and 0 seeds
        without rows).
    """
    sub = frame[(frame["workload"] == "adding_memory") & (frame["method"] == method)
                & (frame["metric"] == metric)]
    if sub.empty:
        return (math.nan, math.nan, math.nan, 0)
    T = sequence_length(sub["setting"])
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
    mem = {m: memory_slopes(frame, m, "mem_bytes") for m in ["bptt", "tbptt", *fo_methods]}
    time = {m: memory_slopes(frame, m, "step_s") for m in ["bptt", "tbptt", *fo_methods]}
    fo = min(fo_methods, key=lambda m: mem[m][0]) if fo_methods else None
    if fo is None:
        return {"backprop": "bptt", "forward_only": "-", "numbers": "-",
                "verdict": "no data", "flips": "-"}
    T = sequence_length(sub["setting"])
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


def sequence_length(settings: pd.Series) -> pd.Series:
    """The sequence lengths T of recurrent settings ("<cell>/T<length>").

    Args:
        settings: the settings.

    Returns:
        T as floats, aligned with ``settings``.
    """
    return settings.astype(str).str.extract(r"T(\d+)$")[0].astype(float)


def _by_length(frame: pd.DataFrame, workload: str) -> list[str]:
    """The settings of ``workload`` ("<cell>/T<length>"), shortest sequence first."""
    settings = frame.loc[frame["workload"] == workload, "setting"].dropna().astype(str)
    lengths = dict(zip(settings, sequence_length(settings), strict=True))
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
