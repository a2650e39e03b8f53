"""The finite-difference estimator behind :func:`fold_jax.estimators.zo.value_and_grad`: its options
(validated before anything is traced), the :class:`Estimator` interface, the
:class:`ZerothOrder` estimator (validate -> directions -> schedule -> normalize) and
what ``describe`` reports (which leaves fuse, which fall back, and why), and
:func:`sample` (direction k as the estimator draws it).

The semantics are documented once, in :mod:`fold_jax.estimators.zo`, which re-exports every
public name here; the schedule lives in :mod:`fold_jax.estimators.zo_schedule`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax.checks import (
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
from fold_jax.estimators import directions as directions_lib
from fold_jax.estimators import flax_layers, fusion
from fold_jax.estimators import shaping as shaping_lib
from fold_jax.estimators.directions import NOISES
from fold_jax.estimators.info import EstimateInfo
from fold_jax.estimators.noise import PRNGS
from fold_jax.estimators.zo_schedule import (
    PopulationMap,
    Problem,
    as_population_map,
    chunk_ids,
    flat_leaves,
    normalize,
    one_pass,
    sharded,
    two_pass,
)

__all__ = [
    "AUTO_CHUNK_CPU",
    "FUSED",
    "SHAPINGS",
    "Estimator",
    "Options",
    "ZerothOrder",
    "sample",
    "value_and_grad",
]

SHAPINGS = (None, "raw", "centered_ranks", "sign")
FUSED = ("auto", True, False)


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
                   mask, fused, prng, as_population_map(population_map))


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


def _chunks(options: Options) -> Array:
    return chunk_ids(options.n_chunks, options.per_chunk)


# -------------------------------------------------------------------------- estimators


class Estimator:
    """A zeroth-order estimator: ``vg(params, key, *args) -> (value, grads)``.

    Attributes:
        evals: loss evaluations one call spends.
    """

    evals: int

    def with_info(self, params: PyTree, key: PRNGKeyArray, *args
                  ) -> tuple[Array, PyTree, EstimateInfo]:
        raise NotImplementedError

    def describe(self, params: PyTree, *args) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(self, params: PyTree, key: PRNGKeyArray, *args) -> tuple[Array, PyTree]:
        value, grads, _ = self.with_info(params, key, *args)
        return value, grads


class ZerothOrder(Estimator):
    """:func:`value_and_grad`'s estimator (see :mod:`fold_jax.estimators.zo`)."""

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
        leaves, treedef = flat_leaves(params)
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
        """Same call as ``vg``; also returns an :class:`~fold_jax.estimators.info.EstimateInfo`
        (perturbed evaluations that entered the estimate, and those dropped; it reads
        like the dict it was)."""
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
        value, grads = normalize(sums, leaves, baseline)
        kept = (sums.count * o.signs).astype(jnp.int32)
        info = EstimateInfo(kept, jnp.int32(o.units * o.signs) - kept)
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
        shaping: see :mod:`fold_jax.estimators.shaping`.
        sign: take the sign of the shaped coefficients.
        mask: 0/1 pytree like params: perturb only where != 0.
        fused: ``"auto"``, True or False (:mod:`fold_jax.estimators.zo`).
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
    leaves, treedef = flat_leaves(params)
    dirs = directions_lib.directions(leaves, noise=o.noise, prng=o.prng, rank=o.rank,
                                     mask=check_mask(mask, params))
    return jax.tree.unflatten(treedef, dirs.dense(dirs.draw(key, jnp.asarray(k, jnp.uint32))))
