"""Comparison-based direct search: GLD, RSO, the (1+1)-ES and the essay's fixed-radius
relative-loss search, as fold_jax Methods.

Each builder returns :class:`fold_jax.estimators.methods.Method` with ``init(params) -> state``
(``state.params`` is the current point) and ``step(state, key, *args) -> (state,
info)``; info holds ``loss`` (the loss of the point kept, on the arguments the step
decided on), ``evals`` (loss evaluations the step spent, every re-evaluation counted)
and ``accepted`` (0/1: the step moved).

How a step decides is the ``acceptance`` rule (``ACCEPTANCE``), one option of every
builder. With K candidates a step:

- ``"reevaluate"`` (the default, ``DEFAULT_ACCEPTANCE``): either *nominates* or
  *confirms*. A nominating step evaluates the current point x and its K candidates on
  its args; the best candidate that beats x becomes the challenger, and nothing moves
  (evals K + 1). Each of the next ``confirmations`` steps re-evaluates x and the
  challenger on its own args (evals 2); the challenger replaces x at the last of them
  if it beat x on every one, and is dropped the first time it does not. Why: the best
  of K noisy minibatch losses is biased toward the candidate luckiest on that batch
  (the winner's curse, or "overvaluation" in the noisy-ES literature: Arnold & Beyer
  2002; Hansen et al. 2009's uncertainty handling re-evaluates for the same reason).
  A confirmation is decided on a batch drawn after the challenger was fixed, so it has
  no selection bias, and a challenger that is truly no better than x (median paired
  difference >= 0) passes c independent confirmations with probability <= 2^-c: a
  sign test, which needs no noise level and no loss scale.
  The price: at most one move per ``confirmations`` + 1 steps, so early in a run,
  where the batch signal dominates its noise, it descends more slowly per step than
  "batch" (digits MLP, batch 128, 500 steps: GLD's training loss 2.33 -> 1.91 against
  1.09), but it keeps descending where "batch" turns around.
- ``"batch"``: moves to the best candidate when it beats x on the step's args, the
  rule of the original methods (exact losses). On minibatches its selection bias adds
  up: the full-data loss drifts upward while every step lowers its own batch's loss
  (4000-example, 40-feature, 10-class Gaussian blobs, linear softmax, batch 256: GLD
  2.66 -> 2.67 -> 3.03 over 2000 / 16k steps where "reevaluate" reached 1.73 / 1.40;
  tests/test_search.py checks it). evals K + 1.
- ``"fixed_set"``: every decision evaluates ``fun(params, *eval_batch)`` on fixed
  arguments given to the builder (e.g. ``eval_batch=(x_eval, y_eval)``, a subset of the
  training data); the step's args are ignored. That loss is deterministic, so
  ``info["loss"]`` never increases, and x's loss is kept in the state rather than
  re-evaluated: evals K (K + 1 on the first step). One evaluation covers all of
  ``eval_batch``: compare methods by evals x examples when batch sizes differ. The
  search fits that subset, so take it large beside the parameter count: on the blobs
  above, a 512-example subset for 410 parameters took the full-set loss from 2.66 to
  1.73 in 2000 steps and back up to 2.06 by 16k (the subset's own loss kept falling).

Invariants (every rule): only comparisons of losses are used, so all three methods
are invariant to strictly increasing transforms of the loss; a step moves only to a
point whose loss on the arguments that step decided on is strictly lower than x's (it
never accepts a higher loss); NaN/inf candidates are never taken (a non-finite
current loss counts as +inf, so any finite candidate may replace it). Candidates of
a step are evaluated together with ``population_map`` (``jax.vmap`` by default;
:func:`fold_jax.learn.parallel.population_map` shards them over devices) over a flat
parameter vector (``jax.flatten_util.ravel_pytree``). Nominating and confirming are
the two branches of a ``lax.cond``, so only one runs and ``evals`` counts that one
(under ``jax.vmap`` of the step, both run).

Where each piece lives (every public name is importable from here): one method per
module, :mod:`fold_jax.estimators.search_gld`, :mod:`fold_jax.estimators.search_rso`,
:mod:`fold_jax.estimators.search_one_plus_one` and
:mod:`fold_jax.estimators.search_relative_loss`, on the shared acceptance rules of
:mod:`fold_jax.estimators.search_rule`.
"""

from fold_jax.estimators.search_gld import GLDState, gld
from fold_jax.estimators.search_one_plus_one import OnePlusOneState, one_plus_one
from fold_jax.estimators.search_relative_loss import relative_loss
from fold_jax.estimators.search_rso import RSOState, rso
from fold_jax.estimators.search_rule import (
    ACCEPTANCE,
    DEFAULT_ACCEPTANCE,
    DEFAULT_CONFIRMATIONS,
    Propose,
    SearchInfo,
)

__all__ = ["ACCEPTANCE", "DEFAULT_ACCEPTANCE", "DEFAULT_CONFIRMATIONS", "GLDState",
           "OnePlusOneState", "Propose", "RSOState", "SearchInfo", "gld", "one_plus_one",
           "relative_loss", "rso"]
