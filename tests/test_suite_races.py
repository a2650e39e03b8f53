"""fold_jax.bench.suites.races: the tuning protocol (trials on val, selection, seeds on test)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fold_jax.bench import race_grid
from fold_jax.bench.common import TUNING_SEED
from fold_jax.bench.suites import races as suite_races
from fold_jax.learn import recipes


def _trial(i, score, best, metric="accuracy"):
    return {"trial": i, "score": score, "best_val_metric": best, "target_metric": metric}


def test_select_prefers_fewest_evaluations_then_best_metric_then_lower_index():
    assert suite_races.select([_trial(0, math.inf, 0.99), _trial(1, 800.0, 0.95),
                               _trial(2, 400.0, 0.951)]) == 2
    # all missed: the best validation metric in its direction wins
    assert suite_races.select([_trial(0, math.inf, 0.80), _trial(1, math.inf, 0.90)]) == 1
    assert suite_races.select([_trial(0, math.inf, 0.3, "loss"),
                               _trial(1, math.inf, 0.2, "loss")]) == 1
    assert suite_races.select([_trial(0, 100.0, 0.9), _trial(1, 100.0, 0.9)]) == 0
    # a NaN metric (a diverged trial) never beats a finite one
    assert suite_races.select([_trial(0, math.inf, math.nan), _trial(1, math.inf, 0.1)]) == 1
    # a non-finite metric ranks last in either direction (loss: lower is better)
    assert suite_races.select([_trial(0, math.inf, math.nan, "loss"),
                               _trial(1, math.inf, 0.5, "loss")]) == 1
    with pytest.raises(ValueError, match="at least one"):
        suite_races.select([])


def test_select_ranks_trials_by_their_median_over_seeds():
    # rows of one trial share its score (the median over its seeds); the metric
    # tie-break is the median over the trial's rows, not its luckiest seed
    rows = [_trial(0, math.inf, 0.99), _trial(0, math.inf, 0.70), _trial(0, math.inf, 0.71),
            _trial(1, math.inf, 0.80), _trial(1, math.inf, 0.81), _trial(1, math.inf, 0.79)]
    assert suite_races.select(rows) == 1
    rows = [_trial(3, 500.0, 0.9), _trial(3, 500.0, 0.9), _trial(5, 400.0, 0.9),
            _trial(5, 400.0, 0.9)]
    assert suite_races.select(rows) == 5  # the trial number, not a row index


def _tiny_profile(mp: pytest.MonkeyPatch) -> str:
    """Register the profile "tiny" (2 trials, seeds [0, 1], 50 steps) through ``mp``: two
    trials are the fewest that still make a selection."""
    mp.setitem(suite_races.PROFILE, "tiny",
               dict(trials=2, seeds=[0, 1], max_steps=50, budget_s=60.0, grids=[]))
    for module in (suite_races, race_grid):  # the grid's budgets live in race_grid
        mp.setattr(module, "check_profile", lambda p: p)
    # each race times its step cost for STEP_COST_S (1 s); 0.05 s still gives the
    # minimum of 5 alternating rounds, and no test here checks the times themselves
    mp.setattr(suite_races, "STEP_COST_S", 0.05)
    return "tiny"


@pytest.fixture
def tiny_profile(monkeypatch):
    return _tiny_profile(monkeypatch)


def test_tune_and_race_tunes_on_val_then_races_the_selected_trial_on_test(tiny_profile):
    out = suite_races.tune_and_race("breast_cancer", "adam", "dense", tiny_profile)
    trials, races = out["tuning"], out["races"]
    assert [t["trial"] for t in trials] == [0, 1]
    assert all(t["split"] == "val" and t["n_trials"] == 2 for t in trials)
    assert [t["seed"] for t in trials] == [TUNING_SEED + i for i in range(2)]
    drawn = recipes.trials("adam", 2)
    assert [json.loads(t["hparams"]) for t in trials] == drawn
    (chosen,) = [t for t in trials if t["selected"]]
    assert chosen["trial"] == suite_races.select(trials)
    assert [r["seed"] for r in races] == [0, 1]
    for r in races:
        assert r["trial"] == chosen["trial"] and r["n_trials"] == 2
        assert r["hparams"] == chosen["hparams"] and r["library"] == "optax"
        assert "final_test_metric" in r and "best_val_metric" not in r
    splits = {c["split"] for c in out["curves"]}
    assert splits >= {"train", "test"} and "val" not in splits
    # breast_cancer's own evaluation grid (Race.eval_every), not the default one
    every = suite_races.TARGETS["breast_cancer"].eval_every
    assert every == 2 != suite_races.EVAL_EVERY
    assert all(r["eval_every"] == every for r in races)
    assert {c["step"] % every for c in out["curves"]} == {0} and max(
        c["step"] for c in out["curves"]) > 0
    assert all(r["steps_to_target"] % every == 0 for r in races if r["reached"])
    assert all(not any(k.startswith("test") for k in t) for t in trials)
    # one step cost per job (alternating rounds), on every seed's row alike
    cost_columns = ("step_median_s", "step_iqr_s", "forward_median_s", "forward_iqr_s",
                    "cost_rounds", "eval_forwards")
    (cost,) = {tuple(r[c] for c in cost_columns) for r in races}
    step_s, _, fwd_s, _, rounds, per_eval = cost
    assert step_s > 0 and fwd_s > 0 and rounds >= 5 and per_eval > 0
    for r in races:
        want = r["evals_to_target"] * per_eval  # inf stays inf for a miss
        assert r["forwards_to_target"] == pytest.approx(want, rel=1e-12) or (
            math.isinf(want) and math.isinf(r["forwards_to_target"]))


def test_jobs_cover_the_grids_and_say_what_they_leave_out(capsys):
    quick = list(suite_races.jobs("quick"))
    labels = [j.label for j in quick]
    assert len(labels) == len(set(labels))
    assert {"digits/evosax_snes/dense", "digits/adam/dense",
            "breast_cancer/gld/dense"} <= set(labels)
    assert all(j.key["seed"] == suite_races.race_seeds("quick", j.key["task"])[-1]
               for j in quick)
    full = {j.label for j in suite_races.jobs("full")}
    out = capsys.readouterr().out
    assert "breast_cancer/evosax_cma_es/dense" in full  # d = 513
    assert "digits/evosax_cma_es/dense" not in full
    assert "evosax_cma_es not run on digits/dense: d = 26122 > 4096" in out
    assert "digits/evosax_snes/pruned" not in full
    assert "evosax_snes not run on digits/pruned: cannot keep a pruned net's mask" in out
    p = suite_races.PROFILE
    assert p["quick"]["trials"] >= 4 and len(p["quick"]["seeds"]) >= 3
    # every evosax peer races in quick, and each quick task has a fold_jax estimator and
    # an evosax peer to compare
    peers = {"evosax_open_es", "evosax_snes", "evosax_pgpe", "evosax_ars"}
    assert peers <= {label.split("/")[1] for label in labels}
    for task in ("digits", "breast_cancer"):  # spirals races in full only
        raced = {label.split("/")[1] for label in labels if label.startswith(task + "/")}
        assert any(recipes.get(m).library == "evosax" for m in raced), task
        assert any(m.startswith("zo_") for m in raced), task
    assert p["full"]["trials"] >= 20 and len(p["full"]["seeds"]) >= 5
    for task in suite_races.TARGETS:  # the protocol's minimum on every task
        assert len(suite_races.race_seeds("quick", task)) >= 3
        assert len(suite_races.race_seeds("full", task)) >= 5
    # the small tasks race on more seeds (their per-seed evaluations range 2-3x)
    assert suite_races.race_seeds("quick", "breast_cancer") == list(range(7))
    assert suite_races.race_seeds("full", "spirals") == list(range(10))
    assert suite_races.race_seeds("quick", "digits") == [0, 1, 2]


def test_the_small_tasks_race_every_small_population_in_both_libraries():
    # a population raced by one library only would decide the peer comparison by the
    # grid: at 8 evosax's Open_ES beat its own 16 on spirals (an exploratory race)
    # full races every small population on both small tasks; quick (cut for room) the
    # largest on breast_cancer, in both libraries alike
    full = {j.label for j in suite_races.jobs("full")}
    for task in ("breast_cancer", "spirals"):
        for k in recipes.SMALL_POPULATIONS:
            for name in (f"snes_lowrank{k}", f"snes{k}", f"evosax_open_es{k}",
                         f"evosax_snes{k}"):
                assert f"{task}/{name}/dense" in full, name
    quick = {label.split("/")[1] for label in (j.label for j in suite_races.jobs("quick"))
             if label.startswith("breast_cancer/")}
    k = max(recipes.SMALL_POPULATIONS)
    assert {f"snes_lowrank{k}", f"evosax_open_es{k}", f"evosax_snes{k}"} <= quick
    assert not any(name.endswith(str(min(recipes.SMALL_POPULATIONS))) for name in quick)


def test_every_recipe_on_a_task_gets_the_same_trials_and_at_least_the_minimum():
    for profile, least in (("quick", 4), ("full", 20)):
        grids = suite_races.PROFILE[profile]["grids"]
        for tasks_, _, _ in grids:
            for task in tasks_:  # per task, not per recipe: one count for all recipes
                assert suite_races.n_trials(profile, task) >= least, (profile, task)
    assert suite_races.n_trials("quick", "digits") == 4
    assert suite_races.n_trials("quick", "spirals") == 8  # task_trials
    # the small tasks' trials on 3 seeds each, for every recipe there alike
    assert suite_races.trial_seeds("quick", "spirals") == 3
    assert suite_races.trial_seeds("quick", "digits") == 1


# The three per-task overrides below act on one race of spirals: its own seeds, step
# budget and trial count, each set to a value unlike the tiny profile's (seeds [0, 1],
# 50 steps, 2 trials), so each test still fails if its override is ignored or read
# from another's key, and the three tests share one tune-and-race (1 trial x 4 steps
# and 3 race seeds) instead of training three.
SPIRALS = {"task_seeds": {"spirals": [4, 5, 6]}, "task_max_steps": {"spirals": 4},
           "task_trials": {"spirals": 1}}


@pytest.fixture(scope="module")
def spirals_race():
    """``tune_and_race("spirals", "adam", "dense")`` under the tiny profile plus the
    SPIRALS overrides, run once for the module."""
    with pytest.MonkeyPatch.context() as mp:
        profile = _tiny_profile(mp)
        for key, value in SPIRALS.items():
            mp.setitem(suite_races.PROFILE[profile], key, value)
        yield suite_races.tune_and_race("spirals", "adam", "dense", profile)


def test_task_seeds_race_that_task_on_its_own_seeds(tiny_profile, monkeypatch, spirals_race):
    monkeypatch.setitem(suite_races.PROFILE[tiny_profile], "task_seeds", SPIRALS["task_seeds"])
    assert suite_races.race_seeds(tiny_profile, "breast_cancer") == [0, 1]
    out = spirals_race
    assert [r["seed"] for r in out["races"]] == [4, 5, 6]
    # the tuning trials keep their own seeds, apart from the race seeds
    assert {t["seed"] for t in out["tuning"]}.isdisjoint({4, 5, 6})
    assert {c["seed"] for c in out["curves"]} == {4, 5, 6}


def test_task_max_steps_give_that_task_its_own_budget(tiny_profile, monkeypatch,
                                                      spirals_race):
    # digits races on 1,000 steps in quick (its peers missed at 500), spirals too (its
    # population-8 recipes need 500-900 steps), breast_cancer on 500
    assert suite_races.step_budget("quick", "digits") == 1000
    assert suite_races.step_budget("quick", "spirals") == 1000
    assert suite_races.step_budget("quick", "breast_cancer") == 500
    assert suite_races.step_budget("full", "digits") == 3000
    quick = {j.label: j.key for j in suite_races.jobs("quick")}
    assert quick["digits/adam/dense"]["max_steps"] == 1000
    assert quick["digits/adam/pruned"]["max_steps"] == 1000
    full = {j.label: j.key for j in suite_races.jobs("full")}  # spirals races in full only
    assert full["spirals/snes8/dense"]["max_steps"] == 3000
    assert quick["breast_cancer/adam/dense"]["max_steps"] == 500
    monkeypatch.setitem(suite_races.PROFILE[tiny_profile], "task_max_steps",
                        SPIRALS["task_max_steps"])
    assert suite_races.step_budget(tiny_profile, "breast_cancer") == 50
    assert suite_races.step_budget(tiny_profile, "spirals") == 4
    out = spirals_race
    # every trial and race ran on the task's budget (4 steps: far short of the target)
    assert all(r["max_steps"] == 4 and r["steps_run"] <= 4 for r in out["tuning"] + out["races"])


def test_task_trials_override_the_profile_for_that_task_only(tiny_profile, monkeypatch,
                                                            spirals_race):
    monkeypatch.setitem(suite_races.PROFILE[tiny_profile], "task_trials",
                        SPIRALS["task_trials"])
    assert suite_races.n_trials(tiny_profile, "spirals") == 1
    assert suite_races.n_trials(tiny_profile, "breast_cancer") == 2
    out = spirals_race
    assert [t["trial"] for t in out["tuning"]] == [0]
    assert all(r["n_trials"] == 1 for r in out["tuning"] + out["races"])


def test_task_trial_seeds_score_each_trial_on_the_median_of_its_seeds(tiny_profile,
                                                                      monkeypatch):
    monkeypatch.setitem(suite_races.PROFILE[tiny_profile], "task_trial_seeds",
                        {"breast_cancer": 3})
    assert suite_races.trial_seeds(tiny_profile, "breast_cancer") == 3
    assert suite_races.trial_seeds(tiny_profile, "spirals") == 1
    out = suite_races.tune_and_race("breast_cancer", "adam", "dense", tiny_profile)
    trials, n = out["tuning"], 2  # n trials, 3 seeds each (3: a median is not a mean)
    assert len(trials) == n * 3 and all(t["trial_seeds"] == 3 for t in trials)
    # seeds TUNING_SEED + trial + j * n_trials: distinct, and trial j = 0 keeps the
    # one-seed protocol's seed
    assert sorted(t["seed"] for t in trials) == [TUNING_SEED + s
                                                 for s in range(n * 3)]
    assert {t["seed"] for t in trials if t["trial"] == 1} == {
        TUNING_SEED + 1 + j * n for j in range(3)}
    for i in range(n):
        mine = [t for t in trials if t["trial"] == i]
        assert {t["score"] for t in mine} == {float(np.median(
            [t["evals_to_target"] for t in mine]))}
        assert len({t["selected"] for t in mine}) == 1  # a trial is selected whole
    (chosen,) = {t["trial"] for t in trials if t["selected"]}
    assert chosen == suite_races.select(trials)
    assert all(r["trial"] == chosen for r in out["races"])


def test_step_cost_pays_for_what_fit_keeps_and_divides_by_evaluations(monkeypatch):
    """An evosax peer evaluates its mean only for the reported loss: the timed program
    must keep that output (as fit does), or XLA drops a forward pass from the cost. And
    the window's time is divided by its evaluations (12 + 2 + 2 + ... for GLD)."""
    from fold_jax.bench import timing

    seen = {}
    real = timing.interleaved

    def spy(calls, **kw):
        seen["calls"] = calls
        return real(calls, **kw)

    monkeypatch.setattr(suite_races.timing, "interleaved", spy)
    monkeypatch.setattr(suite_races, "STEP_COST_S", 0.05)  # >= 5 rounds all the same
    cost = suite_races.step_cost("breast_cancer", "evosax_open_es", "dense", None)
    compiled, args = seen["calls"][0]
    _, kept = compiled(*args)
    assert set(kept) >= {"loss", "evals"}  # the mean's loss is an output, so it is paid
    assert cost["eval_forwards"] > 0
    # GLD: evaluations per step vary, so the cost is per evaluation from the window's count
    cost = suite_races.step_cost("breast_cancer", "gld", "dense", None)
    compiled, args = seen["calls"][0]
    evals = int(compiled(*args)[1]["evals"].sum())
    assert evals != 12 * suite_races.EVAL_EVERY  # nominations and confirmations mixed
    t_step = cost["step_median_s"] * suite_races.EVAL_EVERY
    assert cost["eval_forwards"] == pytest.approx(
        t_step / evals / cost["forward_median_s"], rel=1e-9)


def test_conv_variant_races_nets_cnn_on_digits_on_the_fused_path():
    """Item 5 of issue 33: the "conv" variant races nets.cnn on digits' 8x8 images beside
    the MLPs; a rank-r recipe perturbs every conv kernel and the head's kernel as factors
    (biases full-rank), nothing materialized, and its step raises no FallbackWarning."""
    import warnings

    import jax

    from fold_jax.estimators import zo

    method = "zo_lowrank_ranked32"
    task, _, params, loss, m = suite_races._built("digits", method, "conv", None, 0)
    assert set(params["params"]) == {"conv_0", "conv_1", "head"}
    xb, yb = task.x_train[:16], task.y_train[:16]
    rank = recipes.get(method).fixed["rank"]
    info = zo.value_and_grad(loss, num_directions=4, rank=rank).describe(params, xb, yb)
    assert info["materialized"] == 0
    for path, leaf in info["leaves"].items():
        assert leaf["path"] == ("fused" if "kernel" in path else "full_rank"), (path, leaf)
    with warnings.catch_warnings():
        warnings.simplefilter("error", zo.FallbackWarning)
        state, _ = jax.jit(m.step)(m.init(params), jax.random.key(0), xb, yb)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
    # the full grid races it on digits only; elsewhere it is left out with a reason
    assert ("digits", method, "conv") in suite_races.grid("full")
    assert "not an image" in suite_races._why_not(method, "spirals", "conv")
    assert suite_races._why_not(method, "digits", "conv") == ""
    assert "d = 9930 > 4096" in suite_races._why_not("evosax_cma_es", "digits", "conv")
