"""The door for a researcher's method, end to end: a module written to a temporary folder
registers a method with fold_jax.learn.recipes.register, ``fold_jax.bench.run.main`` imports
it (``--imports``) and races it (``--methods`` / ``--tasks``) beside a shipped recipe
into a temporary results folder, under the same tuning budget, seeds and intervals.

The races profile is shrunk for the test (1 trial, 2 seeds, 20 steps on breast_cancer,
the smallest race task: d = 513); everything else is the command line's real path.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from fold_jax import results
from fold_jax.bench import run
from fold_jax.bench.suites import races as suite_races
from fold_jax.learn import recipes

MODULE = textwrap.dedent('''
    """A researcher's own forward-only method: antithetic gaussian ES on 8 directions
    with SGD on the estimate (not one of the shipped recipes' settings)."""
    import optax

    from fold_jax import methods, recipes

    @recipes.register("mine", space={"learning_rate": recipes.LogUniform(1e-2, 3e-1),
                                     "sigma": recipes.LogUniform(1e-3, 1e-1)},
                      fixed={"num_directions": 8}, description="ES-8 + SGD")
    def mine(loss, learning_rate, sigma, num_directions):
        return methods.zeroth_order(loss, optax.sgd(learning_rate),
                                    num_directions=num_directions, sigma=sigma)
''')

TINY = dict(trials=1, seeds=[0, 1], max_steps=20, budget_s=60.0,
            grids=[(["breast_cancer"], ["adam"], ["dense"])])


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A fresh module ``user_methods_<id>`` on sys.path; its recipe removed afterwards."""
    name = f"user_methods_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)
    if "mine" in recipes.RECIPES:
        recipes.unregister("mine")


def test_a_registered_method_races_beside_a_shipped_recipe(user_module, tmp_path,
                                                          monkeypatch):
    monkeypatch.setitem(suite_races.PROFILE, "quick", TINY)
    monkeypatch.setattr(suite_races, "STEP_COST_S", 0.05)  # the step-cost rounds, shortened
    out = tmp_path / "results"
    code = run.main(["--imports", user_module, "--methods", "mine,adam", "--tasks",
                     "breast_cancer", "--results-dir", str(out), "--no-report", "--new"])
    assert code == 0
    assert recipes.get("mine").library == recipes.USER
    frames = results.load(out)
    races, tuning = frames["races"], frames["tuning"]
    assert set(races["method"]) == {"mine", "adam"}
    assert races.groupby("method")["library"].first().to_dict() == {"mine": "user",
                                                                    "adam": "optax"}
    # the same protocol on both sides: seeds, trials, step budget, evaluation interval
    for column in ("seed", "n_trials", "max_steps", "eval_every", "batch_size", "task"):
        mine = sorted(races.loc[races["method"] == "mine", column].tolist())
        adam = sorted(races.loc[races["method"] == "adam", column].tolist())
        assert mine == adam, column
    assert sorted(races.loc[races["method"] == "mine", "seed"]) == TINY["seeds"]
    assert (tuning.groupby("method")["trial"].nunique() == TINY["trials"]).all()
    # the user's rows are its own measurements: 8 evaluations a step (4 antithetic pairs;
    # fold_jax.estimators.zo's estimate counts num_directions evaluations), Adam's one
    per_step = races.groupby("method")["evals_per_step"].median()
    assert per_step["mine"] == 8 and per_step["adam"] == 1
    assert '"num_directions":8' in races.loc[races["method"] == "mine", "hparams"].iloc[0]
    runs = results.runs(out)
    (row,) = runs.to_dict("records")
    assert row["methods"] == "mine,adam" and row["imports"] == user_module


def test_unknown_method_or_task_is_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "results"
    assert run.main(["--methods", "nope", "--results-dir", str(out), "--no-report"]) == 2
    assert "nope" in capsys.readouterr().err and not (out / "races.csv").exists()
    assert run.main(["--tasks", "mnist", "--results-dir", str(out), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "mnist" in err and "breast_cancer" in err  # names the allowed tasks
    assert run.main(["--imports", "no_such_module_xyz", "--results-dir", str(out)]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err


def test_methods_with_a_part_that_takes_none_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit):
        run.main(["--only", "bbob", "--methods", "adam", "--results-dir", str(tmp_path)])


def test_selection_grid_keeps_each_tasks_protocol():
    sel = suite_races.Selection(("adam",), ())
    grid = suite_races.grid("quick", sel)
    assert {v for *_, v in grid} == {"dense"} and {m for _, m, _ in grid} == {"adam"}
    # every task the quick grids race on, once
    assert [t for t, _, _ in grid] == list(dict.fromkeys(
        t for ts, _, _ in suite_races.PROFILE["quick"]["grids"] for t in ts))
    only_tasks = suite_races.grid("quick", suite_races.Selection((), ("digits",)))
    assert {t for t, _, _ in only_tasks} == {"digits"}
    assert ("digits", "adam", "pruned") in only_tasks  # the profile's variants kept


def test_the_adding_a_method_page_runs(monkeypatch):
    """docs/adding-a-method.md's python blocks, in order: the registration, the
    strategy class and the check; the recipes they add are removed afterwards."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "adding-a-method.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3
    monkeypatch.setattr(recipes, "RECIPES", dict(recipes.RECIPES))  # restored afterwards
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "adding-a-method.md", "exec"), namespace)
    assert recipes.get("sign_es").library == "user" and "my_es" in recipes.names("user")
    info = namespace["info"]
    # 8 evaluations a step (4 mirrored pairs); 200 sign steps of >= 1e-3 from w = 0 toward
    # (0, 1, 2, 3) lower the loss from mean(y^2) (14 in expectation for unit gaussians)
    assert int(info["evals"]) == 8
    x, y = namespace["x"], namespace["y"]
    start = float(namespace["loss"]({"w": 0 * x[0]}, x, y))
    assert 0 <= float(info["loss"]) < start
