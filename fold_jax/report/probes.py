"""Report section for results/probes.csv: vanishing gradients, heads, folding.

``section(frames, fig_dir) -> str`` (markdown). Numbers are read from the CSV rows
(mean over rows that share everything but the machine, if several machines wrote
them). The section is a pure view: the 2-D region map of a ReLU net trained on spirals
is drawn from ``region_maps.csv`` (cells run-length encoded, :func:`encode_runs` /
:func:`decode_runs`) and its ``probe == "region_map"`` rows in probes.csv, both written
by the probe job ``fold_jax.bench.suites.probes.region_map``; nothing is trained here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["decode_points", "decode_runs", "encode_points", "encode_runs", "section"]
_COLORS = {"sigmoid": "tab:red", "tanh": "tab:orange", "relu": "tab:blue", "abs": "tab:green"}


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x == 0:
        return "0"
    if float(x).is_integer() and abs(x) < 1e7:
        return str(int(x))
    if abs(x) >= 1e4 or abs(x) < 1e-2:
        return f"{x:.1e}"
    return f"{x:.3g}"


def _table(frame: pd.DataFrame, fmt=_fmt) -> str:
    frame = frame.reset_index()
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(fmt(v) if isinstance(v, float) else str(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _pivot(df, index, columns, query=None):
    if query is not None:
        df = df.query(query)
    if df.empty:
        return pd.DataFrame()
    return df.pivot_table(index=index, columns=columns, values="value", aggfunc="mean",
                          dropna=False).dropna(how="all")


def _save(fig, fig_dir: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(fig_dir / f"{name}.png", dpi=110)
    return f"![{name}](figures/{name}.png)"


# ------------------------------------------------------------------------- vanishing


def _vanishing(df: pd.DataFrame, fig_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    v = df[df.probe == "vanishing"]
    if v.empty:
        return []
    ratio = _pivot(v, ["activation", "depth"], "stage", "metric == 'ratio_first_last'")
    acc = _pivot(v, ["activation", "depth"], "stage", "metric == 'test_accuracy'")
    zero = _pivot(v, ["activation", "depth"], "stage", "metric == 'zero_layers_f32'")
    first = _pivot(v, ["activation", "depth"], "stage", "metric == 'grad_norm' and layer == 0")
    table = pd.DataFrame(index=ratio.index)
    if "init" in first:
        table["first-layer norm init"] = first["init"]
    for stage in ("init", "trained"):
        if stage in ratio:
            table[f"ratio {stage}"] = ratio[stage]
        if stage in acc:
            table[f"test acc {stage}"] = acc[stage]
        if stage in zero:
            table[f"f32 zero layers {stage}"] = zero[stage]
    out = ["### Vanishing gradients", "",
           "Per-layer gradient norms ||dL/dW_i|| (Frobenius, dense kernels) of an MLP of "
           "width 64 on a fixed batch of 256 digits, standard flax init (LeCun normal, zero "
           "bias), computed in float64; *ratio* = first layer / last (output) layer. "
           "*trained*: after a short Adam (lr 1e-3) run. *f32 zero layers*: layers whose "
           "float32 gradient is exactly 0 (underflow).", ""]
    lines = []
    for act in ("sigmoid", "tanh", "relu", "abs"):
        if act not in ratio.index.get_level_values(0):
            continue
        r = ratio.loc[act]
        parts = [f"depth {int(d)}: {_fmt(r.loc[d, 'init'])}" for d in r.index if "init" in r]
        if "trained" in r:
            parts_t = [f"depth {int(d)}: {_fmt(r.loc[d, 'trained'])}" for d in r.index
                       if not math.isnan(r.loc[d, "trained"])]
            if parts_t:
                parts.append("trained " + ", ".join(parts_t))
        lines.append(f"- **{act}** first/last ratio at init " + ", ".join(parts))
    if "relu" in first.index.get_level_values(0) and "init" in first:
        g = first.loc["relu", "init"].dropna()
        lines.append(f"- The ratio stays O(1) for tanh, relu and abs, but under LeCun (not He) "
                     f"init ReLU's gradient shrinks in *every* layer alike: first-layer norm "
                     f"{_fmt(g.iloc[0])} at depth {int(g.index[0])}, {_fmt(g.iloc[-1])} at "
                     f"depth {int(g.index[-1])} (the signal loses ~sqrt(2) per layer).")
    out += [*lines, "", _table(table), ""]

    fig, ax = plt.subplots(figsize=(6, 4))
    for act in ratio.index.get_level_values(0).unique():
        r = ratio.loc[act]
        for stage, style in (("init", "-o"), ("trained", "--s")):
            if stage in r and r[stage].notna().any():
                s = r[stage].dropna()
                ax.plot(s.index, s.clip(lower=1e-30), style, color=_COLORS.get(act),
                        label=f"{act} ({stage})")
    ax.set(xscale="log", yscale="log", xlabel="depth (hidden layers)",
           ylabel="||grad W_first|| / ||grad W_last||",
           title="Gradient reaching the first layer")
    ax.set_xticks(sorted(ratio.index.get_level_values(1).unique()))
    ax.xaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
    ax.axhline(1.0, color="gray", lw=0.5)
    ax.legend(fontsize=7, ncol=2)
    out += [_save(fig, fig_dir, "probes_grad_ratio"), ""]

    norms = v[(v.metric == "grad_norm")]
    if not norms.empty:
        depth = int(norms.depth.max())
        fig, ax = plt.subplots(figsize=(6, 4))
        for (act, stage), g in norms[norms.depth == depth].groupby(["activation", "stage"]):
            g = g.groupby("layer").value.mean()
            ax.plot(g.index, g.clip(lower=1e-30), "-" if stage == "init" else "--",
                    color=_COLORS.get(act), label=f"{act} ({stage})")
        ax.set(yscale="log", xlabel="layer index (0 = input side)",
               ylabel="||dL/dW_i|| (float64)", title=f"Per-layer gradient norms, depth {depth}")
        ax.legend(fontsize=7, ncol=2)
        out += [_save(fig, fig_dir, "probes_layer_norms"), ""]
    return out


def _zo(df: pd.DataFrame, fig_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    z = df[df.probe == "zo_cosine"]
    out = []
    if not z.empty:
        overall = _pivot(z, ["activation", "depth"], "method", "metric == 'cosine_all'")
        cos = z[z.metric == "cosine"].groupby(["activation", "depth", "method", "layer"])
        cos = cos.value.mean().reset_index()
        first = cos.sort_values("layer").groupby(["activation", "depth", "method"]).value
        edge = pd.DataFrame({"first layer": first.first(), "last layer": first.last()})
        edge = edge.unstack("method")
        edge.columns = [f"{m}: {where}" for where, m in edge.columns]
        expected = _pivot(z, ["activation", "depth"], "method",
                          "metric == 'expected_cosine_all'")
        if not expected.empty:
            expected.columns = [f"{c} (iid theory)" for c in expected.columns]
            overall = overall.join(expected)
        out += ["### Zeroth-order estimates per layer", "",
                "Cosine between a forward-only gradient estimate and backprop's gradient at "
                "init (mean over 4 keys; 64 loss evaluations for zo, 64 tangents for the "
                "forward gradient). ZO noise is isotropic over all parameters, so a layer's "
                "cosine scales with its share of the gradient norm: where backprop's "
                "gradient vanishes, the estimate of that layer is pure noise. With P "
                "independent isotropic directions and d parameters the expected overall "
                "cosine is about sqrt(P / (P + d + 1)) (P = 32 antithetic pairs for "
                "zo_gaussian, 64 tangents for forward_gradient): forward-only estimates "
                "are dimension-limited everywhere, and vanish per layer where backprop's "
                "gradient does.", "",
                "Overall cosine:", "", _table(overall), "",
                "First vs last layer cosine:", "", _table(edge), ""]
        fig, ax = plt.subplots(figsize=(6, 4))
        for (act, depth, method), g in cos.groupby(["activation", "depth", "method"]):
            if method != "zo_gaussian" or depth != cos.depth.max():
                continue
            ax.plot(g.layer, g.value, "-o", color=_COLORS.get(act), label=f"{act} cosine")
            share = z.query("metric == 'grad_share' and activation == @act and depth == @depth "
                            "and method == @method").groupby("layer").value.mean()
            ax.plot(share.index, share, ":", color=_COLORS.get(act), label=f"{act} grad share")
        ax.set(xlabel="layer index", ylabel="cosine / share of ||grad||",
               title=f"zo_gaussian per-layer cosine, depth {int(cos.depth.max())}")
        ax.legend(fontsize=7)
        out += [_save(fig, fig_dir, "probes_zo_cosine"), ""]
    d = df[df.probe == "deep_sigmoid_training"]
    if not d.empty:
        t = _pivot(d, ["activation", "method"], "metric")
        cols = [c for c in ("init_test_accuracy", "test_accuracy", "best_test_accuracy",
                            "train_loss", "steps", "evals", "elapsed_s", "max_steps",
                            "capped")
                if c in t]
        t = t[cols]
        trained = t[t["best_test_accuracy"] >= 0.5] if "best_test_accuracy" in t else t
        names = ", ".join(f"{a}/{m}" for a, m in trained.index) or "none"
        if "best_test_accuracy" in t:
            top = t["best_test_accuracy"].idxmax()
            names += (f" (highest best test accuracy: {top[0]}/{top[1]}, "
                      f"{_fmt(t['best_test_accuracy'].max())})")
        out += ["### Who trains a depth-16 sigmoid net on digits", "",
                "Fixed steps per method (Adam 10x the estimators'; compile excluded), "
                "width 64, batch 128. "
                f"Reaching >= 50% test accuracy: **{names}**.", "", _table(t), ""]
    return out


# ----------------------------------------------------------------------------- heads


def _heads(df: pd.DataFrame, fig_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    h = df[df.probe == "heads"]
    th = df[df.probe == "threshold"]
    out = []
    if not h.empty:
        t = _pivot(h, ["task", "method"], "metric")
        out += ["### Heads", "",
                "Same MLP (64-64 ReLU), Adam 1e-3, same steps. binary: sigmoid; multiclass: "
                "softmax; multilabel (digit_attributes: even, >=5, prime, closed loop): one "
                "sigmoid per label, or a softmax trained on the labels normalised to a "
                "distribution (a digit 1 has no label: uniform target) and decided by a "
                "threshold on the softmax probabilities (0.5 below), top-1/top-2, or top-k "
                "with the true k (an oracle). test_accuracy of a multilabel head is exact "
                "match.", "", _table(t), ""]
    if not th.empty:
        t = _pivot(th, ["method", "threshold"], "metric", "method != 'truth'")
        truth = th.query("method == 'truth'").value.mean()
        sig = t.loc["sigmoid"] if "sigmoid" in t.index else None
        soft = t.loc["softmax"] if "softmax" in t.index else None
        if sig is not None and soft is not None:
            gap = (sig["exact_match"] - soft["exact_match"])
            out += [f"Across thresholds 0.3-0.9 the sigmoid head's exact match is "
                    f"{_fmt(sig['exact_match'].min())}-{_fmt(sig['exact_match'].max())} "
                    f"(micro-F1 {_fmt(sig['micro_f1'].min())}-{_fmt(sig['micro_f1'].max())}); "
                    f"the softmax head's is {_fmt(soft['exact_match'].min())}-"
                    f"{_fmt(soft['exact_match'].max())} (micro-F1 "
                    f"{_fmt(soft['micro_f1'].min())}-{_fmt(soft['micro_f1'].max())}), "
                    f"{_fmt(gap.min())} to {_fmt(gap.max())} lower. Softmax probabilities "
                    f"sum to one, so above a threshold t at most floor(1/t) labels can be on: "
                    f"at t >= 0.5 it predicts <= 1 label where the truth has "
                    f"{_fmt(truth)} on average.", "", _table(t), ""]
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.5))
        for ax, metric, label in zip(axes, ("exact_match", "micro_f1", "labels_on"),
                                     ("exact-match accuracy", "micro-F1",
                                      "labels predicted on (mean)"), strict=True):
            for method, style in (("sigmoid", "-o"), ("softmax", "--s")):
                if method in t.index and metric in t:
                    s = t.loc[method][metric]
                    ax.plot(s.index, s, style, label=f"{method} head")
            if metric == "labels_on":
                ax.axhline(truth, color="gray", ls=":", label="truth")
            ax.set(xlabel="threshold", ylabel=label)
            ax.legend(fontsize=7)
        fig.suptitle("digit_attributes: per-label sigmoid vs softmax over labels")
        out += [_save(fig, fig_dir, "probes_thresholds"), ""]
    return out


# --------------------------------------------------------------------------- regions


def encode_runs(values) -> str:
    """Run-length code of a 1-D sequence of integers: ``"value*count"`` tokens.

    Args:
        values: the integers (e.g. one row of a grid).

    Returns:
        The tokens, space separated (``"3*4 1*2"`` for 3 3 3 3 1 1).
    """
    values = np.asarray(values).ravel()
    if not len(values):
        return ""
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    counts = np.diff(np.r_[starts, len(values)])
    return " ".join(f"{int(values[s])}*{int(c)}" for s, c in zip(starts, counts, strict=True))


def decode_runs(text: str) -> np.ndarray:
    """The sequence :func:`encode_runs` coded.

    Args:
        text: ``"value*count"`` tokens, space separated.

    Returns:
        The integers, a 1-D int64 array.
    """
    pairs = [t.split("*") for t in str(text).split()]
    return np.repeat(np.array([int(v) for v, _ in pairs], np.int64),
                     [int(c) for _, c in pairs]) if pairs else np.zeros(0, np.int64)


def encode_points(points, decimals: int = 3) -> str:
    """2-D points as ``"x1,x2"`` pairs, space separated.

    Args:
        points: (n, 2) coordinates.
        decimals: digits kept after the point.

    Returns:
        The text.
    """
    return " ".join(f"{a:.{decimals}f},{b:.{decimals}f}" for a, b in np.asarray(points))


def decode_points(text: str) -> np.ndarray:
    """The points :func:`encode_points` wrote.

    Args:
        text: ``"x1,x2"`` pairs, space separated.

    Returns:
        An (n, 2) float array.
    """
    return np.array([[float(v) for v in t.split(",")] for t in str(text).split()],
                    np.float64).reshape(-1, 2)


def _grid(rows: pd.DataFrame, kind: str) -> np.ndarray | None:
    g = rows[rows["grid"] == kind].sort_values("row")
    if g.empty:
        return None
    return np.stack([decode_runs(v) for v in g["values"]])


def _region_map(df: pd.DataFrame, maps: pd.DataFrame | None, fig_dir: Path) -> list[str]:
    """The region-map figure from stored rows (``[]`` without them)."""
    import matplotlib.pyplot as plt

    if maps is None or maps.empty:
        return ["_No region map stored (region_maps.csv): run `python -m fold_jax.bench --only "
                "probes -k region_map`._", ""]
    name = sorted(maps["map"].astype(str).unique())[0]
    rows = maps[maps["map"].astype(str) == name]
    patterns, classes = _grid(rows, "pattern"), _grid(rows, "class")
    if patterns is None:
        return []
    box = float(pd.to_numeric(rows["box"]).iloc[0])
    res = patterns.shape[0]
    summary = df[(df.probe == "region_map")]
    info = summary.groupby("metric").value.mean().to_dict() if len(summary) else {}
    first = summary.iloc[0] if len(summary) else {}
    depth, width = first.get("depth", math.nan), first.get("width", math.nan)
    n_patterns = int(info.get("patterns", len(np.unique(patterns))))
    rng = np.random.default_rng(0)
    colors = rng.permutation(int(patterns.max()) + 1)[patterns]
    extent = (-box, box, -box, box)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(colors, origin="lower", extent=extent, cmap="tab20", interpolation="nearest")
    if classes is not None:
        s = np.linspace(-box, box, res)
        xx, yy = np.meshgrid(s, s)
        ax.contour(xx, yy, classes.astype(float), levels=[0.5], colors="black",
                   linewidths=1.5)
    for label, marker in ((0, "o"), (1, "^")):
        pts = rows[rows["grid"] == f"points_{label}"]
        if len(pts):
            xy = np.concatenate([decode_points(v) for v in pts["values"]])
            ax.scatter(xy[:, 0], xy[:, 1], s=4, marker=marker, c="white", edgecolors="black",
                       linewidths=0.2, label=f"arm {label}")
    ax.set(xlabel="x1 (standardized)", ylabel="x2 (standardized)",
           title=f"Activation regions, ReLU {_fmt(depth)}x{_fmt(width)} on spirals "
                 f"({n_patterns} patterns)")
    ax.legend(loc="upper right", fontsize=7)
    link = _save(fig, fig_dir, "probes_spirals_regions")
    return [f"Region map: a ReLU net of depth {_fmt(depth)}, width {_fmt(width)} trained on "
            f"spirals ({_fmt(info.get('steps', math.nan))} Adam steps, lr "
            f"{_fmt(info.get('learning_rate', math.nan))}, seed 0, by the probe job "
            f"`region_map`) reaches test accuracy {_fmt(info.get('test_accuracy', math.nan))};"
            f" on a {res}x{res} grid over [-{box:g}, {box:g}]^2 it shows {n_patterns} "
            f"activation patterns in {_fmt(info.get('components', math.nan))} connected "
            f"pieces (a lower bound: regions thinner than a cell are missed). Colours: "
            f"regions; black: the decision boundary.", "", link, ""]


def _regions(df: pd.DataFrame, fig_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    out = []
    r = df[df.probe.isin(["regions_line", "regions_grid"])]
    tent = df[df.probe == "tent"]
    if not tent.empty:
        t = _pivot(tent, ["activation", "depth"], "metric")
        exact = bool(((t["pieces"] == t["expected"]) & (t["regions"] == t["expected"])).all())
        out += ["### Folding: linear regions", "",
                "Constructive case: L tent maps x -> 1 - |2x - 1| stacked as a fold_jax MLP "
                "(abs: 1 unit per layer; relu: tent(x) = relu(2x) - relu(4x - 2), 2 units). "
                f"Exact count on [0, 1] equals 2^L for every L measured: **{exact}** "
                f"(L = {int(t.index.get_level_values(1).min())}.."
                f"{int(t.index.get_level_values(1).max())}).", ""]
    if r.empty:
        return out
    if tent.empty:
        out += ["### Folding: linear regions", ""]
    init = r[r.stage == "init"]
    line = _pivot(init, ["activation", "depth"], "width", "metric == 'regions'")
    grid = _pivot(init, ["activation", "depth"], "width", "metric == 'patterns'")
    out += ["Random nets at init (flax default: LeCun normal kernels, zero biases, so every "
            "region is a cone from the origin). *Line*: exact activation regions met by a "
            "chord of [-2, 2]^2 (mean over 4 chords off the origin; breakpoints tracked "
            "layer by layer); *grid*: distinct activation patterns on a grid over "
            "[-2.5, 2.5]^2 (a lower bound: regions thinner than a cell are missed). An "
            "activation region is convex (an intersection of half-spaces), so a pattern is "
            "one region; more 8-connected *components* than patterns measures grid "
            "aliasing, not extra regions. Columns: width.", "",
            "Line (exact):", "", _table(line), "", "Grid patterns:", "", _table(grid), ""]
    if not line.empty:
        grow = {act: line.loc[act] for act in line.index.get_level_values(0).unique()}
        notes = []
        for act, g in grow.items():
            w = g.columns.max()
            d0, d1 = g.index.min(), g.index.max()
            notes.append(f"{act} width {int(w)}: {_fmt(g.loc[d0, w])} regions at depth "
                         f"{int(d0)} -> {_fmt(g.loc[d1, w])} at depth {int(d1)}, x"
                         f"{_fmt(g.loc[d1, w] / g.loc[d0, w])} for x{_fmt(d1 / d0)} depth "
                         f"(2^depth would give x{_fmt(2.0 ** (d1 - d0))})")
        out += ["Random nets gain regions at most about linearly with depth (i.e. with the "
                "number of units), far below the 2^L a constructed net reaches: "
                + "; ".join(notes) + ".", ""]
    trained = r[r.stage == "trained"]
    if not trained.empty:
        t = _pivot(trained, ["activation", "depth", "method"], "metric")
        base = _pivot(init.query("width == 32"), ["activation", "depth"], "metric")
        done = {(a, d) for a, d, _ in t.index}
        base = base[[i in done for i in base.index]] if not base.empty else base
        out += ["After training on spirals (width 32; Adam lr 1e-2 vs zeroth-order "
                "zo_gaussian, same steps); init counts of the same nets for comparison:", "",
                _table(t), "", _table(base), ""]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (act, width), g in init[init.metric == "regions"].groupby(["activation", "width"]):
        g = g.groupby("depth").value.mean()
        ax.plot(g.index, g, "-o", color=_COLORS.get(act), alpha=0.4 + 0.6 * width / 64,
                label=f"{act}, width {int(width)} (init)")
    if not trained.empty:
        for (act, method), g in trained[trained.metric == "regions"].groupby(
                ["activation", "method"]):
            g = g.groupby("depth").value.mean()
            ax.plot(g.index, g, "s--" if method.startswith("adam") else "^:",
                    color=_COLORS.get(act), label=f"{act}, width 32, trained {method}")
    if not tent.empty:
        g = tent[tent.metric == "pieces"].groupby("depth").value.mean()
        ax.plot(g.index, g, "k-", lw=2, label="tent-map net (2^L)")
    ax.set(yscale="log", xlabel="depth (hidden layers)",
           ylabel="linear regions along a segment (exact)",
           title="Regions vs depth")
    ax.legend(fontsize=6, ncol=2)
    out += [_save(fig, fig_dir, "probes_regions_depth"), ""]
    return out


def section(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """Markdown for the probes: measured ratios, head comparisons, region counts.

    Args:
        frames: file stem -> DataFrame (the "probes" and "region_maps" entries are used).
        fig_dir: the folder figures are saved in.

    Returns:
        The section's markdown ("" without data).
    """
    df = frames.get("probes")
    if df is None or df.empty:
        return ""
    df = df.copy()
    for column in ("depth", "width", "layer", "threshold", "value"):
        if column in df:
            df[column] = pd.to_numeric(df[column], errors="coerce")
    fig_dir = Path(fig_dir)
    parts = _vanishing(df, fig_dir) + _zo(df, fig_dir) + _heads(df, fig_dir)
    parts += _regions(df, fig_dir)
    if not df[df.probe.isin(["regions_line", "regions_grid", "tent", "region_map"])].empty:
        parts += _region_map(df, frames.get("region_maps"), fig_dir)
    return "\n".join(parts)
