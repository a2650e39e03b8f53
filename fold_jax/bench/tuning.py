"""The one tuning protocol of every suite (AlgoPerf's external tuning ruleset).

For one recipe on one problem:

1. **Draw**: ``n_trials`` settings from the recipe's space with
   :func:`fold_jax.learn.recipes.trials` (a scrambled Halton sequence, seed 0: the same
   draws on every task and machine; a recipe without a space runs its defaults).
2. **Trial** ``i`` trains on ``trial_seeds`` seeds, the j-th being
   :func:`trial_seed` ``(i, j, n_trials)`` = ``TUNING_SEED + i + j * n_trials`` (never a
   race seed), scored on the **validation** split only.
3. **Select**: the trial whose result ranks lowest by the suite's ``rank`` (the races:
   evaluations to the validation target, then the best validation metric; the
   hypotheses: the final validation metric); ties go to the lower trial index.
4. **Rerun** the selected setting on the final seeds, which alone read the test split.

The suites differ only in what a trial and a final run are and in ``rank``:
:func:`fold_jax.bench.suites.races.tune_and_race` and
:func:`fold_jax.bench.hypotheses_work.tune` both call :func:`tune`. BBOB follows COCO's
rule instead (one setting per method for the whole suite, no tuning per function): its
recipes have no space, so :func:`fold_jax.learn.recipes.trials` gives their defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from fold_jax.bench.common import TUNING_SEED
from fold_jax.checks import check_int
from fold_jax.learn import recipes

__all__ = ["Tuned", "trial_seed", "tune"]

T = TypeVar("T")
F = TypeVar("F")


class Tuned(NamedTuple, Generic[T, F]):
    """What :func:`tune` returns: the drawn ``settings``, each trial's result
    (``trials[i]``), the ``selected`` trial index and the final runs' results (one per
    final seed, in order)."""

    settings: list[dict[str, Any]]
    trials: list[T]
    selected: int
    finals: list[F]


def trial_seed(index: int, j: int, n_trials: int) -> int:
    """The j-th seed of tuning trial ``index`` among ``n_trials``.

    Args:
        index: the trial (0-based).
        j: the seed's index within the trial (0-based).
        n_trials: trials drawn in all.

    Returns:
        ``TUNING_SEED + index + j * n_trials`` (distinct for every (index, j)).
    """
    return TUNING_SEED + index + j * n_trials


def tune(recipe: str | recipes.Recipe, n_trials: int,
         trial: Callable[[int, dict[str, Any], list[int]], T],
         rank: Callable[[T], Any],
         final: Callable[[int, dict[str, Any], int], F],
         seeds: Sequence[int], trial_seeds: int = 1) -> Tuned[T, F]:
    """Tune ``recipe`` by ``n_trials`` trials and rerun the selected one on ``seeds``.

    Args:
        recipe: the recipe (or its registry name) whose space is drawn.
        n_trials: trials (>= 1).
        trial: ``trial(index, setting, trial_seeds) -> result``, scored on validation.
        rank: ``rank(result) -> sortable``; the lowest is selected (ties: lower index).
        final: ``final(selected, setting, seed) -> result`` (``selected``: the trial's
            index), run on each of ``seeds`` (test).
        seeds: the final seeds.
        trial_seeds: seeds per trial (>= 1).

    Returns:
        A :class:`Tuned`.
    """
    n_trials = check_int(n_trials, "n_trials", minimum=1)
    trial_seeds = check_int(trial_seeds, "trial_seeds", minimum=1)
    settings = recipes.trials(recipe, n_trials)
    results = [trial(i, hp, [trial_seed(i, j, n_trials) for j in range(trial_seeds)])
               for i, hp in enumerate(settings)]
    best = min(range(n_trials), key=lambda i: (rank(results[i]), i))
    return Tuned(settings, results, best, [final(best, settings[best], s) for s in seeds])
