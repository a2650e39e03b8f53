"""fold_jax.bench.suites.lm and fold_jax.report.lm: the LM memory table / scale sweep as a
suite (its profiles, one tiny job end to end into a results store, rows that do not fit
saying why) and its report section on synthetic frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fold_jax import results
from fold_jax.bench.suites import lm
from fold_jax.learn import nets
from fold_jax.report import lm as report_lm


def test_profiles_plan_the_issue_configurations():
    quick = lm.configurations("quick")
    # quick: the tiny model at two sequence lengths; full: two+ sizes x two+ lengths
    # (the memory table of issue 32 item 6) and K in {8, 32}
    assert {(c["model"], c["seq_len"]) for c in quick} == {("tiny", 64), ("tiny", 128)}
    assert {(c["batch_size"], c["num_directions"]) for c in quick} == {(4, 8)}
    full = lm.configurations("full")
    assert {c["model"] for c in full} == {"tiny", "small", "base"}
    assert {c["seq_len"] for c in full} >= {64, 128}
    assert {c["num_directions"] for c in full} == {8, 32}
    jobs = list(lm.jobs("quick"))
    assert len({j.label for j in jobs}) == len(jobs) == len(quick)
    assert all(set(j.key) <= set(lm.KEY) for j in jobs)  # a job's key is part of the file's
    assert lm.KEY == results.key("lm_kernels")
    with pytest.raises(ValueError, match="profile"):
        lm.configurations("fast")
    with pytest.raises(ValueError, match="allowed"):
        lm.measure("tiny", 16, 2, 2, methods=("sgd",))


def test_goal_names_each_part_missed():
    assert lm.goal(1.2, 1.25, 0) == "met"  # the bounds themselves meet the goal
    assert lm.goal(1.3, 1.0, 0) == "missed: time 1.30x > 1.2x"
    text = lm.goal(math.nan, 2.0, 3)  # NaN never meets a goal
    assert "time nan" in text and "memory 2.00x" in text and "3 materialized" in text


def test_leaf_counts_read_describe():
    leaves = {"a": {"association": "factored"}, "b": {"association": "dense"},
              "c": {"association": "mixed"}, "d": {"association": "materialized"},
              "e": {"association": "full_rank"}}
    assert lm.leaf_counts({"path": "fused", "leaves": leaves}) == {
        "path": "fused", "fused_leaves": 3, "materialized_leaves": 1, "full_rank_leaves": 1}


def test_a_tiny_job_end_to_end_into_a_results_store(tmp_path, monkeypatch):
    """One job (a smaller tiny model, T 16, B 2, K 2; inference and the fused step, the others have
    their own compiles and are run by the suite) through the runner's row path; the evosax
    population limit set just below K x params x 4 bytes so their rows say why not."""
    monkeypatch.setitem(lm.PROFILE, "quick", {"models": ("tiny",), "seq_lens": (16,),
                                              "num_directions": (2,), "batch_size": 2})
    monkeypatch.setattr(lm, "METHODS", ("inference", "zo_fused", "evosax_Open_ES",
                                        "evosax_SNES"))
    monkeypatch.setitem(lm.BUDGET, "quick", dict(min_rounds=3, max_rounds=3, max_time_s=0.01))
    # a one-block width-16 "tiny" (compiling the fused step of the real one takes ~25 s)
    monkeypatch.setitem(nets.TRANSFORMER_PRESETS, "tiny", {"width": 16, "depth": 1, "heads": 2})
    n = nets.lm_param_count(85, 16, 1)  # vocab 85 (docs/language-models.md)
    monkeypatch.setattr(lm, "MAX_POPULATION_BYTES", 2 * n * 4 - 1)
    (job,) = lm.jobs("quick")
    rows = job.run()
    assert [r["method"] for r in rows] == list(lm.METHODS)
    for r in rows:
        assert results.undescribed("lm_kernels", r) == [], r["method"]
        assert {k: r[k] for k in job.key} == job.key
    assert results.append("lm_kernels", rows, key=lm.KEY, results_dir=tmp_path) == len(rows)
    frame = results.load(tmp_path)["lm_kernels"]  # validated against the schema
    by = frame.set_index("method")
    assert (by["n_params"] == n).all()
    measured = by[by["fits"]]
    assert list(measured.index) == ["inference", "zo_fused"]
    for column in ("time_ratio", "mem_ratio", "mem_vs_single_inference", "step_median_s",
                   "mem_bytes", "compile_s"):
        values = measured[column].to_numpy(float)
        assert np.all(np.isfinite(values) & (values > 0)), column
    assert by.loc["inference", "time_ratio"] == 1.0  # its own reference, one timing
    assert by.loc["inference", "mem_ratio"] == 1.0
    assert by.loc["zo_fused", "ref_sequences"] == 2 * 2  # K x B
    assert by.loc["zo_fused", "path"] == "fused" and by.loc["zo_fused", "fused_leaves"] > 0
    assert by.loc["zo_fused", "goal"].startswith(("met", "missed: "))
    for name in ("evosax_Open_ES", "evosax_SNES"):
        assert not by.loc[name, "fits"]
        assert "GiB > " in by.loc[name, "reason"] and "MAX_POPULATION_BYTES" in \
            by.loc[name, "reason"]
        assert math.isnan(by.loc[name, "time_ratio"])


def _synthetic() -> pd.DataFrame:
    rows = []
    for model, n in (("tiny", 1.3e5), ("small", 1.0e6)):
        for method, tr, mr in (("inference", 1.0, 1.0), ("zo_fused", 1.1, 1.2),
                               ("mezo", 1.5, 1.9), ("evosax_SNES", 3.0, 6.0)):
            fits = not (model == "small" and method == "evosax_SNES")
            rows.append(dict(model=model, n_params=n, seq_len=64, batch_size=4,
                             num_directions=8, method=method, evals=8, fits=fits,
                             reason="" if fits else "population too big",
                             time_ratio=tr if fits else math.nan,
                             mem_ratio=mr if fits else math.nan,
                             mem_vs_single_inference=mr, step_median_s=0.01,
                             mem_bytes=1e6, materialized_leaves=0 if "zo" in method else
                             math.nan, fused_leaves=13.0, goal="met" if method == "zo_fused"
                             else ""))
    return pd.DataFrame(rows)


def test_report_section_on_synthetic_frames(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    frames = {"lm_kernels": _synthetic()}
    text = report_lm.section(frames, tmp_path)
    assert (tmp_path / "lm_ratio_vs_params.png").stat().st_size > 0
    assert "figures/lm_ratio_vs_params.png" in text
    assert "population too big" in text  # a row that did not fit says why in the table
    assert text.count("| method |") == 2  # one table per configuration
    line = report_lm.headline(frames, tmp_path)
    assert "met its goal in 2 of 2 configurations" in line
    assert report_lm.section({}, tmp_path) == "" == report_lm.headline({}, tmp_path)
    missed = _synthetic().assign(goal="missed: time 1.30x > 1.2x")
    assert "in 0 of 2" in report_lm.headline({"lm_kernels": missed}, tmp_path)
