"""fold_jax.bench.tuning: the one tuning protocol, with recorded fake trials (no
training): draws, trial seeds, selection and the final reruns."""

from __future__ import annotations

import pytest

from fold_jax.bench import tuning
from fold_jax.bench.common import TUNING_SEED
from fold_jax.learn import recipes


def test_tune_draws_the_recipes_trials_seeds_them_and_reruns_the_lowest_rank():
    calls = []

    def trial(i, hp, seeds):
        calls.append(("trial", i, tuple(seeds)))
        return {"i": i, "score": [3.0, 1.0, 1.0, 2.0][i]}  # trials 1 and 2 tie

    def final(i, hp, seed):
        calls.append(("final", i, seed))
        return (hp, seed)

    t = tuning.tune("zo_gaussian", 4, trial, lambda r: r["score"], final, [0, 1, 2], 2)
    assert t.settings == recipes.trials("zo_gaussian", 4)  # the registry's draws
    assert t.selected == 1  # lowest rank; the tie goes to the lower index
    assert [c[2] for c in calls if c[0] == "trial"] == [
        (TUNING_SEED + i, TUNING_SEED + i + 4) for i in range(4)]
    assert t.finals == [(t.settings[1], s) for s in (0, 1, 2)]
    assert [c for c in calls if c[0] == "final"] == [("final", 1, s) for s in (0, 1, 2)]
    # every (trial, seed) pair gets its own seed, none of them a race seed
    seeds = {tuning.trial_seed(i, j, 4) for i in range(4) for j in range(3)}
    assert len(seeds) == 12 and min(seeds) >= TUNING_SEED


def test_a_space_less_recipe_runs_its_defaults_and_bad_counts_are_refused():
    t = tuning.tune("bbob/gld", 2, lambda i, hp, s: hp, lambda r: 0, lambda i, hp, s: s,
                    [5])
    assert t.settings == [{}, {}] and t.selected == 0 and t.finals == [5]
    with pytest.raises(ValueError, match="n_trials"):
        tuning.tune("adam", 0, lambda *a: 0, lambda r: 0, lambda *a: 0, [0])
    with pytest.raises(ValueError, match="trial_seeds"):
        tuning.tune("adam", 1, lambda *a: 0, lambda r: 0, lambda *a: 0, [0], 0)
