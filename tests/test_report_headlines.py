"""The summary's headlines of the kernels, scaling, bbob and hypotheses sections: each
states its findings computed from the rows (numbers and intervals), tested on the small
synthetic frames the sections' own tests build."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_report import KERNEL_KEY, _kernels
from test_report_pages import _scaling_rows
from test_suite_bbob import _frame as _bbob_frame
from test_suite_hypotheses import HIGH, LOW, _memory_frame, _rows

from fold_jax import report, results
from fold_jax.report import _common, bbob, hypotheses, kernels, scaling

# ------------------------------------------------------------------ shared statistics


def test_ratio_spread_is_the_ratio_with_each_time_at_its_quartiles():
    assert _common.ratio_spread(2.0, 0.0, 1.0, 0.0) == (2.0, 2.0)  # no spread, no range
    low, high = _common.ratio_spread(2.0, 0.2, 1.0, 0.1)
    assert low == pytest.approx(1.9 / 1.05) and high == pytest.approx(2.1 / 0.95)
    assert _common.ratio_spread(1.0, 0.0, 1.0, 2.0) == (pytest.approx(0.5), math.inf)
    assert _common.ratio_spread(1.0, 4.0, 1.0, 0.0)[0] == 0.0  # never below 0
    assert all(math.isnan(v) for v in _common.ratio_spread(1.0, math.nan, 1.0, 0.1))


def test_bootstrap_mean_interval_covers_the_mean_at_its_level():
    assert _common.bootstrap_mean([0.4] * 5) == (0.4, 0.4, 0.4, 5)
    mean, low, high, n = _common.bootstrap_mean([1.0])
    assert (mean, n) == (1.0, 1) and math.isnan(low) and math.isnan(high)
    assert math.isnan(_common.bootstrap_mean([math.nan])[0])
    # 400 samples of 40 runs each reaching a target with p = 0.3: a 95% percentile interval
    # covers p in about 95% of them (the percentile bootstrap runs ~1-2 points low at
    # n = 40); 400 draws give a binomial sd of 1.1 points, so [0.90, 0.99] is > 4 sd wide
    rng = np.random.default_rng(1)
    hits = [(lo <= 0.3 <= hi) for lo, hi in (
        _common.bootstrap_mean(rng.random(40) < 0.3, n_resamples=1000)[1:3]
        for _ in range(400))]
    assert 0.90 <= np.mean(hits) <= 0.99, np.mean(hits)


# --------------------------------------------------------------------------- kernels


def _kernel_rows() -> pd.DataFrame:
    """test_report's full-rank kernel (fraction 0.5, step IQR 10%) and one of each family."""
    base = {"batch_size": 256, "n_params": 10000, "step_iqr_s": math.nan, "variant": "dense"}

    def row(bench, method, frac, **extra):
        step = 1e-3
        return {**base, "bench": bench, "method": method, "frac_of_inference": frac,
                "step_median_s": step, "inference_equiv_s": frac * step, **extra}

    frame = pd.DataFrame(_kernels())
    # the full-rank kernel is cheaper at the smaller model: the larger one is shown
    frame.loc[frame["n_params"] == 1000, "frac_of_inference"] = 0.9
    return pd.concat([frame, pd.DataFrame([
        row("zo_fused_lowrank", kernels.HEADLINE_KERNEL, 0.97, rank=4, num_directions=128,
            chunk_size=16),
        row("zo_fused_lowrank", "zo_gaussian_fused", 0.7, rank=4, num_directions=128,
            chunk_size=128),
        row("gradient_step", "adam", 0.25),
        row("search_step", "gld", 0.3, num_directions=12),
        row("search_step", "rso", 0.4, num_directions=33),
        row("search_step", "rso", math.nan, num_directions=99),  # no ratio: left out
        row("forward", "inference", 1.0),
        row("xnor_matmul", "xnor_packed", math.nan, speedup_vs_dense=3.0)])],
        ignore_index=True).assign(backend="cpu", device_kind="cpu")


def test_kernel_families():
    assert kernels.family({"bench": "zo_step", "method": "zo", "rank": None}) == "full-rank ZO"
    assert kernels.family({"bench": "zo_scaling_params", "method": "zo_gaussian_r4",
                           "rank": 4.0}) == "low-rank ZO"
    assert kernels.family({"bench": "zo_fullrank_vs_es", "method": "openai_es_materialized",
                           "rank": 0}) == "materialized OpenAI-ES"
    for bench, method in (("forward", "inference"), ("zo_chunk_memory", "inference"),
                          ("bcsr_matmul", "bcsr"), ("xnor_matmul", "xnor_packed")):
        assert kernels.family({"bench": bench, "method": method}) is None  # references
    assert set(kernels.FAMILIES) >= {"backprop (Adam)", "direct search", "forward gradient"}


def test_kernels_headline_per_family_at_the_largest_model(tmp_path):
    text = kernels.headline({"kernels": _kernel_rows()}, tmp_path)
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert lines[0].startswith("- **fused low-rank step, defaults**")
    assert lines[0].endswith("0.97, target >= 0.95 met")  # no step IQR: no range
    # fraction 0.5 with the step at its median -/+ 5%: 0.5 / 1.05 and 0.5 / 0.95
    assert ("- **full-rank ZO**: zo 0.5 [0.476, 0.526] at d = 10000, 32 directions, "
            "batch 32") in lines
    assert "- **low-rank ZO**: zo_gaussian_fused_default r=4 chunk=16 0.97 (2 kernels: 0.7 " \
           "to 0.97)" in text
    assert "- **direct search**: rso 0.4 (2 kernels: 0.3 to 0.4) at d = 10000, 33 " \
           "directions" in text  # rso's row without a ratio is not its largest
    assert "- **backprop (Adam)**: adam 0.25 at d = 10000, batch 256, vs inference" in text
    assert "inference 1" not in text and "xnor" not in text
    assert "figures/" not in text  # the section did not draw its figure here
    assert kernels.headline({}, tmp_path) == ""


def test_kernels_headline_says_when_the_fused_target_is_missed(tmp_path):
    frame = _kernel_rows()
    frame.loc[frame["method"] == kernels.HEADLINE_KERNEL, "frac_of_inference"] = 0.9
    text = kernels.headline({"kernels": frame}, tmp_path)
    assert "0.9, target >= 0.95 **not met**" in text


# --------------------------------------------------------------------------- scaling


def test_scaling_headline_gives_the_ratio_at_the_largest_mesh(tmp_path):
    frame = pd.DataFrame(_scaling_rows()).assign(backend="cpu", device_kind="cpu")
    scaling.section({"scaling": frame}, tmp_path)  # draws the figure the headline links
    text = scaling.headline({"scaling": frame}, tmp_path)
    # step IQR 10% of the step: the ratio r becomes r * 0.95 / 1.05 to r * 1.05 / 0.95
    assert ("- **zo_gaussian** (64 directions, batch 256, evaluations/s): 4x [3.62, 4.42] "
            "on 4 devices vs 1, efficiency 1") in text
    assert "- **backprop_data_parallel** (64 directions, batch 256, evaluations/s): 1x " \
           "[0.905, 1.11] on 4 devices vs 1, efficiency 0.25" in text
    assert "on cpu:cpu" in text.splitlines()[0]  # one machine: named once
    assert text.endswith(f"\n\n{scaling.FIGURE}")
    one = frame[frame["devices"] == 1]
    assert "more than one device count" in scaling.headline({"scaling": one}, tmp_path)
    assert scaling.headline({}, tmp_path) == ""


def test_scaling_speedup_without_step_times_has_no_range():
    rows = pd.DataFrame({"devices": [1, 8], "throughput": [10.0, 40.0]})
    s = scaling.speedup(rows, "devices", "throughput")
    assert (s["ratio"], s["efficiency"], s["small"], s["large"]) == (4.0, 0.5, 1.0, 8.0)
    assert math.isnan(s["low"]) and math.isnan(s["high"])


# ------------------------------------------------------------------------------ bbob


def test_bbob_shares_and_headline_name_the_best_per_group(tmp_path):
    frame = _bbob_frame()
    # "good" reached 1e1 (one of five targets) in both f1 runs, "bad" nothing
    s = bbob.shares(frame[frame["group"] == "separ"])
    assert s["method"].tolist() == ["good", "bad"]
    assert s.loc[0, ["share", "low", "high", "runs"]].tolist() == [0.2, 0.2, 0.2, 2]
    text = bbob.headline({"bbob": frame}, tmp_path)
    assert ("- **separ** (f1-f5): 2-D good 0.20 [0.20, 0.20] (next bad 0.00 [0.00, 0.00])"
            in text)
    assert "- **multi** (f15-f19): 2-D bad 0.00" in text  # a tie: by precision, then name
    assert "lcond" not in text  # no rows, no line
    assert bbob.headline({}, tmp_path) == ""


def test_bbob_share_interval_is_over_runs():
    frame = pd.concat([_bbob_frame()] * 5, ignore_index=True)
    good = frame[(frame["method"] == "good") & (frame["group"] == "separ")].copy()
    good.loc[good.index[::2], "evals_to_1e1"] = math.inf  # half the runs miss
    s = bbob.shares(good).iloc[0]
    assert s["share"] == pytest.approx(0.1) and s["runs"] == 10
    assert 0.0 <= s["low"] < 0.1 < s["high"] <= 0.2


# ------------------------------------------------------------------------ hypotheses


def _claims_frame() -> pd.DataFrame:
    frame = pd.DataFrame(
        _rows("mlp_depth", "sigmoid/d2", "adam", HIGH) + _rows("mlp_depth", "sigmoid/d2", "zo",
                                                               HIGH)
        + _rows("mlp_depth", "sigmoid/d16", "adam", LOW) + _rows("mlp_depth", "sigmoid/d16",
                                                                 "zo", HIGH)
        + _rows("threshold_net", "s", "ste_adam", HIGH) + _rows("threshold_net", "s", "zo", LOW)
        + _rows("categorical", "s", "reinforce", LOW) + _rows("categorical", "s", "zo_crn", HIGH)
        + _rows("linreg", "d20", "relative_loss", [0.99, 0.98, 0.995], metric="test_r2")
        + _rows("linreg", "d20", "adam", [1.0] * 3, metric="test_r2"))
    return pd.concat([frame, _memory_frame(1.0, 0.0, 0.0)], ignore_index=True)


def test_hypotheses_headline_is_the_verdict_table_one_line_per_claim(tmp_path):
    frame = _claims_frame()
    table = hypotheses.verdicts(frame)
    text = hypotheses.headline({"hypotheses": frame}, tmp_path)
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    claims = list(dict.fromkeys(table["claim"]))
    assert len(lines) == len(claims) == 5  # depth, rso, parts, memory, linear regression
    short = {hypotheses.CLAIMS[k]: v for k, v in hypotheses.SHORT.items()}
    assert [line.split(":")[0] for line in lines] == [f"- {short[c]}" for c in claims]
    parts = next(line for line in lines if line.startswith("- Non-differentiable parts"))
    assert "**refuted** on threshold_net: accuracy: ste_adam 0.91 [0.9, 0.92] vs zo 0.31 " \
           "[0.3, 0.32]" in parts
    assert "**supported** on categorical: accuracy: reinforce 0.31" in parts
    column = "deciding numbers (median [95% CI] over seeds)"
    for row in table.to_dict("records"):  # each row's verdict and first deciding numbers
        assert f"**{row['verdict']}** on {row['workload']}: " \
               f"{row[column].split('; ')[0]}" in text
    assert "figures/" not in text
    assert hypotheses.headline({}, tmp_path) == ""


# ------------------------------------------------------------------------ the summary


def test_the_summary_shows_the_sections_headlines(tmp_path):
    results.append("kernels", _kernels(), key=KERNEL_KEY, results_dir=tmp_path)
    results.append("scaling", _scaling_rows(), key=results.key("scaling"), results_dir=tmp_path)
    summary = report.build(tmp_path, verbose=False).read_text()
    assert "- **full-rank ZO**: zo 0.5 [0.476, 0.526]" in summary
    assert "4x [3.62, 4.42] on 4 devices vs 1" in summary
    for figure in ("kernels_time_vs_params", "scaling_throughput"):
        assert f"](figures/{figure}.png)" in summary
        assert (tmp_path / "figures" / f"{figure}.png").exists()
