"""fold_jax/bench/suites/bbob.py and fold_jax/report/bbob.py: the BBOB jobs, small real runs on
COCO's functions (cocoex), f_opt handling, COCO's data format, and the aRT / ECDF
report built from a small frame in a tmp dir."""

from __future__ import annotations

import importlib.util
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from fold_jax import report, results
from fold_jax.bench.suites import bbob as suite_bbob
from fold_jax.report import bbob as bbob_report

HAS_COCOEX = importlib.util.find_spec("cocoex") is not None
needs_cocoex = pytest.mark.skipif(not HAS_COCOEX, reason="cocoex missing: pip install "
                                  "'coco-experiment>=2.8.2' (the bbob suite's functions)")
HAS_PEERS = importlib.util.find_spec("fold_jax.peers") is not None
HAS_CMA = importlib.util.find_spec("cma") is not None
TARGET_COLUMNS = [bbob_report.target_column(t) for t in bbob_report.TARGETS]
# float32 rounding of a float64 value: at most half an ulp, 2^-24 relative
F32_HALF_ULP = 2.0 ** -24


@pytest.fixture(autouse=True)
def no_coco_files(monkeypatch):
    """Tests write COCO's data only where a test asks for it (never into results/)."""
    monkeypatch.setenv(suite_bbob.COCO_DIR_ENV, "off")


def _check_row(row: dict) -> None:
    """What every bbob.csv row must satisfy, whatever the method."""
    assert set(results.SCHEMAS["bbob"]) <= set(row)
    hits = [row[c] for c in TARGET_COLUMNS]
    finite = [h for h in hits if math.isfinite(h)]
    # a smaller target is reached no earlier than a larger one, and within the budget
    assert finite == sorted(finite)
    assert all(1 <= h <= row["budget"] for h in finite)
    assert all(math.isinf(h) for h in hits[len(finite):])
    # f - f_opt >= 0 (f_opt is the minimum); best_precision is over the budget
    assert row["best_precision"] >= 0.0
    for target, hit in zip(bbob_report.TARGETS, hits, strict=True):
        assert math.isfinite(hit) == (row["best_precision"] <= target)


# ------------------------------------------------------------------------- jobs


@needs_cocoex
@pytest.mark.parametrize("profile", ["quick", "full"])
def test_jobs_list_for_both_profiles(profile):
    jobs = list(suite_bbob.jobs(profile))
    p = suite_bbob.PROFILE[profile]
    labels = [j.label for j in jobs]
    assert len(set(labels)) == len(labels)
    n_methods = len({j.key["method"] for j in jobs})
    # one job per method x dimension, holding every function x instance x run
    assert len(jobs) == n_methods * len(p["dims"])
    assert n_methods == len(suite_bbob.METHODS) or not (HAS_PEERS and HAS_CMA)
    assert {"gld", "one_plus_one", "rso", "zo_adam"} <= {j.key["method"] for j in jobs}
    key_columns = [c for c in suite_bbob.KEY if c not in results.MACHINE_KEY]
    for job in jobs:
        assert set(key_columns) <= set(job.key)
        assert job.key["budget"] == p["budget_multiplier"] * job.key["dim"]
        assert job.cost > 0
    assert {j.key["dim"] for j in jobs} == set(p["dims"])
    assert sorted(f for fs in bbob_report.GROUPS.values() for f in fs) == list(range(1, 25))
    if profile == "full":
        assert {2, 10, 40} <= set(p["dims"]) and len(p["instances"]) == 15
    else:
        assert set(p["dims"]) <= set(suite_bbob.PROFILE["full"]["dims"])


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="profile"):
        list(suite_bbob.jobs("huge"))


# ------------------------------------------------------------------- f_opt handling


@needs_cocoex
def test_f_opt_is_the_minimum_of_every_function():
    """precision = f - f_opt: 0 at COCO's x_opt (float64 rounding), > 0 elsewhere."""
    import cocoex

    rng = np.random.default_rng(0)
    for function in range(1, 25):
        for dim in (2, 10):
            bare = cocoex.BareProblem("bbob", function, dim, 1)
            fopt = suite_bbob.f_opt(function, dim, 1)
            assert fopt == bare.best_value()
            points = rng.uniform(-5, 5, (20, dim))
            assert min(bare(x) - fopt for x in points) > 0.0
            x_opt = bare.best_parameter()
            if x_opt is not None:
                # f is a sum of O(d) float64 terms of size up to |f_opt| (<= 1000 in
                # BBOB): rounding is a few ulp of that, far below 1e-9
                assert abs(bare(x_opt) - fopt) <= 1e-9


@needs_cocoex
def test_loss_is_f_minus_f_opt_in_float32_and_the_tracker_counts():
    tracker = suite_bbob.new_tracker(3, 2, 2, budget=5)
    assert tracker.f_opt == suite_bbob.f_opt(3, 2, 2)
    slot = suite_bbob.new_slot()
    xs = np.random.default_rng(1).uniform(-4, 4, (7, 2)).astype(np.float32)
    with suite_bbob.bound(slot, tracker):
        loss = jax.jit(jax.vmap(lambda x: suite_bbob.bbob_loss({"x": x}, slot)))
        got = np.asarray(loss(jnp.asarray(xs)), np.float64)
        with pytest.raises(RuntimeError, match="already bound"):
            suite_bbob.bound(slot, tracker).__enter__()
    # the callback evaluates the float32 points JAX holds, in float64
    exact = np.array([tracker.problem(x) for x in xs.astype(np.float64)]) - tracker.f_opt
    assert np.all(np.abs(got[:5] - exact[:5]) <= F32_HALF_ULP * np.abs(exact[:5]))
    # past the budget evaluations are refused (inf) and not counted
    assert tracker.count == 5 and np.all(np.isinf(got[5:]))
    assert tracker.best == exact[:5].min()
    # the kept point (lowest float32 precision) re-evaluated comes from memory
    kept = xs[int(np.argmin(exact[:5].astype(np.float32)))]
    assert tracker.evaluate(kept) == tracker.kept and tracker.count == 5


def test_tracker_hits_each_target_at_the_first_evaluation_below_it():
    values = iter([50.0, 5.0, 7.0, 1e-2, 1e-9, 3.0])
    tracker = suite_bbob.Tracker(lambda x: next(values) + 100.0, 100.0, budget=10)
    for k in range(5):
        tracker.evaluate(np.full(2, float(k)))
    # 5.0 <= 1e1 at evaluation 2; 1e-2 <= 1e-1 at 4; 1e-9 reaches every other target at 5
    assert tracker.hits == [2.0, 4.0, 5.0, 5.0, 5.0]
    assert tracker.solved and tracker.closed
    assert math.isinf(tracker.evaluate(np.full(2, 9.0)))  # closed: refused, not counted
    assert tracker.count == 5


# ---------------------------------------------------------------------- real runs


@needs_cocoex
def test_one_plus_one_reaches_1e1_on_the_sphere(tmp_path):
    # instance 2's start point has f - f_opt = 16.8 > 10 (seed_of(1, 2, 2, 0))
    rows = suite_bbob.run_batch("one_plus_one", 2, [suite_bbob.Problem(1, 2)],
                                budget_multiplier=50)
    assert len(rows) == 1
    row = rows[0]
    _check_row(row)
    assert (row["function"], row["function_name"], row["group"]) == (1, "Sphere", "separ")
    assert row["library"] == "fold_jax" and row["budget"] == 100
    assert 1 < row["evals_to_1e1"] <= 100
    # fixed_set: 2 evaluations on the first step, 1 on each later one, all counted once
    assert row["evals_counted"] == row["evals_used"] == min(100, row["steps"] + 1)
    # the rows pass the results schema (written and read back in a tmp dir)
    results.append("bbob", rows, key=suite_bbob.KEY, results_dir=tmp_path)
    back = results.load(tmp_path / "bbob.csv")
    assert back["evals_to_1e1"].iloc[0] == row["evals_to_1e1"]


@needs_cocoex
def test_batched_runs_equal_single_runs():
    problems = [suite_bbob.Problem(1, 2), suite_bbob.Problem(8, 1)]
    batch = suite_bbob.run_batch("one_plus_one", 2, problems, budget_multiplier=50)
    for p, row in zip(problems, batch, strict=True):
        alone = suite_bbob.run_one("one_plus_one", p.function, 2, p.instance,
                                   budget_multiplier=50)
        for column in [*TARGET_COLUMNS, "best_precision", "evals_used", "evals_counted"]:
            assert row[column] == alone[column], column  # elementwise ops: bit-identical


@needs_cocoex
@pytest.mark.parametrize("method", ["gld", "rso", "zo_adam"])
def test_fold_jax_methods_run_within_budget(method):
    row = suite_bbob.run_one(method, 1, 2, 1, budget_multiplier=25)
    _check_row(row)
    assert row["evals_counted"] == min(row["evals_used"], row["budget"])
    # a step started below the budget may pass it by less than one step's evaluations
    per_step = math.ceil(row["evals_used"] / row["steps"]) + 1
    assert row["evals_used"] < row["budget"] + per_step


@needs_cocoex
@pytest.mark.skipif(not HAS_PEERS, reason="fold_jax.peers (evosax_method) is not there yet")
@pytest.mark.parametrize("method", ["evosax_open_es", "evosax_snes", "evosax_cma_es"])
def test_evosax_methods_run(method):
    row = suite_bbob.run_one(method, 1, 2, 2, budget_multiplier=50)
    _check_row(row)
    assert row["library"] == "evosax"
    assert row["evals_counted"] == min(row["evals_used"], row["budget"])
    if method != "evosax_open_es":  # adaptive std from 2: the 2-D sphere is easy
        assert math.isfinite(row["evals_to_1e1"])


@needs_cocoex
@pytest.mark.skipif(not HAS_CMA, reason="cma missing: pip install cma")
def test_pycma_runs_and_coco_data_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv(suite_bbob.COCO_DIR_ENV, str(tmp_path))
    row = suite_bbob.run_one("pycma_cma_es", 1, 2, 2, budget_multiplier=50)
    _check_row(row)
    assert row["library"] == "cma" and math.isfinite(row["evals_to_1e1"])
    assert row["evals_counted"] == min(row["evals_used"], row["budget"])
    folder = tmp_path / results.run_id() / "pycma_cma_es"
    info = list(folder.glob("*.info"))
    assert info, f"no COCO .info file in {folder}"
    dat = list(folder.rglob("*.dat"))
    assert dat and dat[0].read_text().count("\n") > 1
    # COCO's record of the replay, "instance:evaluations|best precision": the run's
    assert f"2:{row['evals_counted']}|{row['best_precision']:.1e}" in info[0].read_text()


# ------------------------------------------------------------------------- report


def _frame() -> pd.DataFrame:
    """Two methods, functions 1 (separ) and 15 (multi), 2-D, two instances each."""
    rows = []
    for method, hits in {"good": (30.0, 60.0), "bad": (math.inf, math.inf)}.items():
        for function in (1, 15):
            for instance, first in zip((1, 2), hits, strict=True):
                hit = first if function == 1 else math.inf
                rows.append({
                    "function": function, "function_name": bbob_report.FUNCTIONS[function],
                    "group": bbob_report.group_of(function), "dim": 2, "instance": instance,
                    "run": 0, "method": method, "library": "fold_jax", "budget": 200,
                    "evals_used": 200 if math.isinf(hit) else 120,
                    "evals_counted": 200 if math.isinf(hit) else 120,
                    "best_precision": 5.0 if math.isfinite(hit) else 50.0,
                    "evals_to_1e1": hit, **{c: math.inf for c in TARGET_COLUMNS[1:]},
                    "seconds": 0.01, "compile_s": 1.0, "seed": instance})
    return pd.DataFrame(rows)


def test_art_by_hand():
    frame = _frame()
    good = frame[(frame["method"] == "good") & (frame["function"] == 1)]
    # runs reached 1e1 at 30 and 60 evaluations: (30 + 60) / 2
    assert bbob_report.art(good, 1e1) == (45.0, 2, 2)
    # nobody reached 1e-1
    assert bbob_report.art(good, 1e-1) == (math.inf, 0, 2)
    both = frame[frame["method"] == "good"]
    # f15 runs missed after 200 evaluations each: (30 + 60 + 200 + 200) / 2
    assert bbob_report.art(both, 1e1) == (245.0, 2, 4)
    x, y = bbob_report.ecdf(both)
    # 2 hits among 4 runs x 5 targets, at 15 and 30 evaluations / dim
    assert list(x) == [15.0, 30.0] and list(y) == [1 / 20, 2 / 20]


def test_target_columns():
    assert TARGET_COLUMNS == ["evals_to_1e1", "evals_to_1e-1", "evals_to_1e-3",
                              "evals_to_1e-5", "evals_to_1e-8"]
    with pytest.raises(ValueError, match="power of ten"):
        bbob_report.target_column(3e-2)


def test_section_renders_art_table_and_ecdf(tmp_path):
    text = bbob_report.section({"bbob": _frame()}, tmp_path)
    assert "aRT in evaluations, 2-D" in text
    assert "| separ | good | 45 (2/2) |" in text
    assert "| multi | good | inf (0/2) |" in text
    assert (tmp_path / "bbob_ecdf.png").stat().st_size > 0
    assert bbob_report.section({}, tmp_path) == ""


def test_report_build_has_the_bbob_section(tmp_path):
    results.append("bbob", _frame().to_dict("records"), key=suite_bbob.KEY,
                   results_dir=tmp_path)
    summary = report.build(tmp_path, verbose=False).read_text()
    assert "## [BBOB (COCO)](report/bbob.md)" in summary  # the section's own page
    text = (tmp_path / report.PAGES_DIR / "bbob.md").read_text()
    assert "# BBOB (COCO)" in text and "aRT in evaluations" in text
    assert (tmp_path / "figures" / "bbob_ecdf.png").exists()
