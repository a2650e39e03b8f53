"""Report section for results/variants.csv: dense vs binarized vs pruned kernels and
trained nets (speedups measured in the same run, sizes, accuracy, crossover sparsity)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fold_jax import results
from fold_jax.report._common import fmt, save, table

__all__ = ["crossover", "section"]


def crossover(frame: pd.DataFrame) -> float:
    """Lowest sparsity from which BCSR stays faster than dense (NaN if never).

    Args:
        frame: BCSR kernel rows of one shape (``sparsity``, ``speedup_vs_dense``).

    Returns:
        The sparsity, or NaN.
    """
    f = frame.sort_values("sparsity")
    faster = (f["speedup_vs_dense"] > 1).to_numpy()
    if not faster.any():
        return math.nan
    tail = np.flatnonzero(~faster)
    start = 0 if not len(tail) else tail[-1] + 1
    return float(f["sparsity"].iloc[start]) if start < len(f) else math.nan


def _latest(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    if "timestamp_utc" in frame:
        frame = frame.sort_values("timestamp_utc")
    return frame.drop_duplicates(keys, keep="last")


def section(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """Markdown for the variants section (kernel tables and figures, trained variants).

    Args:
        frames: file stem -> DataFrame (the "variants" entry is used).
        fig_dir: the folder figures are saved in.

    Returns:
        The section's markdown (a note when there are no rows).
    """
    import matplotlib.pyplot as plt

    frame = frames.get("variants")
    if frame is None or not len(frame):
        return "No variants.csv rows yet (run `python -m fold_jax.bench --only variants`).\n"
    frame = _latest(frame, [c for c in results.key("variants") if c not in results.MACHINE_KEY])
    kern = frame[frame["row_kind"] == "kernel"]
    trained = frame[frame["row_kind"] == "train"]
    out = ["Kernels are one matmul (M x K) @ (K x N); `speedup_vs_dense` divides the f32 "
           "dense time of the same run by the row's time. `real_kernel` is True for a real "
           "packed or sparse kernel, False for a simulation (dense math with a mask or "
           "with {-1, +1} floats).\n"]

    cols = ["variant", "kernel", "real_kernel", "sparsity", "shape", "word_bits",
            "time_median_s", "speedup_vs_dense", "weight_bytes", "bits_per_weight",
            "nonzeros"]
    if len(kern):
        out += ["### Kernels\n", table(kern[cols].sort_values(["shape", "variant", "kernel",
                                                                "sparsity", "word_bits"]))]
        for shape, f in kern[kern["kernel"] == "bcsr"].groupby("shape"):
            c = crossover(f)
            slower = ", ".join(fmt(s) for s in f.loc[f["speedup_vs_dense"] <= 1, "sparsity"])
            out.append(f"- {shape}: BCSR (activations feature-major, as `sparse_apply` runs; "
                       f"`bcsr_row_major` adds two transposes) beats dense from sparsity "
                       f"{fmt(c)} on; slower than dense at {slower or 'no measured sparsity'}. "
                       f"BCSR is for inference: training keeps dense masked weights "
                       f"(gradients are dense-shaped).\n")
        sparse = kern[kern["variant"].isin(["dense", "pruned"])]
        if len(sparse):
            fig, ax = plt.subplots(figsize=(6, 4))
            for (shape, kernel), f in sparse.groupby(["shape", "kernel"]):
                if kernel == "dense":
                    ax.axhline(f["time_median_s"].iloc[0] * 1e3, ls="--", color="gray",
                               label=f"dense {shape}")
                    continue
                f = f.sort_values("sparsity")
                ax.plot(f["sparsity"], f["time_median_s"] * 1e3, "o-", label=f"{kernel} {shape}")
            ax.set_xscale("logit")
            ax.set_yscale("log")
            ax.set_xlabel("sparsity (fraction of zero weights, logit scale)")
            ax.set_ylabel("time per matmul (ms, log scale)")
            ax.set_title("Sparse vs masked vs dense matmul")
            ax.legend(fontsize=7)
            out.append(save(fig, fig_dir, "variants_time_vs_sparsity",
                            "time vs sparsity: dense, masked-dense, BCSR"))
            plt.close(fig)
        binar = kern[kern["kernel"].str.startswith(("xnor", "sign"))]
        if len(binar):
            fig, ax = plt.subplots(figsize=(6, 4))
            labels = [f"{r.kernel} u{int(r.word_bits)}" if r.word_bits else r.kernel
                      for r in binar.itertuples()]
            x = np.arange(len(binar))
            ax.bar(x, binar["speedup_vs_dense"], color="tab:blue")
            ax.set_xticks(x, [f"{lb}\n{s}" for lb, s in zip(labels, binar["shape"],
                                                             strict=True)],
                          rotation=60, ha="right", fontsize=6)
            ax.axhline(1.0, color="gray", ls="--", label="dense f32")
            ax.set_ylabel("speedup over f32 dense (x)")
            ax.set_title("Binarized matmul kernels")
            ax.legend()
            out.append(save(fig, fig_dir, "variants_binary_speedup",
                            "binarized kernels: speedup over dense"))
            plt.close(fig)

    if len(trained):
        tcols = ["variant", "method", "kernel", "real_kernel", "sparsity", "accuracy", "steps",
                 "train_s", "time_median_s", "speedup_vs_dense", "weight_bytes",
                 "bits_per_weight", "nonzeros"]
        out += ["### Trained on digits\n",
                "Accuracy is test accuracy; times are inference on the test split with the "
                "row's kernel; `speedup_vs_dense` is over the same net run dense in f32.\n",
                table(trained[tcols].sort_values(["variant", "method", "sparsity", "kernel"]))]
        pr = trained[(trained["variant"] == "pruned") & (trained["kernel"] == "bcsr")]
        fig, axes = plt.subplots(1, 2, figsize=(12, 5))
        ax = axes[0]
        if len(pr):
            pr = pr.sort_values("sparsity")
            ax.plot(pr["sparsity"], 100 * pr["accuracy"], "o-", label="gradual magnitude pruning")
        others = trained[trained["variant"] != "pruned"]
        colors = plt.get_cmap("tab10")
        for i, r in enumerate(others.itertuples()):
            ax.axhline(100 * r.accuracy, ls="--", lw=1, color=colors((i + 1) % 10),
                       label=f"{r.variant} {r.method} ({r.shape})")
        ax.set_xscale("logit")
        ax.set_xlabel("sparsity (logit scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Accuracy vs sparsity (digits)")
        ax.legend(fontsize=7)
        ax = axes[1]
        names = [f"{r.variant} {r.method} {r.kernel} {r.shape}" +
                 (f" s={fmt(r.sparsity)}" if r.variant == "pruned" else "")
                 for r in trained.itertuples()]
        x = np.arange(len(trained))
        ax.bar(x - 0.2, 100 * trained["accuracy"], 0.4, label="test accuracy (%)")
        ax2 = ax.twinx()
        ax2.bar(x + 0.2, trained["weight_bytes"] / 1024, 0.4, color="tab:orange",
                label="weights (KiB)")
        ax2.set_yscale("log")
        ax.set_xticks(x, names, fontsize=5, rotation=90)
        ax.set_ylabel("test accuracy (%)")
        ax2.set_ylabel("weight storage (KiB, log scale)")
        ax.set_title("Dense vs binarized vs pruned")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.set_ylim(0, 125)
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left", ncol=2)
        out.append(save(fig, fig_dir, "variants_accuracy",
                        "accuracy vs sparsity; dense vs binarized vs pruned"))
        plt.close(fig)
    zv = frame[frame["row_kind"] == "zo_variance"]
    if len(zv) and "est_mse" in zv:
        wide = zv.pivot_table(index="sparsity", columns="kernel",
                              values=["est_mse", "expected_mse"], aggfunc="last")
        wide.columns = [f"{a} ({b})" for a, b in wide.columns]
        if {"est_mse (zo_full)", "est_mse (zo_masked)"} <= set(wide.columns):
            wide["variance drop (x)"] = wide["est_mse (zo_full)"] / wide["est_mse (zo_masked)"]
        out += ["### Zeroth-order estimator on pruned nets\n",
                "Squared error of one antithetic gaussian pair on the surviving weights of a "
                "magnitude-pruned MLP (digits batch of 256), perturbing only survivors "
                "(zo_masked) or every weight (zo_full); expected_mse from the formula in "
                "`fold_jax.bench.suites.variants.zo_variance`.\n", table(wide, index=True)]
    return "\n".join(out)
