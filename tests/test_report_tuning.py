"""fold_jax.report.tuning: the tuning table and fold_jax vs evosax, on synthetic rows."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from fold_jax.report import tuning


def _races(evals: dict[str, float], seconds: dict[str, float], n_params: int = 26122,
           forwards: dict[str, float] | None = None):
    """Three seeds per method; ``forwards`` per method (None: the column is absent, as
    in runs older than it)."""
    libs = {"adam": "optax", "zo_lowrank_ranked": "fold_jax", "gld": "fold_jax",
            "evosax_snes": "evosax", "evosax_open_es": "evosax"}
    rows = []
    for method, e in evals.items():
        for seed in (0, 1, 2):
            rows.append({"task": "digits", "variant": "dense", "method": method,
                         "library": libs[method], "seed": seed, "reached": math.isfinite(e),
                         "evals_to_target": e * (1 + 0.01 * seed),
                         "time_to_target_s": seconds[method] * (1 + 0.01 * seed),
                         "steps_to_target": e / 10, "final_test_metric": 0.96,
                         "n_params": n_params})
            if forwards is not None:
                rows[-1]["forwards_to_target"] = forwards[method] * (1 + 0.01 * seed)
    return pd.DataFrame(rows)


def test_peers_picks_each_librarys_best_and_reads_the_goal():
    races = _races({"adam": 25.0, "zo_lowrank_ranked": 3000.0, "gld": math.inf,
                    "evosax_snes": 6000.0, "evosax_open_es": 9000.0},
                   {"adam": 0.1, "zo_lowrank_ranked": 1.0, "gld": math.inf,
                    "evosax_snes": 3.0, "evosax_open_es": 4.0})
    (row,) = tuning.peers(races).to_dict("records")
    assert row["fold_jax method"] == "zo_lowrank_ranked"  # gld missed; adam is not fold_jax
    assert row["evosax strategies raced"] == "evosax_open_es, evosax_snes"
    assert row["evosax method"] == "evosax_snes"
    # medians over seeds of x * (1, 1.01, 1.02) are x * 1.01 on both sides: ratio exact
    assert row["evals evosax / fold_jax"] == pytest.approx(2.0, rel=1e-12)
    assert row["time evosax / fold_jax"] == pytest.approx(3.0, rel=1e-12)
    text = tuning._goal(tuning.peers(races))  # no forwards column: the clocks decide
    assert "goal (> 1x the evaluations, >= 2x in seconds) met" in text
    assert "not comparable" in text and "clocks only" in text
    assert math.isnan(row["forwards evosax / fold_jax"])


@pytest.mark.parametrize("forwards_ratio, verdict", [(2.5, "met"), (1.5, "not met")])
def test_goal_needs_both_the_clocks_and_the_alternating_round_costs(forwards_ratio, verdict):
    races = _races({"zo_lowrank_ranked": 3000.0, "evosax_snes": 6000.0},
                   {"zo_lowrank_ranked": 1.0, "evosax_snes": 3.0},
                   forwards={"zo_lowrank_ranked": 400.0, "evosax_snes": 400.0 * forwards_ratio})
    (row,) = tuning.peers(races).to_dict("records")
    assert row["forwards evosax / fold_jax"] == pytest.approx(forwards_ratio, rel=1e-12)
    assert row["fold_jax forwards"] == pytest.approx(404.0, rel=1e-12)  # median seed
    text = tuning._goal(tuning.peers(races))
    assert f"3x the seconds by the races' clocks and {forwards_ratio:g}x the forward " \
           f"passes to target" in text
    assert text.rstrip().endswith(f"goal (> 1x the evaluations, >= 2x in seconds) {verdict}.")


@pytest.mark.parametrize("lacking", ["zo_lowrank_ranked", "evosax_snes"])
def test_a_side_with_rows_lacking_forwards_is_not_comparable_never_a_miss(lacking):
    """A run resumed across the column's introduction: one seed lacks it. That side's
    forwards are NaN (not inf, which would flip the verdict), and the clocks decide."""
    races = _races({"zo_lowrank_ranked": 3000.0, "evosax_snes": 6000.0},
                   {"zo_lowrank_ranked": 1.0, "evosax_snes": 3.0},
                   forwards={"zo_lowrank_ranked": 400.0, "evosax_snes": 600.0})
    races.loc[(races["method"] == lacking) & (races["seed"] == 0), "forwards_to_target"] = \
        math.nan
    (row,) = tuning.peers(races).to_dict("records")
    assert math.isnan(row[f"{'evosax' if lacking == 'evosax_snes' else 'fold_jax'}"
                          f" forwards"])
    assert math.isnan(row["forwards evosax / fold_jax"])
    text = tuning._goal(tuning.peers(races))
    assert "clocks only" in text and text.rstrip().endswith("met.")


def test_both_sides_missing_make_forwards_not_comparable_not_a_pass():
    races = _races({"zo_lowrank_ranked": math.inf, "evosax_snes": math.inf},
                   {"zo_lowrank_ranked": math.inf, "evosax_snes": math.inf},
                   forwards={"zo_lowrank_ranked": math.inf, "evosax_snes": math.inf})
    text = tuning._goal(tuning.peers(races))
    assert "not comparable" in text and text.rstrip().endswith("not met.")


def test_goal_not_met_when_evosax_needs_fewer_evaluations():
    races = _races({"zo_lowrank_ranked": 3000.0, "evosax_snes": 2000.0},
                   {"zo_lowrank_ranked": 1.0, "evosax_snes": 3.0})
    assert "not met" in tuning._goal(tuning.peers(races))


def test_goal_says_when_it_rests_on_the_peers_misses():
    races = _races({"zo_lowrank_ranked": 3000.0, "evosax_snes": math.inf},
                   {"zo_lowrank_ranked": 1.0, "evosax_snes": math.inf})
    races.loc[(races["method"] == "evosax_snes") & (races["seed"] == 0),
              ["reached", "evals_to_target", "time_to_target_s"]] = [True, 1000.0, 0.3]
    (row,) = tuning.peers(races).to_dict("records")
    assert row["evosax reached"] == "1/3" and row["fold_jax reached"] == "3/3"
    text = tuning._goal(tuning.peers(races))
    assert "met only through the peer's misses" in text and "on 1/3 seeds" in text
    # reversed: fold_jax's median is the miss, and the sentence says so
    races["method"] = races["method"].map({"zo_lowrank_ranked": "evosax_snes",
                                           "evosax_snes": "zo_lowrank_ranked"})
    races["library"] = races["library"].map({"fold_jax": "evosax", "evosax": "fold_jax"})
    text = tuning._goal(tuning.peers(races))
    assert "not met: zo_lowrank_ranked reached the target on 1/3 seeds" in text


def test_section_lists_trials_selection_and_recipes_not_run():
    races = _races({"zo_lowrank_ranked": 3000.0, "evosax_snes": 6000.0},
                   {"zo_lowrank_ranked": 1.0, "evosax_snes": 3.0})
    trials = pd.DataFrame([
        {"task": "digits", "variant": "dense", "method": m, "library": lib, "trial": i,
         "n_trials": 2, "hparams": f'{{"sigma":{0.01 * (i + 1)}}}', "reached": i == 1,
         "target_metric": "accuracy",
         "score": 500.0 if i == 1 else math.inf, "best_val_metric": 0.9 + 0.05 * i,
         "selected": i == 1}
        for m, lib in (("zo_lowrank_ranked", "fold_jax"), ("evosax_snes", "evosax"))
        for i in range(2)])
    table = tuning.trials_table(trials)
    assert list(table["selected trial"]) == [1, 1]
    assert list(table["reached val target"]) == [1, 1]
    text = tuning.section({"tuning": trials, "races": races}, None)
    assert "2 trials" in text and '{"sigma":0.02}' in text
    assert "fold_jax vs evosax" in text
    assert "`evosax_cma_es` not run on digits (d = 26122)" in text
    assert tuning.section({}, None) == ""


def test_trials_table_counts_trials_not_seed_rows_and_takes_medians():
    # 3 trials x 3 seeds: trial 1 is selected; its seeds' best metrics 0.96, 0.90 and
    # NaN (a diverged seed), so its median is 0.90 (NaN ranks worst, as select() does)
    rows = []
    for i, score in enumerate((math.inf, 500.0, 700.0)):
        for j, best in enumerate((0.96, 0.90, math.nan) if i == 1 else (0.8, 0.8, 0.8)):
            rows.append({"task": "spirals", "variant": "dense", "method": "snes16",
                         "library": "fold_jax", "trial": i, "seed": 1000 + i + 3 * j,
                         "n_trials": 3, "trial_seeds": 3, "hparams": f'{{"sigma":{i}}}',
                         "target_metric": "accuracy", "reached": math.isfinite(score),
                         "score": score, "best_val_metric": best, "selected": i == 1})
    (row,) = tuning.trials_table(pd.DataFrame(rows)).to_dict("records")
    assert (row["trials"], row["seeds per trial"], row["reached val target"]) == (3, 3, 2)
    assert (row["selected trial"], row["val evals to target"]) == (1, 500.0)
    assert row["best val metric"] == 0.90


def test_libraries_table_is_n_way_from_the_rows_a_users_library_included():
    races = _races({"adam": 25.0, "zo_lowrank_ranked": 3000.0, "gld": math.inf,
                    "evosax_snes": 6000.0, "evosax_open_es": 9000.0},
                   {"adam": 0.1, "zo_lowrank_ranked": 1.0, "gld": math.inf,
                    "evosax_snes": 3.0, "evosax_open_es": 4.0})
    mine = races[races["method"] == "adam"].assign(method="mine", library="user",
                                                   evals_to_target=1500.0)
    lib = tuning.libraries(pd.concat([races, mine], ignore_index=True))
    # one row per library in the rows, best first; evals / best against the fewest (adam)
    assert list(lib["library"]) == ["optax", "user", "fold_jax", "evosax"]
    assert list(lib["best method"]) == ["adam", "mine", "zo_lowrank_ranked", "evosax_snes"]
    # medians of x * (1, 1.01, 1.02) are x * 1.01 for adam; mine is 1500 on every seed
    assert lib["evals / best"].tolist() == pytest.approx([1.0, 1500 / 25.25,
                                                          3000 / 25, 6000 / 25])
    assert tuning.library_order(mine) == ["user"]


def test_goals_come_from_the_shipped_table_and_a_declared_threshold_changes_the_verdict(
        tmp_path):
    (goal,) = tuning.goals()
    assert (goal.ours, goal.peer, goal.evals_ratio, goal.seconds_ratio) == (
        "fold_jax", "evosax", 1.0, 2.0)
    races = _races({"zo_lowrank_ranked": 3000.0, "evosax_snes": 6000.0},
                   {"zo_lowrank_ranked": 1.0, "evosax_snes": 3.0})
    assert "met" in tuning._goal(tuning.peers(races)) and "not met" not in tuning._goal(
        tuning.peers(races))
    # a stricter declared goal (4x the seconds): the same rows (3x) do not meet it
    path = tmp_path / "goals.toml"
    path.write_text('[[goal]]\nours = "fold_jax"\npeer = "evosax"\nseconds_ratio = 4.0\n')
    (strict,) = tuning.goals(path)
    assert "in seconds) not met" in tuning._goal(tuning.peers(races, strict), strict)
    path.write_text('[[goal]]\nours = "fold_jax"\n')
    with pytest.raises(ValueError, match="peer"):
        tuning.goals(path)
