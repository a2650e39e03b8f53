"""The control races suite (fold_jax.bench.suites.control) and its report section."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fold_jax import recipes, results
from fold_jax.bench.suites import control as suite
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


def test_ppo_counts_transitions_on_the_same_episodes():
    """PPO through the suite: its env steps are its transitions (whole iterations of
    64 envs x 64 steps), scored on the same held-out episodes (eval_seed) as the ES."""
    budget = 4096
    row, curve = suite.run("pendulum", suite.PPO, {"learning_rate": 3e-4}, 0, budget,
                           suite.TEST_EVAL_SEED)
    assert row["library"] == "rejax" and row["eval_seed"] == suite.TEST_EVAL_SEED
    assert row["env_steps_run"] >= budget and row["env_steps_run"] % 4096 == 0
    assert np.isnan(row["evals_to_target"])
    assert np.all(curve["episode_length"] == 200)  # Pendulum: no early end, as for ES


def test_protocol_is_fixed_and_fair():
    """Same budget for every method on a task, the same spaces for both ES libraries,
    quick covers CartPole only and full every task with >= 5 seeds."""
    assert suite.PROFILE["quick"]["tasks"] == ("cartpole",)
    assert len(suite.PROFILE["full"]["seeds"]) >= 5
    assert set(suite.PROFILE["full"]["tasks"]) == {"cartpole", "acrobot", "pendulum"}
    es = recipes.get("control/es")
    assert recipes.get("control/evosax_open_es").space == es.space
    assert recipes.get("control/evosax_snes").space == recipes.get("control/snes_lowrank").space
    for profile in ("quick", "full"):
        libs = {recipes.get(m).library for m in suite.PROFILE[profile]["methods"]}
        assert libs == {"fold_jax", "evosax", "rejax"}
    assert suite.evals_per_step("control/es") == 32
    assert suite.evals_per_step("control/evosax_open_es") == 33


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


def test_section_draws_one_figure_per_task(tmp_path):
    text = report.section(_frames(), tmp_path)
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
