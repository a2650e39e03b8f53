"""fold_jax/bench/suites/hypotheses.py and fold_jax/report/hypotheses.py: the quick profile's jobs
are well formed, a tiny job runs and its rows fit the schema, and the verdict logic gives
the verdicts the rules say on synthetic frames."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from fold_jax import results
from fold_jax.bench import hypotheses_work as work
from fold_jax.bench.common import TUNING_SEED
from fold_jax.bench.suites import hypotheses as suite
from fold_jax.learn import recipes, train
from fold_jax.report import hypotheses as report
from fold_jax.report._common import fmt

CLAIMS = {"depth", "recurrent", "nondiff_parts", "nondiff_objective", "linear_regression"}


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_jobs_are_well_formed(profile):
    jobs = list(suite.jobs(profile))
    labels = [j.label for j in jobs]
    assert len(set(labels)) == len(labels)
    key_columns = [c for c in suite.KEY if c not in results.MACHINE_KEY]
    keys = {tuple(j.key[c] for c in key_columns) for j in jobs}
    assert len(keys) == len(jobs)  # every job has its own done-marker row
    for job in jobs:
        assert set(job.key) == set(key_columns)
        assert job.cost > 0 and callable(job.run)
        assert work.family(job.key["method"]) in ("backprop", "forward_only")
    assert {j.key["claim"] for j in jobs} == CLAIMS
    assert len(suite.PROFILE[profile]["seeds"]) >= 3
    # every claim has both families, and the recurrent memory is measured at T = 64..512
    for claim in CLAIMS:
        families = {work.family(j.key["method"]) for j in jobs if j.key["claim"] == claim}
        assert families == {"backprop", "forward_only"}, claim
    cost_T = set(suite.PROFILE[profile]["cost_T"])
    assert {64, 128, 256, 512} <= cost_T
    memory = {(j.key["method"], j.key["setting"]) for j in jobs
              if j.key["workload"] == "adding_memory"}
    for method in ("bptt", "zo"):
        assert {(method, f"gru/T{T}") for T in cost_T} <= memory


def test_quick_is_a_subset_of_full():
    full = {j.label for j in suite.jobs("full")}
    assert {j.label for j in suite.jobs("quick")} <= full


def test_a_tiny_job_runs_and_its_rows_fit_the_schema(tmp_path, monkeypatch):
    steps, seeds, n_trials = 20, (0, 1, 2), 2
    splits = []
    fit = train.fit

    def recording_fit(*args, **kwargs):
        splits.append(kwargs["eval_split"])
        return fit(*args, **kwargs)

    monkeypatch.setattr(train, "fit", recording_fit)
    job = suite._train_job(
        "linear_regression", "linreg", "relative_loss", "d20", "r2", steps, seeds, n_trials,
        lambda s, hp, split: work.linreg_run("relative_loss", s, steps, 10, hp=hp,
                                             eval_split=split), 1.0)
    rows = job.run()
    # the trials read the validation split only, then the seeds the test split
    assert splits == ["val"] * n_trials + ["test"] * len(seeds)
    trials = [r for r in rows if r["metric"].startswith("trial_")]
    finals = [r for r in rows if not r["metric"].startswith("trial_")]
    assert {r["seed"] for r in trials} == {TUNING_SEED + i for i in range(n_trials)}
    assert {r["seed"] for r in finals} == set(seeds)
    scores = {r["trial"]: r["value"] for r in trials if r["metric"] == "trial_val_r2"}
    chosen = {r["trial"] for r in trials if r["selected"]}
    assert chosen == {max(scores, key=lambda i: (scores[i], -i))}  # the best val R^2
    (best,) = chosen
    best_hparams = {r["hparams"] for r in trials if r["trial"] == best}
    assert {r["hparams"] for r in finals} == best_hparams  # the seeds rerun its settings
    assert all(r["trial"] == best and r["n_trials"] == n_trials for r in finals)
    last = rows[-1]
    assert {k: last[k] for k in job.key} == job.key  # the key names the last row
    for r in rows:
        assert not results.undescribed("hypotheses", r), results.undescribed("hypotheses", r)
        assert set(results.SCHEMAS["hypotheses"]) <= set(r)
    test_r2 = [r for r in finals if r["metric"] == "test_r2"]
    assert len(test_r2) == 3 and all(r["step"] == steps for r in test_r2)
    # the search spends 2 evaluations per step (nominate 2, confirm 2 + 2)
    assert all(r["evals"] == 2 * steps for r in test_r2)
    curve = [r for r in finals if r["metric"] == "curve_test_r2" and r["seed"] == 0]
    assert [r["step"] for r in curve] == [0, 10, 20]
    written = results.append("hypotheses", rows, key=suite.KEY, results_dir=tmp_path)
    assert written == len(rows)
    frame = results.load(tmp_path)["hypotheses"]  # validated on loading
    assert len(frame) == len(rows)


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_every_trained_method_has_a_search_space(profile):
    p = suite.PROFILE[profile]
    assert p["trials"] >= {"quick": 4, "full": 20}[profile]  # the races' protocol
    for job in suite.jobs(profile):
        if job.key["workload"] != "adding_memory":
            assert work.space(job.key["method"]), job.key


def test_select_takes_the_highest_finite_value_and_the_first_of_ties():
    assert work.select([0.5, 0.9, 0.9, 0.1]) == 1
    assert work.select([math.nan, 0.2, math.inf * -1]) == 1
    assert work.select([math.nan, math.nan]) == 0
    with pytest.raises(ValueError):
        work.select([])


def test_settings_refuse_a_value_outside_the_space():
    assert work.settings("adam", {"lr": 1e-3, "optimizer": "adam"}, {"lr": 0.01}) == {
        "lr": 0.01, "optimizer": "adam"}
    with pytest.raises(ValueError, match="sigma"):
        work.settings("adam", {"lr": 1e-3}, {"sigma": 0.1})


# ------------------------------------------------------------------ verdict logic


def _rows(workload, setting, method, values, metric="test_accuracy", claim="x", **extra):
    return [{"claim": claim, "workload": workload, "setting": setting, "method": method,
             "family": work.family(method), "seed": i, "metric": metric, "value": v,
             "step": 100, "evals": 100.0, "elapsed_s": extra.get("elapsed_s", 1.0)}
            for i, v in enumerate(values)]


HIGH, LOW = [0.90, 0.91, 0.92], [0.30, 0.31, 0.32]
MIDDLE = [0.80, 0.90, 0.95]


def _verdict(frame: pd.DataFrame, workload: str) -> str:
    v = report.verdicts(frame)
    row = v[v["workload"].str.startswith(workload)]
    assert len(row) >= 1, v
    return row["verdict"].iloc[0]


@pytest.mark.parametrize("backprop, forward, expected", [
    (HIGH, LOW, "refuted"), (LOW, HIGH, "supported"), (MIDDLE, [0.85, 0.9, 0.92], "mixed")])
def test_comparison_verdicts(backprop, forward, expected):
    for workload, bp, fo in (("threshold_net", "ste_adam", "zo"),
                             ("categorical", "reinforce", "zo_crn"),
                             ("zero_one", "adam_ce", "gld_metric")):
        frame = pd.DataFrame(_rows(workload, "s", bp, backprop)
                             + _rows(workload, "s", fo, forward)
                             # a worse forward-only method must not hide the best one
                             + _rows(workload, "s", "one_plus_one_metric", [0.0] * 3))
        assert _verdict(frame, workload) == expected, workload
        v = report.verdicts(frame)
        assert v["best forward-only"].iloc[0] == fo


def test_recurrent_accuracy_has_one_verdict_per_sequence_length():
    # BPTT wins at T = 16, forward-only at T = 256 (listed out of order, 256 < 64 as text)
    frame = pd.DataFrame(
        _rows("adding_accuracy", "gru/T256", "bptt", LOW, metric="test_r2")
        + _rows("adding_accuracy", "gru/T256", "zo", HIGH, metric="test_r2")
        + _rows("adding_accuracy", "gru/T16", "bptt", HIGH, metric="test_r2")
        + _rows("adding_accuracy", "gru/T16", "zo", LOW, metric="test_r2"))
    v = report.verdicts(frame)
    assert v["workload"].tolist() == ["adding_accuracy (gru/T16)", "adding_accuracy (gru/T256)"]
    assert v["verdict"].str.split().str[0].tolist() == ["refuted", "supported"]


def test_depth_verdict_judges_the_deepest_sigmoid_net_and_rso():
    frame = pd.DataFrame(
        _rows("mlp_depth", "sigmoid/d2", "adam", HIGH)
        + _rows("mlp_depth", "sigmoid/d2", "zo", HIGH)
        + _rows("mlp_depth", "sigmoid/d16", "adam", LOW, elapsed_s=1.0)  # backprop fails deep
        + _rows("mlp_depth", "sigmoid/d16", "zo", HIGH)
        + _rows("mlp_depth", "sigmoid/d16", "rso", [0.29, 0.30, 0.31], elapsed_s=10.0)
        + _rows("mlp_depth", "relu/d32", "adam", HIGH))
    v = report.verdicts(frame)
    depth = v[v["claim"] == report.CLAIMS["depth"]].iloc[0]
    assert depth["workload"] == "mlp_depth (sigmoid/d16)"
    assert depth["verdict"] == "supported"
    rso = v[v["claim"] == report.CLAIMS["rso"]].iloc[0]
    # within RSO_MARGIN of Adam's median: it works, at 10x the time
    assert rso["verdict"] == "supported"
    assert "10x" in rso["deciding numbers (median [95% CI] over seeds)"]


def _memory_frame(bptt_slope, tbptt_slope, zo_slope):
    rows = []
    for T in (64, 128, 256, 512):
        for method, slope in (("bptt", bptt_slope), ("tbptt", tbptt_slope), ("zo", zo_slope)):
            for seed in range(3):
                for metric, base in (("mem_bytes", 1e6), ("step_s", 1e-3)):
                    rows.append({"claim": "recurrent", "workload": "adding_memory",
                                 "setting": f"gru/T{T}", "method": method,
                                 "family": work.family(method), "seed": seed,
                                 "metric": metric, "value": base * (T / 64) ** slope,
                                 "step": 0, "evals": math.nan})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("slopes, expected", [
    ((1.0, 1.0, 0.0), "supported"), ((1.0, 0.0, 0.0), "mixed"),
    ((0.1, 0.0, 0.0), "refuted"), ((1.0, 1.0, 1.0), "refuted")])
def test_memory_verdict_from_log_log_slopes(slopes, expected):
    frame = _memory_frame(*slopes)
    result = report.memory_verdict(frame)
    assert result["verdict"] == expected
    # the slope is fitted, not assumed: an exact power law gives its exponent back
    assert f"memory slope: bptt {fmt(slopes[0])} " in result["numbers"]


@pytest.mark.parametrize("values, expected", [
    ([0.99, 0.98, 0.995], "supported"), ([0.5, 0.4, 0.6], "refuted"),
    ([0.85, 0.95, 0.99], "mixed")])
def test_linear_regression_verdict(values, expected):
    frame = pd.DataFrame(_rows("linreg", "d20", "relative_loss", values, metric="test_r2")
                         + _rows("linreg", "d20", "adam", [1.0] * 3, metric="test_r2"))
    assert _verdict(frame, "linreg") == expected


def test_section_renders_from_rows_only(tmp_path):
    frame = pd.DataFrame(
        _rows("mlp_depth", "sigmoid/d2", "adam", HIGH)
        + _rows("mlp_depth", "sigmoid/d16", "adam", HIGH)
        + _rows("mlp_depth", "sigmoid/d2", "zo", LOW)
        + _rows("mlp_depth", "sigmoid/d16", "zo", LOW)
        + _rows("threshold_net", "s", "ste_adam", HIGH, metric="curve_test_accuracy")
        + _rows("threshold_net", "s", "zo", LOW, metric="curve_test_accuracy")
        + _rows("threshold_net", "s", "ste_adam", HIGH) + _rows("threshold_net", "s", "zo", LOW))
    frame = pd.concat([frame, _memory_frame(1.0, 0.0, 0.0)], ignore_index=True)
    md = report.section({"hypotheses": frame}, tmp_path)
    assert "| claim | workload |" in md
    assert md.count("refuted") >= 2 and "mixed" in md
    for name in ("hypotheses_depth", "hypotheses_recurrent", "hypotheses_curves"):
        assert (tmp_path / f"{name}.png").exists()
    assert report.section({}, tmp_path) == ""
    assert np.isfinite(report.GROWS)


def _trial_rows(workload, setting, method, values, selected):
    rows = []
    for i, v in enumerate(values):
        common = {"claim": "x", "workload": workload, "setting": setting, "method": method,
                  "family": work.family(method), "seed": TUNING_SEED + i, "step": 100,
                  "evals": 100.0, "trial": i, "n_trials": len(values),
                  "selected": i == selected}
        rows += [{**common, "metric": "trial_skipped_steps", "value": 1.0},
                 {**common, "metric": "trial_val_accuracy", "value": v}]
    return rows


def test_trial_rows_are_summarised_and_kept_out_of_the_verdicts(tmp_path):
    finals = (_rows("threshold_net", "s", "ste_adam", HIGH)
              + _rows("threshold_net", "s", "zo", LOW))
    trials = (_trial_rows("threshold_net", "s", "zo", [0.2, 0.9, 0.5, 0.1], selected=1)
              + _trial_rows("threshold_net", "s", "ste_adam", [0.95] * 4, selected=0))
    frame = pd.DataFrame(finals + trials)
    summary = report.tuning_summary(frame[frame["metric"].str.startswith("trial_")])
    zo_row = summary[summary["method"] == "zo"].iloc[0]
    assert (zo_row["trials"], zo_row["selected trial"]) == (4, 1)
    assert (zo_row["selected val"], zo_row["worst val"]) == (0.9, 0.1)
    assert zo_row["skipped steps"] == 4  # counted, not hidden
    md = report.section({"hypotheses": frame}, tmp_path)
    assert "tuned alike: 4 settings" in md and "Tuning: per method" in md
    assert "3 seeds per result" in md  # the trials' seeds are not counted as seeds
    # the verdict reads the final rows only: the same as without the trials
    without = report.verdicts(pd.DataFrame(finals))
    pd.testing.assert_frame_equal(report.verdicts(pd.DataFrame(finals + trials)), without)


def test_depth_verdict_takes_the_relu_workaround_and_sees_when_nothing_learned():
    chance = [0.10, 0.10, 0.103]
    base = (_rows("mlp_depth", "sigmoid/d2", "adam", HIGH)
            + _rows("mlp_depth", "sigmoid/d16", "adam", chance)
            + _rows("mlp_depth", "sigmoid/d16", "zo", chance)
            + _rows("mlp_depth", "sigmoid/d16", "rso", chance)
            + _rows("mlp_depth", "sigmoid/d16", "zo", [0.1] * 3, metric="curve_test_accuracy"))
    for r in base[-3:]:
        r["step"] = 0  # the initial accuracy
    v = report.verdicts(pd.DataFrame(base))
    depth = v[v["claim"] == report.CLAIMS["depth"]].iloc[0]
    assert depth["verdict"] == "mixed" and "neither family learned" in depth["flips when"]
    rso = v[v["claim"] == report.CLAIMS["rso"]].iloc[0]
    assert rso["verdict"] == "refuted" and "did not learn" in rso["flips when"]
    # with Adam on the ReLU net of the same depth (the workaround), backprop wins
    v = report.verdicts(pd.DataFrame(base + _rows("mlp_depth", "relu/d16", "adam", HIGH)))
    depth = v[v["claim"] == report.CLAIMS["depth"]].iloc[0]
    assert depth["best backprop"] == "adam (relu)" and depth["verdict"] == "refuted"


def test_depth_to_target_reads_the_first_evaluation_at_the_target():
    import pandas as pd

    from fold_jax.report import hypotheses

    rows = []
    # seed s reaches 0.9 at step 200 * (s + 1) (seed 2 never): median time of (t1, t2, inf)
    for seed in range(3):
        for step, acc in ((0, 0.1), (200, 0.95 if seed == 0 else 0.5),
                          (400, 0.95 if seed == 1 else 0.6), (600, 0.85)):
            rows.append({"workload": "mlp_depth", "metric": "curve_test_accuracy",
                         "setting": "sigmoid/d16", "method": "zo", "seed": seed,
                         "value": acc, "step": step, "evals": 16 * step,
                         "elapsed_s": step / 1000})
    rows.append({**rows[0], "metric": "test_accuracy"})  # not a curve row: ignored
    (r,) = hypotheses.depth_to_target(pd.DataFrame(rows)).to_dict("records")
    assert r["reached"] == "2/3" and (r["steps"], r["evals"]) == (400.0, 6400.0)
    assert r["time (s)"] == 0.4
    empty = hypotheses.depth_to_target(pd.DataFrame(rows), target=0.99)
    assert empty["reached"].tolist() == ["0/3"] and empty["time (s)"].tolist() == [float("inf")]


@pytest.mark.parametrize("workload, run", [
    ("mlp_depth", lambda hp, split: work.depth_run("zo_layer_scaled", "sigmoid", 2, 1000, 2,
                                                   2, hp=hp, eval_split=split)),
    ("adding_accuracy", lambda hp, split: work.recurrent_accuracy_run(
        "tbptt", 8, 2, 1000, 2, 2, hp=hp, eval_split=split)),
    ("threshold_net", lambda hp, split: work.threshold_run("gld", 1000, 2, 2, hp=hp,
                                                           eval_split=split)),
    ("categorical", lambda hp, split: work.categorical_run("zo_crn", 1000, 2, 2, hp=hp,
                                                           eval_split=split)),
    ("zero_one", lambda hp, split: work.objective_run("one_plus_one_metric", "zero_one",
                                                      1000, 2, 2, hp=hp, eval_split=split)),
])
def test_every_workload_runs_a_validation_trial_with_the_drawn_settings(workload, run):
    method = {"mlp_depth": "zo_layer_scaled", "adding_accuracy": "tbptt",
              "threshold_net": "gld", "categorical": "zo_crn",
              "zero_one": "one_plus_one_metric"}[workload]
    (hp,) = recipes.sample(work.space(method), 1)
    rows = run(hp, "val")
    assert [r["metric"].rsplit("_", 1)[0] for r in rows] == ["trial_skipped", "trial_val"]
    assert rows[0]["value"] == 0  # no step skipped
    stated = json.loads(rows[-1]["hparams"])
    assert {k: stated[k] for k in hp} == hp  # the row states the values it trained with


def _tiny(profile: dict) -> dict:
    """``profile`` with every budget cut to 12 steps, one trial, one seed, the smallest
    depth and sequence lengths: the same (workload, method, activation) grid."""
    steps = {k: 12 for k in profile if k.endswith("_steps")}
    return {**profile, **steps, "seeds": (0,), "trials": 1, "depths": (2,), "rnn_Ts": (8,),
            "cost_T": (8,), "truncate": 4}


def _full_only_jobs() -> list:
    """The fewest full-profile jobs that reach every (workload, method) and every
    (workload, activation or objective) the quick profile (which the reference run
    executes) never runs: a greedy cover, not the cross product (28 jobs before, 16
    in suite order, 15 now: tanh/d2/gld reaches the tanh nets and GLD on the depth
    workload at once).

    What they guard: a method, activation or objective that only the full profile
    reaches and that its workload's dispatch lacks or breaks (an unknown-method
    ValueError, a KeyError in its settings, rows that do not fit the schema or the job
    key, non-finite final metrics). Those depend on the workload and the method, or on
    the workload and the activation, not on their product: a (method, activation)
    pair meets no code the two do not meet apart (``depth_run`` picks them
    independently)."""

    def reaches(job) -> set:
        w = job.key["workload"]
        return {("method", w, job.key["method"]), ("kind", w, job.key["setting"].split("/")[0])}

    seen = set().union(*(reaches(j) for j in suite.jobs("quick")))
    todo = list(suite.jobs("full"))
    picked = []
    while True:  # the job reaching the most unseen pairs; ties: the first in suite order
        best = max(todo, key=lambda j: len(reaches(j) - seen))
        if not reaches(best) - seen:
            return picked
        seen |= reaches(best)
        picked.append(best)
        todo.remove(best)


def test_every_job_only_the_full_profile_runs_runs_end_to_end(monkeypatch):
    """The full profile has never been run to the end on CI hardware (hours), so each
    of its methods, activations and objectives that the quick profile lacks runs once
    here at 12 steps through its real job (tuning, selection, final seed)."""
    full = suite.PROFILE["full"]
    monkeypatch.setitem(suite.PROFILE, "full", _tiny(full))
    jobs = _full_only_jobs()
    names = {(j.key["workload"], j.key["method"]) for j in jobs}
    # the full-only methods, the tanh nets and the multilabel objective are all among them
    assert any(j.key["setting"].startswith("tanh/") for j in jobs) and len(jobs) == 15
    assert {("mlp_depth", "gld"), ("mlp_depth", "relative_loss"),
            ("adding_accuracy", "one_plus_one"), ("adding_memory", "one_plus_one"),
            ("threshold_net", "relative_loss"), ("categorical", "one_plus_one_crn"),
            ("multilabel_exact", "zo_metric"), ("linreg", "zo")} <= names
    for job in jobs:
        rows = job.run()
        last = rows[-1]
        assert {k: last[k] for k in job.key} == job.key, job.label
        for r in rows:
            assert not results.undescribed("hypotheses", r), (job.label, r)
        finals = [r for r in rows if r["metric"].startswith("test_")
                  or r["metric"] in ("mem_bytes", "step_s")]
        assert finals and all(np.isfinite(r["value"]) for r in finals), job.label
