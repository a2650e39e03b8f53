"""Zeroth-order gradient estimators: drop-ins for ``jax.value_and_grad`` that take a key.

``value_and_grad(fun, ...)(params, key, *args) -> (value, grads)`` estimates the
gradient of ``fun(params, *args)`` from loss evaluations at ``params + sigma * u_k``
only (no backward pass)::

    grads = 1/K_valid * sum_k c_k u_k,  c_k = (f(x + s u_k) - f(x - s u_k)) / (2 s)

A call reads validate -> directions -> schedule -> normalize, each a named piece:

- :mod:`fold_jax.directions` draws direction k from ``fold_in(key, k)`` (noise kind,
  word source, rank, mask), applies it, checks it is finite and contracts a population
  of them; :mod:`fold_jax.noise` turns random words into noise that is finite for
  every word.
- :mod:`fold_jax.shaping` turns a population's losses into the ``c_k`` (raw slopes,
  centered ranks, signs, or the user's function).
- the schedule (:func:`one_pass`, :func:`two_pass`, :func:`sharded`) orders the work:
  chunk by chunk in one pass for local shapings, every loss first and then the update
  from regenerated noise for population-wide shapings and population maps.
- :mod:`fold_jax.fusion` finds the leaves a loss takes as lazy low-rank factors.

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
  :class:`fold_jax.perturb.LowRank` where a layer consumes them (fold_jax's layers,
  :mod:`fold_jax.perturb`, and standard flax Dense / DenseGeneral / Embed / Conv,
  attention's projections and their nnx twins through :mod:`fold_jax.flax_layers`),
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
- ``shaping``: None/"raw", "centered_ranks", "sign", a :class:`fold_jax.shaping.Shaping`
  or a callable ``fn(population) -> coefficients``; ``sign=True`` takes the sign of
  the shaped coefficients.
- ``mask`` (pytree like params, 0/1): only entries where mask != 0 are perturbed.
- A direction is valid when its losses and its noise are finite (and it is not
  padding); invalid directions are removed by selection, never by a zero
  coefficient. The average runs over the valid ones; when none is valid, grads are
  zero and value is NaN (:func:`fold_jax.methods.descent` then skips the step).
  ``vg.with_info`` also returns ``{"valid_directions", "dropped_directions"}``
  (perturbed evaluations kept and dropped).
- ``population_map``: a :class:`PopulationMap` (e.g.
  ``fold_jax.parallel.population_map_factory(mesh)``, which shards directions over
  devices) or a plain ``f -> batched f``; it maps over (shards, size) rows of
  direction indices and only the (directions x signs) losses cross devices.
  ``chunk_size`` does not bound memory on this path.
- ``prng``: ``"hash"`` (default, a counter hash seeded by threefry) or ``"threefry"``
  (:mod:`fold_jax.noise`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax import directions as directions_lib
from fold_jax import flax_layers, fusion
from fold_jax import shaping as shaping_lib
from fold_jax.checks import (
    all_finite,
    check_bool,
    check_bool_or,
    check_callable,
    check_choice,
    check_int,
    check_key,
    check_mask,
    check_params,
    check_positive,
    check_scalar_loss,
    leaf_paths,
)
from fold_jax.directions import NOISES, Directions
from fold_jax.fusion import FallbackWarning
from fold_jax.noise import PRNGS

__all__ = [
    "NOISES",
    "PRNGS",
    "SHAPINGS",
    "Estimator",
    "FallbackWarning",
    "PopulationMap",
    "Problem",
    "ZOOptaxState",
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

SHAPINGS = (None, "raw", "centered_ranks", "sign")
FUSED = ("auto", True, False)


class PopulationMap(NamedTuple):
    """``map(f)`` is ``f`` batched over a leading axis; ``shards`` rows are mapped at once
    (one per device for :func:`fold_jax.parallel.population_map_factory`)."""

    map: Callable[[Callable], Callable]
    shards: int = 1

    def __call__(self, f: Callable) -> Callable:
        return self.map(f)


def _as_population_map(pmap: Any) -> PopulationMap | None:
    if pmap is None or isinstance(pmap, PopulationMap):
        return pmap
    if not callable(pmap):
        raise TypeError("population_map must be a PopulationMap, a callable (f -> batched f) "
                        f"or None, got {type(pmap).__name__}")
    return PopulationMap(pmap, int(getattr(pmap, "shards", 1)))


# ------------------------------------------------------------------------ options


class Options(NamedTuple):
    """Validated estimator options (see :func:`value_and_grad`)."""

    num_directions: int
    sigma: float
    noise: str
    antithetic: bool
    rank: int | None
    chunk_size: int | None
    shaping: shaping_lib.Shaping
    mask: PyTree | None
    fused: bool | str
    prng: str
    population_map: PopulationMap | None

    @property
    def signs(self) -> int:
        return 2 if self.antithetic else 1

    @property
    def units(self) -> int:
        """Pairs (antithetic) or single directions per call."""
        return self.num_directions // self.signs

    @property
    def per_chunk(self) -> int:
        if self.chunk_size is None:
            return self.units
        return max(1, min(self.units, self.chunk_size // self.signs))

    @property
    def n_chunks(self) -> int:
        return -(-self.units // self.per_chunk)

    @property
    def evals(self) -> int:
        return self.n_chunks * self.per_chunk * self.signs + (0 if self.antithetic else 1)

    @property
    def schedule(self) -> str:
        if self.population_map is not None:
            return "sharded"
        return "one_pass" if self.shaping.local else "two_pass"


def _options(num_directions, sigma, noise, antithetic, rank, chunk_size, shaping, sign, mask,
             fused, prng, population_map) -> Options:
    """Options, or a ValueError / TypeError naming the argument and the allowed values."""
    check_int(num_directions, "num_directions", allow_numpy=True)
    num_directions = int(num_directions)
    check_positive(sigma, "sigma")
    check_choice(noise, "noise", NOISES)
    antithetic = check_bool(antithetic, "antithetic")
    if antithetic and num_directions % 2:
        raise ValueError(f"num_directions={num_directions} must be even with antithetic=True "
                         "(it counts evaluations: num_directions // 2 mirrored pairs)")
    check_int(rank, "rank", allow_none=True, allow_numpy=True)
    rank = None if rank is None else int(rank)
    if rank is not None and noise == "sphere":
        raise ValueError("noise='sphere' cannot be combined with rank; allowed noise with "
                         "rank: ['gaussian', 'rademacher']")
    if isinstance(chunk_size, str) and chunk_size == "auto":
        chunk_size = _auto_chunk(num_directions, antithetic)
    check_int(chunk_size, "chunk_size", allow_none=True, allow_numpy=True)
    chunk_size = None if chunk_size is None else int(chunk_size)
    if chunk_size is not None and antithetic and chunk_size % 2:
        raise ValueError(f"chunk_size={chunk_size} must be even with antithetic=True "
                         "(it counts evaluations, pairs stay together)")
    sign = check_bool(sign, "sign")
    shape_fn = shaping_lib.resolve(shaping, sign)
    fused = check_bool_or(fused, "fused", ["auto"])
    if fused is True and mask is not None:
        raise ValueError("fused=True cannot be combined with mask (a masked low-rank "
                         "perturbation is not low rank); use fused='auto' or False")
    if fused is True and rank is None:
        raise ValueError("fused=True needs rank=r (only low-rank perturbations are fused)")
    check_choice(prng, "prng", PRNGS)
    return Options(num_directions, float(sigma), noise, antithetic, rank, chunk_size, shape_fn,
                   mask, fused, prng, _as_population_map(population_map))


AUTO_CHUNK_CPU = 16  # evaluations per chunk that keep a digits-MLP population in cache


def _auto_chunk(num_directions: int, antithetic: bool) -> int | None:
    """``chunk_size="auto"``: on CPU about ``AUTO_CHUNK_CPU`` evaluations per chunk,
    balanced so the last chunk needs (almost) no padding; on accelerators one chunk
    (they want the whole population at once)."""
    if jax.default_backend() != "cpu":
        return None
    signs = 2 if antithetic else 1
    units = num_directions // signs
    n_chunks = -(-units // max(1, AUTO_CHUNK_CPU // signs))
    return -(-units // n_chunks) * signs


def _leaves(params: PyTree) -> tuple[list[Array], Any]:
    """Leaves as arrays (Python-float and NumPy leaves too, as jax.value_and_grad takes
    them) and the treedef."""
    leaves, treedef = jax.tree.flatten(params)
    return [jnp.asarray(w) for w in leaves], treedef


# ------------------------------------------------------------------------ the problem


class Problem(NamedTuple):
    """One call's estimation problem: what the schedules evaluate and contract.

    Attributes:
        loss: leaves -> float32 scalar (``fun`` with the call's args bound).
        params: the parameter leaves.
        key: the call's key; direction k is drawn from ``fold_in(key, k)``.
        dirs: how directions are drawn.
        associations: per leaf, the LowRank association or None (summed).
        offsets: (signs,) the perturbation sizes ``[s, -s]`` or ``[s]``.
        baseline: ``f(params)`` for one-sided estimates, else None.
        step: the finite-difference distance (2s or s).
        units: real directions; indices >= units are padding.
    """

    loss: Callable[[list], Array]
    params: list[Array]
    key: PRNGKeyArray
    dirs: Directions
    associations: tuple[str | None, ...]
    offsets: Array
    baseline: Array | None
    step: float
    units: int

    def noise(self, idx: Array) -> list:
        """Noise of the directions ``idx``, stacked."""
        return self.dirs.stacked(self.key, idx)

    def evaluate(self, parts: list, idx: Array) -> tuple[Array, Array]:
        """(losses (n, signs), valid (n,)) for directions ``idx`` with noise ``parts``."""
        # Tie the parameters to the chunk's indices: XLA would otherwise hoist what
        # depends on params and args only (the shared x @ W of a first layer) out of
        # the chunk loop, keeping it live beside every chunk's activations.
        ls, _ = jax.lax.optimization_barrier((self.params, idx))

        def one(u):
            at = lambda t: self.loss(self.dirs.apply(ls, u, t, self.associations))  # noqa: E731
            return jax.vmap(at)(self.offsets)

        vals = jax.vmap(one)(parts)
        valid = jnp.all(jnp.isfinite(vals), axis=1) & jax.vmap(self.dirs.finite)(parts)
        return vals, valid & (idx < self.units)

    def population(self, vals: Array, valid: Array) -> shaping_lib.Population:
        return shaping_lib.Population(vals, valid, self.baseline, self.step)

    def value_sum(self, vals: Array, valid: Array) -> Array:
        """Sum over valid directions of their mean loss (the antithetic value)."""
        return jnp.sum(jnp.where(valid, jnp.mean(vals, axis=1), 0.0))

    def zeros(self) -> list[Array]:
        return _zeros(self.dirs)


class Sums(NamedTuple):
    """What a schedule returns: sum_k c_k u_k per leaf, the valid directions' summed
    mean loss, and their count."""

    grads: list[Array]
    value: Array
    count: Array


def _add(a: list[Array], b: list[Array]) -> list[Array]:
    return [x + y for x, y in zip(a, b, strict=True)]


def _zeros(dirs: Directions) -> list[Array]:
    """float32 zeros shaped like each leaf: a sum over directions starts there."""
    return [jnp.zeros(leaf.shape, jnp.float32) for leaf in dirs.leaves]


def chunk_ids(n_chunks: int, per_chunk: int) -> Array:
    """(n_chunks, per_chunk) direction indices 0, 1, ...; those past the real
    directions are padding (a :class:`Problem` marks them invalid).

    Args:
        n_chunks: chunks (1: the whole population at once).
        per_chunk: directions (pairs, when antithetic) per chunk.

    Returns:
        (n_chunks, per_chunk) uint32 direction indices.
    """
    return jnp.arange(n_chunks * per_chunk, dtype=jnp.uint32).reshape(n_chunks, per_chunk)


def _chunks(options: Options) -> Array:
    return chunk_ids(options.n_chunks, options.per_chunk)


def _scan_chunks(body: Callable, start: Sums, idx: Array) -> Sums:
    """``body`` folded over the chunks ``idx`` from ``start`` (one chunk: no loop)."""
    if idx.shape[0] == 1:
        return body(start, idx[0])[0]
    return jax.lax.scan(body, start, idx)[0]


def one_pass(p: Problem, shape: shaping_lib.Shaping, idx: Array) -> Sums:
    """Chunk by chunk: draw, evaluate, shape and contract each chunk (local shapings).

    Args:
        p: the problem.
        shape: a local shaping.
        idx: (chunks, per_chunk) direction indices.

    Returns:
        The :class:`Sums` over every valid direction of all chunks.
    """
    def body(carry: Sums, ids: Array):
        parts = p.noise(ids)
        vals, valid = p.evaluate(parts, ids)
        coef = shape.fn(p.population(vals, valid))
        return Sums(_add(carry.grads, p.dirs.contract(coef, valid, parts)),
                    carry.value + p.value_sum(vals, valid),
                    carry.count + jnp.sum(valid)), None

    return _scan_chunks(body, Sums(p.zeros(), jnp.float32(0), jnp.int32(0)), idx)


def population_losses(evaluate: Callable[[Array], tuple[Array, Array, Any]], idx: Array
                      ) -> tuple[Array, Array, Any]:
    """The first pass of a population-wide schedule: every chunk's losses.

    Args:
        evaluate: ``evaluate(ids) -> (losses (c, signs), valid (c,), noise)`` for one
            chunk of direction indices (e.g. :meth:`Problem.evaluate` on
            :meth:`Problem.noise`).
        idx: (chunks, per_chunk) direction indices.

    Returns:
        ``(losses (chunks, per_chunk, signs), valid (chunks, per_chunk), noise)``:
        with one chunk there is no loop and its noise is kept for the second pass;
        with several the chunks run in a ``lax.map`` and ``noise`` is None (the second
        pass regenerates it from the keys).
    """
    if idx.shape[0] == 1:
        vals, valid, parts = evaluate(idx[0])
        return vals[None], valid[None], parts
    vals, valid = jax.lax.map(lambda ids: evaluate(ids)[:2], idx)
    return vals, valid, None


def accumulate(contract: Callable[[Array, Any, Any], Any], start: Any, idx: Array, xs: Any,
               parts: Any) -> Any:
    """The second pass: ``sum over chunks of contract(ids, x, noise)``.

    Args:
        contract: ``contract(ids, x, noise) -> pytree like start`` for one chunk: ``x``
            is that chunk's slice of ``xs``; ``noise`` is the kept noise (one chunk) or
            None, and then ``contract`` regenerates it from ``ids``.
        start: the zero of the sum (a pytree).
        idx: (chunks, per_chunk) direction indices.
        xs: a pytree of arrays with leading axes (chunks, per_chunk) (coefficients,
            valid flags).
        parts: the noise kept by :func:`population_losses` (one chunk) or None.

    Returns:
        The sum, shaped as ``start``: with kept noise the one chunk's contraction (no
        loop, ``start`` not added), else a ``lax.scan`` over the chunks from ``start``.
    """
    if parts is not None:  # one chunk: its noise is still at hand
        return contract(idx[0], jax.tree.map(lambda x: x[0], xs), parts)

    def body(acc, chunk):
        ids, x = chunk
        return jax.tree.map(jnp.add, acc, contract(ids, x, None)), None

    return jax.lax.scan(body, start, (idx, xs))[0]


def _shaped_update(p: Problem, shape: shaping_lib.Shaping, idx: Array, vals: Array,
                   valid: Array, parts: list | None) -> Sums:
    """Shape the whole population's losses, then contract from (regenerated) noise."""
    coef = shape.fn(p.population(vals.reshape(-1, vals.shape[-1]), valid.reshape(-1)))
    coef = coef.reshape(valid.shape)

    def contract(ids, x, noise):
        c, ok = x
        return p.dirs.contract(c, ok, p.noise(ids) if noise is None else noise)

    grads = accumulate(contract, p.zeros(), idx, (coef, valid), parts)
    return Sums(grads, p.value_sum(vals.reshape(-1, vals.shape[-1]), valid.reshape(-1)),
                jnp.sum(valid))


def two_pass(p: Problem, shape: shaping_lib.Shaping, idx: Array) -> Sums:
    """Every loss first (chunk by chunk), then the update from regenerated noise: for
    shapings that need the whole population (centered ranks, user functions).

    Args:
        p: the problem.
        shape: the shaping (it sees the whole population's losses at once).
        idx: (chunks, per_chunk) direction indices.

    Returns:
        The :class:`Sums` over every valid direction.
    """
    def evaluate(ids):
        parts = p.noise(ids)
        return (*p.evaluate(parts, ids), parts)

    vals, valid, parts = population_losses(evaluate, idx)
    return _shaped_update(p, shape, idx, vals, valid, parts)


def _rows(idx: Array, shards: int) -> Array:
    """(n,) direction indices as (rows, size) for a population map: one row per shard.

    Each row's noise is then generated in one loop; a map over single directions ran
    that loop once per index, which XLA removes, and the noise fused into its
    consumers again (the sharded rank-4 digits step ran 2x slower). The padding
    repeats the last index; callers drop its values.
    """
    size = max(1, -(-idx.shape[0] // shards))
    pad = (-idx.shape[0]) % size
    return jnp.concatenate([idx, jnp.repeat(idx[-1:], pad)]).reshape(-1, size)


def sharded(p: Problem, shape: shaping_lib.Shaping, idx: Array, pmap: PopulationMap) -> Sums:
    """Losses through ``pmap`` (one row of directions per shard; only the loss matrix
    crosses devices), then the update from regenerated noise.

    Args:
        p: the problem.
        shape: the shaping (local or population-wide).
        idx: (chunks, per_chunk) direction indices.
        pmap: the population map that spreads the rows of directions over devices.

    Returns:
        The :class:`Sums` over every valid direction.
    """
    flat = idx.reshape(-1)
    vals, valid = pmap(lambda ids: p.evaluate(p.noise(ids), ids))(_rows(flat, pmap.shards))
    vals = vals.reshape(-1, vals.shape[-1])[: flat.shape[0]].reshape(*idx.shape, -1)
    valid = valid.reshape(-1)[: flat.shape[0]].reshape(idx.shape)
    return _shaped_update(p, shape, idx, vals, valid, None)


def _normalize(sums: Sums, params: list[Array], baseline: Array | None
               ) -> tuple[Array, list[Array]]:
    """Average over the valid directions; grads 0 and value NaN when none is valid."""
    ok = sums.count > 0
    n = jnp.maximum(sums.count, 1).astype(jnp.float32)
    grads = [jnp.where(ok, g / n, 0.0).astype(w.dtype) for g, w in zip(sums.grads, params,
                                                                       strict=True)]
    value = sums.value / n if baseline is None else baseline
    return jnp.where(ok, value, jnp.nan), grads


# -------------------------------------------------------------------------- estimators


class Estimator:
    """A zeroth-order estimator: ``vg(params, key, *args) -> (value, grads)``.

    Attributes:
        evals: loss evaluations one call spends.
    """

    evals: int

    def with_info(self, params: PyTree, key: PRNGKeyArray, *args
                  ) -> tuple[Array, PyTree, dict[str, Array]]:
        raise NotImplementedError

    def describe(self, params: PyTree, *args) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(self, params: PyTree, key: PRNGKeyArray, *args) -> tuple[Array, PyTree]:
        value, grads, _ = self.with_info(params, key, *args)
        return value, grads


class ZerothOrder(Estimator):
    """:func:`value_and_grad`'s estimator (see the module docstring)."""

    def __init__(self, fun: Callable[..., Array], options: Options):
        self.fun = flax_layers.wrap(fun)
        self.options = options
        self.evals = options.evals

    def _setup(self, params: PyTree, args: tuple, warn: bool):
        """Validated leaves, directions and per-leaf associations for one call."""
        o = self.options
        check_params(params, "nothing to perturb")
        mask = check_mask(o.mask, params)
        check_scalar_loss(self.fun, params, args)
        leaves, treedef = _leaves(params)
        dirs = directions_lib.directions(leaves, noise=o.noise, prng=o.prng, rank=o.rank,
                                         mask=mask)
        matrices = dirs.matrices
        if o.fused is True and not matrices:
            raise ValueError(f"fused=True needs a leaf of ndim >= 2 whose sides are both >= "
                             f"rank={o.rank}; params has none")
        paths = leaf_paths(params)
        p = fusion.plan(self.fun, leaves, treedef, args, matrices, o.rank, o.fused,
                        masked=mask is not None, who="zo.value_and_grad" if warn else "",
                        paths=paths, hint=" (see vg.describe(params, *args))", stacklevel=3)
        if p.unfused and o.fused is True:
            why = fusion.failing_leaves(self.fun, leaves, treedef, args, list(p.unfused),
                                        matrices, o.rank)
            raise ValueError("fused=True, but these leaves cannot take low-rank factors: "
                             + "; ".join(f"{paths[i]} {leaves[i].shape}: {why.get(i, '?')}"
                                         for i in p.unfused)
                             + ". Use fused='auto' (materializes them) or fold_jax's "
                             "layers / perturb.matmul.")
        return leaves, treedef, dirs, p, p.runtime

    def with_info(self, params, key, *args):
        """Same call as ``vg``; also returns ``{"valid_directions", "dropped_directions"}``
        (perturbed evaluations that entered the estimate, and those dropped)."""
        check_key(key)
        o = self.options
        leaves, treedef, dirs, _, associations = self._setup(params, args, warn=True)
        f = lambda ls: jnp.asarray(self.fun(jax.tree.unflatten(treedef, ls), *args),  # noqa: E731
                                   jnp.float32)
        baseline = None if o.antithetic else f(leaves)
        offsets = jnp.asarray([o.sigma, -o.sigma] if o.antithetic else [o.sigma], jnp.float32)
        p = Problem(f, leaves, key, dirs, associations, offsets, baseline,
                    o.signs * o.sigma, o.units)
        idx = _chunks(o)
        if o.population_map is not None:
            sums = sharded(p, o.shaping, idx, o.population_map)
        elif o.shaping.local:
            sums = one_pass(p, o.shaping, idx)
        else:
            sums = two_pass(p, o.shaping, idx)
        value, grads = _normalize(sums, leaves, baseline)
        kept = (sums.count * o.signs).astype(jnp.int32)
        info = {"valid_directions": kept,
                "dropped_directions": jnp.int32(o.units * o.signs) - kept}
        return value, jax.tree.unflatten(treedef, grads), info

    def describe(self, params: PyTree, *args) -> dict[str, Any]:
        """What a call on these params and args runs (nothing is evaluated).

        Returns:
            ``path``: ``"fused"`` (some low-rank leaf reaches a layer as factors),
            ``"materialized"`` (low-rank noise, summed into dense weights) or
            ``"full_rank"``; ``schedule``, ``evals``, ``chunks``, ``per_chunk``,
            ``shaping``, ``materialized`` (how many leaves fell back), and ``leaves``:
            per leaf path its ``shape``, ``noise`` (``"lowrank"`` or ``"full_rank"``),
            ``association`` (``"factored"``, ``"dense"``, ``"mixed"``,
            ``"materialized"`` or ``"full_rank"``), ``path`` (``"fused"``: a layer
            consumed the factors; ``"summed"``: summed per direction but no larger than
            the activations it is added to; ``"materialized"``: a fallback;
            ``"full_rank"``) and ``why`` (one line).
        """
        o = self.options
        _, _, dirs, plan, _ = self._setup(params, args, warn=False)
        table = {}
        for i, (path, leaf) in enumerate(zip(leaf_paths(params), dirs.leaves, strict=True)):
            if not leaf.lowrank:
                assoc, how, why = "full_rank", "full_rank", _FULL_RANK_WHY
            elif plan.picked.get(i) is not None:
                assoc = how = plan.picked[i]
                how, why = "fused", _FUSED_WHY[assoc]
            else:
                assoc = "materialized"
                how = "summed" if i in plan.summed else "materialized"
                why = plan.summed.get(i, _MATERIALIZED_WHY)
            table[path] = {"shape": leaf.shape, "noise": "lowrank" if leaf.lowrank
                           else "full_rank", "association": assoc, "path": how, "why": why}
        kinds = {v["association"] for v in table.values()}
        path = ("full_rank" if kinds == {"full_rank"}
                else "materialized" if kinds <= {"full_rank", "materialized"} else "fused")
        return {"path": path, "schedule": o.schedule, "evals": o.evals, "chunks": o.n_chunks,
                "per_chunk": o.per_chunk * o.signs, "shaping": o.shaping.name,
                "materialized": sum(v["path"] == "materialized" for v in table.values()),
                "leaves": table}


_FULL_RANK_WHY = ("full-rank noise of the leaf's shape (1-D, or a side thinner than rank): "
                  "added per direction, no larger than the activations it is added to")
_FUSED_WHY = {
    "factored": "factored: the layer computes x W + s (x A) B^T; no per-direction kernel",
    "dense": "dense: the layer forms W + s A B^T per direction (its pick: cheaper at "
             "these shapes than the factored form)",
    "mixed": "mixed: its layers picked factored in some uses, dense in others",
}
_MATERIALIZED_WHY = ("materialized (fallback): no layer consumed the factors, so W + s A B^T "
                     "is formed per direction before the loss")


def value_and_grad(
    fun: Callable[..., Array],
    *,
    num_directions: int = 64,
    sigma: float = 1e-3,
    noise: str = "gaussian",
    antithetic: bool = True,
    rank: int | None = None,
    chunk_size: int | str | None = "auto",
    shaping: str | shaping_lib.Shaping | Callable | None = None,
    sign: bool = False,
    mask: PyTree | None = None,
    fused: bool | str = "auto",
    prng: str = "hash",
    population_map: PopulationMap | Callable | None = None,
) -> ZerothOrder:
    """Zeroth-order ``vg(params, key, *args) -> (value, grads)`` for ``fun(params, *args)``.

    Args:
        fun: scalar loss ``fun(params, *args)``.
        num_directions: perturbed evaluations per call (even when antithetic).
        sigma: perturbation size (parameter units).
        noise: ``"gaussian"``, ``"rademacher"`` or ``"sphere"``.
        antithetic: mirrored pairs (central differences) or forward differences.
        rank: low-rank rank for leaves of ndim >= 2, or None.
        chunk_size: evaluations per chunk (memory bound), None for one chunk, or
            ``"auto"`` (default): about 16 on CPU (balanced chunks), one chunk on
            accelerators.
        shaping: see :mod:`fold_jax.shaping`.
        sign: take the sign of the shaped coefficients.
        mask: 0/1 pytree like params: perturb only where != 0.
        fused: ``"auto"``, True or False (module docstring).
        prng: ``"hash"`` or ``"threefry"``.
        population_map: a :class:`PopulationMap` or ``f -> batched f``.

    Returns:
        A :class:`ZerothOrder` estimator: callable as above, with ``evals``,
        ``with_info`` and ``describe``. ``grads`` is shaped like ``params``; ``value``
        is the mean pair loss (antithetic) or ``fun(params, *args)``.

    Raises:
        ValueError / TypeError: a bad option, named, before anything is traced.
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    return ZerothOrder(fun, _options(num_directions, sigma, noise, antithetic, rank,
                                     chunk_size, shaping, sign, mask, fused, prng,
                                     population_map))


def sample(
    params: PyTree,
    key: PRNGKeyArray,
    k: int | Array,
    *,
    noise: str = "gaussian",
    rank: int | None = None,
    mask: PyTree | None = None,
    prng: str = "hash",
) -> PyTree:
    """Direction ``k`` exactly as :func:`value_and_grad` draws it for ``key``.

    Args:
        params: the parameter pytree.
        key: the estimator call's key.
        k: direction (pair) index, an int >= 0 (or a traced integer); ``params +-
            sigma * u`` are the evaluation points.
        noise, rank, mask, prng: as in :func:`value_and_grad`.

    Returns:
        A dense pytree like ``params`` (low-rank leaves as ``A B^T / sqrt(rank)``).

    Raises:
        ValueError / TypeError: a bad key, ``k`` or option, naming it.
    """
    o = _options(2, 1.0, noise, True, rank, None, None, False, mask, "auto", prng, None)
    check_params(params, "nothing to perturb")
    check_key(key)
    if not isinstance(k, jax.core.Tracer):  # a traced index (under vmap) is the caller's
        k = check_int(k, "k", 0)
    leaves, treedef = _leaves(params)
    dirs = directions_lib.directions(leaves, noise=o.noise, prng=o.prng, rank=o.rank,
                                     mask=check_mask(mask, params))
    return jax.tree.unflatten(treedef, dirs.dense(dirs.draw(key, jnp.asarray(k, jnp.uint32))))


class ForwardGradient(Estimator):
    """:func:`forward_value_and_grad`'s estimator."""

    def __init__(self, fun: Callable[..., Array], num_directions: int, prng: str,
                 population_map: PopulationMap | None, chunk_size: int | None = None):
        self.fun = fun
        self.num_directions = num_directions
        self.prng = prng
        self.population_map = population_map
        self.chunk_size = chunk_size
        per = num_directions if chunk_size is None else min(num_directions, chunk_size)
        self.chunks = (-(-num_directions // per), per)  # (chunks, tangents a chunk)
        # padding tangents are computed, so they are counted (as zo's padding is)
        self.evals = num_directions if population_map else self.chunks[0] * per

    def with_info(self, params, key, *args):
        """Same call as ``vg``; also returns ``{"valid_directions", "dropped_directions"}``."""
        check_key(key)
        check_params(params, "nothing to perturb")
        check_scalar_loss(self.fun, params, args)
        leaves, treedef = _leaves(params)
        dirs = directions_lib.directions(leaves, noise="gaussian", prng=self.prng)
        f = lambda ls: jnp.asarray(self.fun(jax.tree.unflatten(treedef, ls), *args),  # noqa: E731
                                   jnp.float32)

        def derivatives(ids, parts=None):
            parts = dirs.stacked(key, ids) if parts is None else parts

            def one(u):
                tangents = [t.astype(w.dtype) for t, w in zip(u, leaves, strict=True)]
                return jax.jvp(f, (leaves,), (tangents,))

            values, derivs = jax.vmap(one)(parts)
            return values, derivs, jnp.isfinite(derivs) & jax.vmap(dirs.finite)(parts)

        pmap = self.population_map
        if pmap is not None:  # each device regenerates its tangents, only derivatives cross
            ks = jnp.arange(self.num_directions, dtype=jnp.uint32)
            parts = dirs.stacked(key, ks)
            values, derivs, valid = (v.reshape(-1)[: self.num_directions] for v in
                                     pmap(derivatives)(_rows(ks, pmap.shards)))
            sums = Sums(dirs.contract(derivs, valid, parts), values[0], jnp.sum(valid))
        else:  # chunk by chunk: only one chunk's tangents exist at a time
            def body(carry: Sums, ids: Array):
                parts = dirs.stacked(key, ids)
                values, derivs, valid = derivatives(ids, parts)
                valid = valid & (ids < self.num_directions)  # padding is dropped
                return Sums(_add(carry.grads, dirs.contract(derivs, valid, parts)),
                            values[0], carry.count + jnp.sum(valid)), None

            sums = _scan_chunks(body, Sums(_zeros(dirs), jnp.float32(0), jnp.int32(0)),
                                chunk_ids(*self.chunks))
        value, grads = _normalize(sums, leaves, sums.value)
        n = sums.count.astype(jnp.int32)
        return value, jax.tree.unflatten(treedef, grads), {
            "valid_directions": n, "dropped_directions": jnp.int32(self.num_directions) - n}

    def describe(self, params: PyTree, *args) -> dict[str, Any]:
        """``path`` (always ``"full_rank"``), ``schedule``, ``evals`` and per-leaf shapes."""
        check_params(params, "nothing to perturb")
        return {"path": "full_rank", "schedule": "sharded" if self.population_map else "jvp",
                "evals": self.evals, "chunks": None if self.population_map else self.chunks,
                "leaves": {
                    p: {"shape": tuple(jnp.shape(w)), "noise": "full_rank",
                        "association": "full_rank"}
                    for p, w in zip(leaf_paths(params), jax.tree.leaves(params), strict=True)}}


def forward_value_and_grad(
    fun: Callable[..., Array],
    *,
    num_directions: int = 1,
    prng: str = "hash",
    chunk_size: int | None = None,
    population_map: PopulationMap | Callable | None = None,
) -> ForwardGradient:
    """Forward gradient (Baydin et al. 2022): ``grads = mean_k (grad f . u_k) u_k``.

    u_k ~ N(0, I); each directional derivative comes from one ``jax.jvp`` (exact,
    unbiased; variance (d+1)|g|^2 / K). Directions with a non-finite derivative or
    noise are dropped as in :func:`value_and_grad`.

    Args:
        fun: scalar loss ``fun(params, *args)``.
        num_directions: tangents per call (``evals``: one forward-with-tangent each).
        prng: ``"hash"`` or ``"threefry"``.
        chunk_size: tangents per chunk (``lax.scan`` over vmapped chunks), so memory
            holds ``chunk_size`` tangents (each the size of params) instead of all
            ``num_directions``; None (default): one chunk. The last chunk is padded
            and the padding dropped (``evals`` counts it: it is computed). The
            directions, so the estimate up to summation order, do not depend on it.
            Unused with ``population_map`` (each device holds its row of tangents).
        population_map: as in :func:`value_and_grad` (tangents sharded over devices).

    Returns:
        A :class:`ForwardGradient`: ``vg(params, key, *args) -> (value, grads)`` with
        ``value = fun(params, *args)`` exactly; ``evals``, ``with_info``, ``describe``
        (``chunks``: (chunks, tangents a chunk), None when sharded).
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    check_int(num_directions, "num_directions", allow_numpy=True)
    check_choice(prng, "prng", PRNGS)
    check_int(chunk_size, "chunk_size", allow_none=True, allow_numpy=True)
    return ForwardGradient(fun, int(num_directions), prng, _as_population_map(population_map),
                           None if chunk_size is None else int(chunk_size))


# ---------------------------------------------------------------------------- optax

import optax  # noqa: E402  (the optax adapter below; kept beside it)


class ZOOptaxState(NamedTuple):
    """State of :func:`as_optax` (a pytree).

    Attributes:
        key: the PRNG key the next update splits (when no ``key=`` is passed).
        value: float32 scalar, the last update's loss estimate (the estimator's
            ``value``: the mean pair loss when antithetic, ``loss(params, *batch)``
            otherwise); NaN before the first update and when every direction was dropped.
        dropped: int32 scalar, perturbed evaluations the last update dropped (non-finite
            loss or noise).
        skipped: int32 scalar, updates so far whose estimate was not finite (they
            returned zero updates).
        count: int32 scalar, updates so far.
    """

    key: PRNGKeyArray
    value: Array
    dropped: Array
    skipped: Array
    count: Array


def as_optax(loss: Callable[..., Array], *, seed: int = 0,
             **zo_options: Any) -> optax.GradientTransformationExtraArgs:
    """The zeroth-order gradient of ``loss`` as an optax transformation (MeZO-style).

    ``update(updates, state, params, *, batch=(), key=None, **extra_args)`` returns
    the estimate of :func:`value_and_grad` (``zo_options``) at ``params`` as the
    updates, so it goes first in a chain with any optax optimizer::

        tx = optax.chain(zo.as_optax(loss, num_directions=64, sigma=1e-2, rank=4),
                         optax.adam(1e-3))
        opt_state = tx.init(params)
        updates, opt_state = tx.update(None, opt_state, params, batch=(x, y))
        params = optax.apply_updates(params, updates)

    ``optax.chain`` returns a ``GradientTransformationExtraArgs`` and passes every extra
    keyword argument to each member that takes extra args (plain members get them
    dropped by ``optax.with_extra_args_support``), so ``batch=`` and ``key=`` reach
    this transformation through the chain. Extra args meant for other members (such
    as ``value=``) are ignored here.

    Semantics:

    - ``updates``: ignored. Pass None; a pytree shaped like ``params`` (e.g. zeros,
      which some optax wrappers feed) is accepted and its values are not read. This
      transformation therefore belongs first in a chain: whatever an earlier member
      computed would be discarded.
    - ``batch``: a tuple (or list) of the loss's arguments after params, i.e. the
      estimate is ``value_and_grad(loss, **zo_options)(params, key, *batch)``; the
      default ``()`` calls ``loss(params)``.
    - ``key``: by default ``state.key`` is split each update (``state.key, sub =
      jax.random.split(state.key)``) and ``sub`` is used, so no key is needed; a PRNG
      key passed as ``key=`` is used as it is instead and ``state.key`` is left
      unchanged.
    - a non-finite estimate (value NaN, e.g. every direction dropped, or inf/NaN in the
      gradient) returns zero updates and adds 1 to ``state.skipped``: params are never
      poisoned. The optimizers after it still run their update on the zeros (adam's
      moments decay and it keeps moving by momentum); use
      :func:`fold_jax.methods.zeroth_order` for a step that is skipped outright.
    - the state records the last ``value`` and ``dropped`` directions (see
      :class:`ZOOptaxState`); a call spends ``value_and_grad(loss, **zo_options).evals``
      loss evaluations. ``init`` and ``update`` are pure and work under ``jax.jit``.

    Args:
        loss: scalar loss ``loss(params, *batch)``.
        seed: seed of the initial ``state.key`` (an int >= 0).
        **zo_options: :func:`value_and_grad`'s options (``num_directions``, ``sigma``,
            ``noise``, ``antithetic``, ``rank``, ``chunk_size``, ``shaping``, ``mask``...).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state is a
        :class:`ZOOptaxState`.

    Raises:
        ValueError / TypeError: a bad option or seed, named, when it is built; in
            ``update``: params None, ``batch`` not a tuple, ``updates`` not None and not
            shaped like params, or ``key`` not a PRNG key (before anything is traced).
    """
    vg = value_and_grad(loss, **zo_options)
    seed = check_int(seed, "seed", minimum=0)

    def init_fn(params: PyTree) -> ZOOptaxState:
        check_params(params, "nothing to perturb")
        return ZOOptaxState(jax.random.key(seed), jnp.asarray(jnp.nan, jnp.float32),
                            jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32),
                            jnp.asarray(0, jnp.int32))

    def update_fn(updates: PyTree | None, state: ZOOptaxState, params: PyTree | None = None,
                  *, batch: tuple | list = (), key: PRNGKeyArray | None = None,
                  **extra_args: Any) -> tuple[PyTree, ZOOptaxState]:
        del extra_args  # meant for other members of a chain
        if params is None:
            raise ValueError("zo.as_optax needs params: call tx.update(None, state, params, "
                             "batch=(x, y)) (the estimate is taken at params)")
        if not isinstance(batch, tuple | list):
            raise TypeError(f"batch must be a tuple of the loss's arguments after params, "
                            f"e.g. batch=(x, y) or batch=(x,), got {type(batch).__name__}")
        if updates is not None and (jax.tree.structure(updates)
                                    != jax.tree.structure(params)):
            raise ValueError("updates must be None or a pytree shaped like params (its values "
                             "are ignored: zo.as_optax computes the updates from params and "
                             "batch, so it goes first in an optax.chain)")
        if key is None:
            next_key, sub = jax.random.split(state.key)
        else:
            check_key(key)
            next_key, sub = state.key, key
        value, grads, info = vg.with_info(params, sub, *batch)
        ok = jnp.isfinite(value) & all_finite(grads)
        out = jax.tree.map(lambda g: jnp.where(ok, g, jnp.zeros_like(g)), grads)
        new = ZOOptaxState(next_key, jnp.asarray(value, jnp.float32),
                           jnp.asarray(info["dropped_directions"], jnp.int32),
                           state.skipped + (~ok).astype(jnp.int32), state.count + 1)
        return out, new

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
