"""The control races suite (fold_jax.bench.suites.control) and its report section."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fold_jax import results
from fold_jax.bench.suites import control as suite
from fold_jax.learn import recipes
from fold_jax.report import control as report


def _check_schema(name: str, rows: list[dict]) -> None:
    schema = results.schema(name)
    assert rows, name
    for r in rows:
        assert not results.undescribed(name, r), (name, results.undescribed(name, r))
        assert set(schema.key) - {"host", "backend", "device_kind", "n_devices"} <= set(r)
        for c in schema.columns:
            if c.core:
                assert c.name in r, (name, c.name)


def test_es_job_end_to_end_into_the_results_store(tmp_path):
    """One tiny tune-and-race job of an evosax ES on Pendulum (200-step episodes that
    never end early, so the ES env-step count is the transitions run) through the
    results store: rows fit their schemas, tuning scored on validation episodes, the
    race on the held-out ones, env steps = evals x episodes x horizon."""
    method = "control/evosax_snes"
    budget = 2 * suite.evals_per_step(method) * 4 * 200  # two ES steps
    out = suite.tune_and_race("pendulum", method, "quick", trials=1, seeds=(0,),
                              budget=budget)
    for name, rows in out.items():
        _check_schema(name, rows)
        results.append(name, rows, key=results.key(name), results_dir=tmp_path)
        assert len(results.load(tmp_path / f"{name}.csv")) == len(rows)
    race, = out["control"]
    tune, = out["control_tuning"]
    assert tune["eval_seed"] == suite.VAL_EVAL_SEED != race["eval_seed"] == suite.TEST_EVAL_SEED
    assert tune["selected"] and race["trial"] == 0 and race["library"] == "evosax"
    # two steps of 32 + 1 (the mean) evaluations, 4 episodes of 200 steps each
    assert race["env_steps_run"] == 2 * 33 * 4 * 200 == budget
    curve = pd.DataFrame(out["control_curves"])
    # evaluated every ES_EVAL_EVERY["pendulum"] = 3 steps and at the last one
    assert list(curve["env_steps"]) == [0.0, 2 * 33 * 800.0]
    # every held-out episode ran the full horizon: the ES count is the transitions
    assert np.all(curve["episode_length"] == 200)
    assert race["reached"] == (race["env_steps_to_target"] < math.inf)
    assert not race["capped"] and race["skipped_steps"] == 0  # nothing cut or dropped


def test_ppo_counts_transitions_on_the_same_episodes(monkeypatch):
    """PPO through the suite: its env steps are its transitions (whole iterations of
    64 envs x 64 steps), scored on the same held-out episodes (eval_seed) as the ES.

    Evaluated every iteration (4,096 transitions) instead of the suite's 16: the run
    stops at the first evaluation at or past the budget, so a budget of one iteration
    runs one, not the 16 of a whole evaluation interval (65,536 transitions, which
    this test once spent 12 s training); the count checked is the same."""
    monkeypatch.setattr(suite, "PPO_EVAL_EVERY", 4096)
    budget = 4096
    row, curve = suite.run("pendulum", suite.PPO, {"learning_rate": 3e-4}, 0, budget,
                           suite.TEST_EVAL_SEED)
    assert row["library"] == "rejax" and row["eval_seed"] == suite.TEST_EVAL_SEED
    assert row["env_steps_run"] >= budget and row["env_steps_run"] % 4096 == 0
    # one iteration of 64 envs x 64 steps: its transitions, not its 1 iteration or the
    # 64 env resets; the row names the interval it was evaluated at
    assert row["env_steps_run"] == 4096 and row["eval_env_steps"] == 4096
    assert list(curve["env_steps"]) == [0, 4096]
    assert np.isnan(row["evals_to_target"])
    assert np.all(curve["episode_length"] == 200)  # Pendulum: no early end, as for ES


def test_protocol_is_fixed_and_fair():
    """Same budget for every method on a task, the same spaces for both ES libraries,
    quick covers the three quick tasks briefly and full every task with >= 5 seeds."""
    assert suite.PROFILE["quick"]["tasks"] == ("cartpole", "acrobot", "pendulum")
    assert len(suite.PROFILE["full"]["seeds"]) >= 5
    assert set(suite.PROFILE["full"]["tasks"]) == {"cartpole", "acrobot", "pendulum",
                                                   "breakout_minatar", "memory_chain",
                                                   "cartpole_po"}
    es = recipes.get("control/es")
    assert recipes.get("control/evosax_open_es").space == es.space
    assert recipes.get("control/evosax_snes").space == recipes.get("control/snes_lowrank").space
    for profile in ("quick", "full"):
        libs = {recipes.get(m).library for m in suite.PROFILE[profile]["methods"]}
        assert libs == {"fold_jax", "evosax", "rejax"}
        assert set(suite.PROFILE[profile]["budgets"]) >= set(suite.PROFILE[profile]["tasks"])
    assert suite.evals_per_step("control/es") == 32
    assert suite.evals_per_step("control/evosax_open_es") == 33


def test_full_profile_builds_every_job_without_running_one(capsys):
    """The full profile's jobs, listed not run: every (task, recipe) once, PPO left out
    of the GRU memory tasks and CMA-ES out of Breakout's conv policy (d = 33,491) with
    the reason in a control.csv row, and the speed jobs at d ~ 1e5 and ~ 1e3."""
    jobs = list(suite.jobs("full"))
    races = [j for j in jobs if not j.key["method"].startswith("speed/")]
    methods = recipes.names(suite="control")
    assert len(races) == 6 * len(methods) == len({(j.key["task"], j.key["method"])
                                                  for j in races})
    skipped = {(j.key["task"], j.key["method"]) for j in races if "(not run)" in j.label}
    assert skipped == {("memory_chain", suite.PPO), ("cartpole_po", suite.PPO),
                       ("breakout_minatar", "control/evosax_cma_es")}
    assert all(j.key["seed"] == 4 and j.key["budget_env_steps"] == suite.BUDGETS[j.key["task"]]
               for j in races)
    out = capsys.readouterr().out
    assert "control/ppo not run on memory_chain: rejax 0.1.3's PPO has no recurrent" in out
    row, = next(j for j in races if j.key["task"] == "cartpole_po"
                and j.key["method"] == suite.PPO).run()["control"]
    _check_schema("control", [row])
    assert row["not_run"] and not row["reached"] and math.isnan(row["env_steps_to_target"])
    speeds = [j for j in jobs if j.key["method"].startswith("speed/")]
    assert [c.hidden for c in suite.SPEED["full"]] == [(256, 384), (32, 32)] and len(speeds) == 2
    assert suite._task("breakout_minatar", 0).threshold == suite.SUITE_THRESHOLDS[
        "breakout_minatar"]
    # quick: three tasks x three methods, nothing skipped, one speed job at d >= 1e5
    quick = list(suite.jobs("quick"))
    assert len(quick) == 3 * 3 + 1 and not any("(not run)" in j.label for j in quick)


def test_speed_rows_time_both_libraries_in_the_same_rounds():
    """A tiny speed configuration: one row per method, the same population, the ratio
    against evosax's Open_ES from the same rounds (its own row: exactly 1)."""
    methods = ("control/es_lowrank", suite.SPEED_BASELINE)  # two compiles, not three
    rows = suite.speed(suite.SpeedConfig((8,), 5, 1), "quick", methods, seconds=0.2)
    _check_schema("control_speed", rows)
    assert [r["method"] for r in rows] == list(methods)
    assert {r["population"] for r in rows} == {32} and {r["n_params"] for r in rows} == {58}
    assert rows[-1]["seconds_ratio"] == 1.0 and rows[-1]["library"] == "evosax"
    for r in rows:
        assert r["gen_median_s"] > 0 and r["rounds"] >= 3 and r["env_steps_per_gen"] == 160
        assert r["seconds_ratio"] == r["gen_median_s"] / rows[-1]["gen_median_s"]


def _frames() -> dict[str, pd.DataFrame]:
    rows, curves = [], []
    # env steps to target per seed: fold_jax's ES clearly fewer on cartpole, overlapping
    # with evosax's on acrobot, PPO beside; one evosax seed missed
    data = {("cartpole", "control/es", "fold_jax"): [1e5, 1.2e5, 1.1e5],
            ("cartpole", "control/evosax_open_es", "evosax"): [5e5, 6e5, math.inf],
            ("cartpole", "control/ppo", "rejax"): [2e5, 3e5, 2.5e5],
            ("acrobot", "control/es", "fold_jax"): [3e5, 5e5, 4e5],
            ("acrobot", "control/evosax_snes", "evosax"): [2e5, 6e5, 4.5e5]}
    for (task, method, lib), steps in data.items():
        for seed, s in enumerate(steps):
            rows.append({"task": task, "method": method, "library": lib, "seed": seed,
                         "threshold": 500.0, "reached": math.isfinite(s),
                         "env_steps_to_target": s, "time_to_target_s": s / 1e5,
                         "evals_to_target": s / 2000, "final_return": 500.0})
            for x in np.linspace(0, 6e5, 5):
                curves.append({"task": task, "method": method, "library": lib, "seed": seed,
                               "env_steps": x, "elapsed_s": x / 1e5,
                               "return": min(500.0, 500 * x / s)})
    return {"control": pd.DataFrame(rows), "control_curves": pd.DataFrame(curves)}


def test_headline_states_the_goal_from_the_rows(tmp_path):
    text = report.headline(_frames(), tmp_path)
    cartpole = next(line for line in text.splitlines() if line.startswith("- cartpole"))
    acrobot = next(line for line in text.splitlines() if line.startswith("- acrobot"))
    assert cartpole.startswith("- cartpole: met:") and "beside: control/ppo" in cartpole
    assert "2/3 reached" in cartpole  # evosax's miss is counted, not dropped
    assert "a tie" in acrobot  # acrobot: fold_jax median 4e5 vs 4.5e5, intervals overlap
    assert report.headline({}, tmp_path) == ""


def _speed(ours_s: float, d: int) -> list[dict]:
    return [{"task": "cartpole", "n_params": d, "population": 32, "episode_length": 500,
             "num_episodes": 4, "method": m, "library": lib, "gen_median_s": t,
             "gen_iqr_s": 0.01, "mem_bytes": 2.0 ** 20, "seconds_ratio": t / 1.0}
            for m, lib, t in (("control/es", "fold_jax", 0.9), ("control/es_lowrank",
                                                                 "fold_jax", ours_s),
                              ("control/evosax_open_es", "evosax", 1.0))]


def test_speed_goal_is_judged_from_rows_at_large_d_only(tmp_path):
    """goals.toml declares the speed goal as data; the headline judges it from
    control_speed rows: met at d >= 1e5 with ratio 0.3, missed with 0.6, and d ~ 1e3
    shown with its ratio but not judged."""
    goal, = report.speed_goals()
    assert (goal.ours, goal.peer, goal.min_params, goal.seconds_ratio) == (
        "fold_jax", "evosax", 1e5, 0.5)
    speed = pd.DataFrame(_speed(0.3, 100_738) + _speed(1.1, 1_282))
    lines = report.speed_lines(speed)
    big = next(line for line in lines if "d = 100,738" in line)
    small = next(line for line in lines if "d = 1,282" in line)
    assert "met" in big and "control/es_lowrank" in big and "ratio 0.30" in big
    assert "shown, not judged" in small and "ratio 0.90" in small
    missed = report.speed_lines(pd.DataFrame(_speed(0.6, 200_000)))
    assert any("missed" in line and "ratio 0.60" in line for line in missed)
    frames = _frames() | {"control_speed": speed}
    assert big in report.headline(frames, tmp_path)


def test_section_draws_one_figure_per_task(tmp_path):
    frames = _frames()
    skip = {"task": "cartpole_po", "method": "control/ppo", "library": "rejax", "seed": 4,
            "threshold": 500.0, "reached": False, "env_steps_to_target": math.nan,
            "time_to_target_s": math.nan, "evals_to_target": math.nan,
            "final_return": math.nan, "not_run": "rejax has no recurrent policy"}
    frames["control"] = pd.concat([frames["control"], pd.DataFrame([skip])])
    text = report.section(frames, tmp_path)
    assert "- cartpole_po / control/ppo: rejax has no recurrent policy" in text
    assert "### cartpole_po" not in text  # a row that never raced is no table
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["control_acrobot.png",
                                                               "control_cartpole.png"]
    assert "### cartpole" in text and "### acrobot" in text and "inf" in text


@pytest.mark.parametrize("bad", ["nope"])
def test_unknown_profile_is_refused(bad):
    with pytest.raises(ValueError, match="profile"):
        list(suite.jobs(bad))


def test_a_budget_below_one_step_is_refused_before_training():
    with pytest.raises(ValueError, match="budget=1000 env steps is less than one step"):
        suite.run("cartpole", "control/es", None, 0, 1000, suite.TEST_EVAL_SEED)
