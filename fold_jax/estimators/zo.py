"""Zeroth-order gradient estimators: drop-ins for ``jax.value_and_grad`` that take a key.

``value_and_grad(fun, ...)(params, key, *args) -> (value, grads)`` estimates the
gradient of ``fun(params, *args)`` from loss evaluations at ``params + sigma * u_k``
only (no backward pass)::

    grads = 1/K_valid * sum_k c_k u_k,  c_k = (f(x + s u_k) - f(x - s u_k)) / (2 s)

A call reads validate -> directions -> schedule -> normalize, each a named piece:

- :mod:`fold_jax.estimators.directions` draws direction k from ``fold_in(key, k)`` (noise kind,
  word source, rank, mask), applies it, checks it is finite and contracts a population
  of them; :mod:`fold_jax.estimators.noise` turns random words into noise that is finite for
  every word.
- :mod:`fold_jax.estimators.shaping` turns a population's losses into the ``c_k`` (raw slopes,
  centered ranks, signs, or the user's function).
- the schedule (:func:`one_pass`, :func:`two_pass`, :func:`sharded`) orders the work:
  chunk by chunk in one pass for local shapings, every loss first and then the update
  from regenerated noise for population-wide shapings and population maps.
- :mod:`fold_jax.estimators.fusion` finds the leaves a loss takes as lazy low-rank factors.

Semantics:

- ``num_directions`` counts *perturbed loss evaluations* per call (the population
  size of OpenAI-ES / evosax). ``antithetic=True`` spends them as ``num_directions //
  2`` mirrored pairs (so it must be even) and ``value`` is the mean pair loss
  ``(f(x+su)+f(x-su))/2``, an O(sigma^2) estimate of ``f(x)``; ``antithetic=False``
  uses forward differences against one evaluation at ``params`` (``value`` exact,
  ``num_directions + 1`` evaluations). ``vg.evals`` counts a call's evaluations.
- ``noise``: ``"gaussian"``, ``"rademacher"`` (SPSA) or ``"sphere"`` (radius
  sqrt(d)); all have E[u u^T] = I, so the estimate is unbiased for the gradient of the
  smoothed loss. One direction's variance with an exact directional derivative
  (trace of the covariance of (g.u) u): gaussian (d+1)|g|^2, rademacher and sphere
  (d-1)|g|^2 (plus g_i^2-weighted terms: see tests); K directions divide it by K.
- ``rank=r``: leaves of ndim >= 2 (matrix view ``(prod(shape[:-1]), shape[-1])``, e.g.
  a conv kernel over (kh kw cin, cout)) whose sides are both >= r get ``A B^T /
  sqrt(r)``; thinner leaves (a (h, 1) head) and 1-D leaves get full-rank noise. Both
  are unbiased. ``fused="auto"`` passes low-rank leaves to the loss as
  :class:`fold_jax.estimators.perturb.LowRank` where a layer consumes them (fold_jax's layers,
  :mod:`fold_jax.estimators.perturb`, and standard flax Dense / DenseGeneral / Embed / Conv,
  attention's projections and their nnx twins through :mod:`fold_jax.estimators.flax_layers`),
  so a population costs about one inference on ``num_directions x batch`` examples;
  a leaf only added to activations at least its size (a learned positional table) is
  summed per direction at no more than that activation's cost ("summed"); other
  low-rank leaves are materialized (``W + s A B^T``) and a :class:`FallbackWarning`
  names them.
  ``fused=True`` requires every low-rank leaf to fuse (ValueError naming the leaves
  otherwise) and forces the factored association; ``fused=False`` materializes all.
  ``vg.describe(params, *args)`` says what runs. A loss that also reads raw leaves
  (weight decay over ``jax.tree.leaves(params)``) would see the factors: pass
  ``fused=False`` or put the decay in the optimizer.
- ``chunk_size=c`` evaluates c perturbed losses at a time (``lax.scan`` over vmapped
  chunks), so memory is bounded by c forward passes. The default ``"auto"`` takes
  about 16 on CPU (the digits MLP's rank-4 step at K = 128 ran at 0.73-0.79x of
  inference unchunked, 1.06-1.13x with chunks of 16: a 32,768-row population spills
  the caches) and one chunk on accelerators; ``None`` is one chunk; the last chunk is padded and
  the padding dropped (``vg.evals`` counts it: it is computed). What depends on
  params and args only (a first layer's ``x @ W``) is recomputed per chunk.
  :func:`forward_value_and_grad` takes ``chunk_size`` too: tangents held at a time
  (default None, all K).
- ``shaping``: None/"raw", "centered_ranks", "sign", a :class:`fold_jax.estimators.shaping.Shaping`
  or a callable ``fn(population) -> coefficients``; ``sign=True`` takes the sign of
  the shaped coefficients.
- ``mask`` (pytree like params, 0/1): only entries where mask != 0 are perturbed.
- A direction is valid when its losses and its noise are finite (and it is not
  padding); invalid directions are removed by selection, never by a zero
  coefficient. The average runs over the valid ones; when none is valid, grads are
  zero and value is NaN (:func:`fold_jax.estimators.methods.descent` then skips the step).
  ``vg.with_info`` also returns an ``EstimateInfo`` (``valid_directions``,
  ``dropped_directions``: perturbed evaluations kept and dropped; typed, and it reads
  like the dict it was).
- ``population_map``: a :class:`PopulationMap` (e.g.
  ``fold_jax.learn.parallel.population_map_factory(mesh)``, which shards directions over
  devices) or a plain ``f -> batched f``; it maps over (shards, size) rows of
  direction indices and only the (directions x signs) losses cross devices.
  ``chunk_size`` does not bound memory on this path.
- ``prng``: ``"hash"`` (default, a counter hash seeded by threefry) or ``"threefry"``
  (:mod:`fold_jax.estimators.noise`).

Where each piece lives (every public name is importable from here):
:mod:`fold_jax.estimators.zo_estimator` (options, :class:`ZerothOrder`, :func:`value_and_grad`,
:func:`sample`, ``describe``), :mod:`fold_jax.estimators.zo_schedule` (:class:`Problem`, the
schedules, :class:`PopulationMap`), :mod:`fold_jax.estimators.zo_forward`
(:func:`forward_value_and_grad`) and :mod:`fold_jax.estimators.zo_optax` (:func:`as_optax`).
"""

from fold_jax.estimators.directions import NOISES, Directions
from fold_jax.estimators.fusion import FallbackWarning
from fold_jax.estimators.info import EstimateInfo
from fold_jax.estimators.noise import PRNGS
from fold_jax.estimators.zo_estimator import (
    AUTO_CHUNK_CPU,
    FUSED,
    SHAPINGS,
    Estimator,
    Options,
    ZerothOrder,
    sample,
    value_and_grad,
)
from fold_jax.estimators.zo_forward import ForwardGradient, forward_value_and_grad
from fold_jax.estimators.zo_optax import ZOOptaxState, as_optax
from fold_jax.estimators.zo_schedule import (
    PopulationMap,
    Problem,
    Sums,
    accumulate,
    chunk_ids,
    one_pass,
    population_losses,
    sharded,
    two_pass,
)

__all__ = [
    "AUTO_CHUNK_CPU",
    "FUSED",
    "NOISES",
    "PRNGS",
    "SHAPINGS",
    "Directions",
    "EstimateInfo",
    "Estimator",
    "FallbackWarning",
    "ForwardGradient",
    "Options",
    "PopulationMap",
    "Problem",
    "Sums",
    "ZOOptaxState",
    "ZerothOrder",
    "accumulate",
    "as_optax",
    "chunk_ids",
    "forward_value_and_grad",
    "one_pass",
    "population_losses",
    "sample",
    "sharded",
    "two_pass",
    "value_and_grad",
]
