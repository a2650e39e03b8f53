"""Separable NES (SNES, Schaul et al. 2011) with noise regenerated from keys.

A search distribution ``N(mu, diag(sigma^2))`` over the parameters: ``mu`` is
``state.params``, ``sigma`` one positive scale per parameter entry (``state.log_sigma``,
a pytree like params). A step samples ``x_k = mu +- sigma * z_k`` (mirrored pairs with
``antithetic=True``), ranks the losses into utilities ``w`` (the NES weights: the best
half get ``log(n/2 + 1) - log(rank)``, normalized, minus ``1/n``; they sum to zero) and
follows the natural gradient::

    g_mu    = sum_k w_k z_k                 ->  mu     += lr * sigma * g_mu
    g_sigma = sum_k w_k (z_k^2 - 1)         ->  sigma  *= exp(lr_sigma / 2 * g_sigma)

(with mirrored pairs, ``w_k`` is ``w+ - w-`` for ``g_mu`` and ``w+ + w-`` for
``g_sigma``). The step per coordinate adapts: coordinates along which the loss
is flat grow their scale, others shrink it. ``lr_sigma`` defaults to
``(3 + ln d) / (5 sqrt d)`` (Wierstra et al. 2014).

Like :mod:`fold_jax.estimators.zo`, the (population x parameters) noise never exists: direction k
is drawn from ``fold_in(key, k)`` by :class:`fold_jax.estimators.directions.Directions` (every
word gives finite noise), once to evaluate the losses and again to contract them,
chunk by chunk. The mean's update ``-sigma * g_mu`` goes through an optax optimizer
(``"sgd"`` with learning rate 1 is SNES itself; ``"adam"`` adds Adam on the mean).

``rank=r`` carries SNES onto :mod:`fold_jax.estimators.zo`'s fused low-rank path: a leaf of ndim
>= 2 whose matrix view ``(prod(shape[:-1]), shape[-1])`` (a conv kernel's (kh kw cin,
cout)) is at least r on both sides is perturbed by ``diag(row) A B^T diag(col) /
sqrt(r)``, i.e. the scales of its entries are factored, ``sigma_ij = row_i col_j``, so
the perturbation stays low-rank (``(row * A)(col * B)^T``) and a layer that consumes
:class:`fold_jax.estimators.perturb.LowRank` evaluates the population at about the cost of
inference (``fused="auto"``; a leaf no layer consumes is materialized and a
:class:`fold_jax.estimators.fusion.FallbackWarning` names it). Its log scales follow the natural
gradient of the factored family ``log sigma_ij = u_i + v_j``: per-entry SNES's step
``lr_sigma / 2 * g`` projected (least squares, which is what the family's Fisher
matrix does) onto separable matrices::

    log sigma_ij += lr_sigma / 2 * (mean_j g_ij + mean_i g_ij - mean g),
    g_ij = sum_k w_k (E_kij^2 - 1),   E_k = A_k B_k^T / sqrt(r)

where the row and column sums of ``E_k^2`` come from the factors in O((n + m) r^2)
(:func:`scale_gradient`), so ``state.log_sigma`` stays separable (``log row_i + log
col_j``) and params-shaped; the population reads it through row 0 and column 0 only
(:func:`scaled`), so a hand-made non-separable state is read as its first row and
column. 1-D and thin leaves keep per-entry scales.

A direction is valid when its losses and its scaled noise are finite; invalid ones get no
utility and are removed by selection. A step with no valid direction, or whose update
is not finite, is skipped (state unchanged, ``info["skipped"] = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree

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
from fold_jax.estimators import directions as directions_lib
from fold_jax.estimators import flax_layers, fusion, zo
from fold_jax.estimators.directions import Directions
from fold_jax.estimators.info import info_type
from fold_jax.estimators.methods import LearningRate, Method, optimizer
from fold_jax.estimators.noise import PRNGS

__all__ = ["SNESInfo", "SNESState", "chunk_layout", "default_sigma_learning_rate",
           "natural_gradient", "scale_gradient", "scaled", "snes", "utilities"]


class SNESState(NamedTuple):
    """State of :func:`snes`: the mean (``params``), per-entry log scales (separable
    over each low-rank leaf's matrix view with ``rank``), optax state."""

    params: PyTree
    log_sigma: PyTree
    opt_state: optax.OptState


@info_type
class SNESInfo(NamedTuple):
    """What an SNES step reports (reads like a dict too: ``info["loss"]``).

    Attributes:
        loss: float32, mean loss of the valid perturbed points (NaN when none).
        evals: int32, evaluations computed (the padding of a last short chunk too).
        skipped: int32, 1 when the step was not kept (no valid direction, or a
            non-finite update).
        valid_directions: int32, perturbed evaluations kept.
        dropped_directions: int32, perturbed evaluations dropped (non-finite).
        sigma_mean: float32, mean scale over the searched entries (after the step).
    """

    loss: Array
    evals: Array
    skipped: Array
    valid_directions: Array
    dropped_directions: Array
    sigma_mean: Array


def default_sigma_learning_rate(d: int) -> float:
    """SNES's scale learning rate ``(3 + ln d) / (5 sqrt d)``.

    Args:
        d: the number of searched parameters (>= 1).

    Returns:
        The learning rate of the log scales, a float.
    """
    return (3.0 + math.log(d)) / (5.0 * math.sqrt(d))


def utilities(losses: Array, valid: Array) -> Array:
    """NES rank utilities of a population to minimize (lower loss, larger weight).

    Args:
        losses: (n,) float32 losses.
        valid: (n,) bool; invalid entries get weight 0 and do not count in ``n``.

    Returns:
        (n,) float32 weights summing to 0 over the valid entries: rank ``i`` (1 =
        lowest loss) of ``m`` valid gets ``max(0, log(m/2 + 1) - log i) / Z - 1/m``.
    """
    m = jnp.sum(valid)
    keyed = jnp.where(valid, losses, jnp.inf)
    rank = jnp.argsort(jnp.argsort(keyed)) + 1  # 1-based; invalid entries rank last
    raw = jnp.maximum(0.0, jnp.log(m / 2.0 + 1.0) - jnp.log(rank.astype(jnp.float32)))
    raw = jnp.where(valid, raw, 0.0)
    w = raw / jnp.maximum(jnp.sum(raw), 1e-30) - 1.0 / jnp.maximum(m, 1)
    return jnp.where(valid, w, 0.0)


def chunk_layout(units: int, chunk_units: int | None) -> tuple[int, int]:
    """(chunks, directions per chunk) for ``units`` directions (pairs when antithetic)
    in chunks of at most ``chunk_units`` (None: one chunk), balanced so the last chunk
    has at most ``chunks - 1`` padding directions (:func:`fold_jax.estimators.zo.chunk_ids` makes
    the indices; a :class:`fold_jax.estimators.zo.Problem` drops the padding).

    Args:
        units: real directions (>= 1).
        chunk_units: the most directions per chunk, or None.

    Returns:
        ``(n_chunks, per_chunk)``.
    """
    n_chunks = 1 if chunk_units is None else -(-units // min(chunk_units, units))
    return n_chunks, -(-units // n_chunks)


def scaled(dirs: Directions, parts: list, log_sigma: list[Array]) -> list:
    """One direction's noise times the scales: per-entry ``sigma * u`` on full-rank
    leaves, ``(row * A, col * B)`` on low-rank ones (``row_i = sigma_i0``, ``col_j =
    sigma_0j / sigma_00`` of the matrix view of ``log_sigma``, which :func:`snes` keeps
    separable; only row 0 and column 0 are read).

    Args:
        dirs: the directions (their leaf layouts).
        parts: one direction's noise (:meth:`Directions.draw`).
        log_sigma: per leaf, the log scales (the leaf's shape).

    Returns:
        The scaled noise, shaped as ``parts``.
    """
    out = []
    for leaf, u, ls in zip(dirs.leaves, parts, log_sigma, strict=True):
        if leaf.lowrank:
            a, b = u
            m = ls.reshape(leaf.matrix)
            row, col = jnp.exp(m[:, 0]), jnp.exp(m[0, :] - m[0, 0])
            out.append((a * row[:, None].astype(a.dtype), b * col[:, None].astype(b.dtype)))
        else:
            out.append(u * jnp.exp(ls).astype(u.dtype))
    return out


def scale_gradient(dirs: Directions, coef: Array, valid: Array, parts: list) -> list[Array]:
    """``g`` of the log scales (module docstring) over a stack of directions.

    Full-rank leaf: ``g = sum_k c_k (u_k^2 - 1)`` per entry (0 where masked). Low-rank
    leaf (matrix view n x m): the projection of that ``g`` onto separable matrices,
    ``mean_j g_ij + mean_i g_ij - mean g``, from the factors, with ``sum_j E_ij^2 =
    a_i^T (B^T B) a_i / r`` and ``sum_i E_ij^2 = b_j^T (A^T A) b_j / r``.

    Args:
        dirs: the directions.
        coef: (K,) float32 utilities (``w+ + w-`` with mirrored pairs).
        valid: (K,) bool; invalid directions are removed by selection.
        parts: the K directions' noise stacked on a leading axis.

    Returns:
        One float32 array per leaf, of the leaf's shape.
    """
    c = jnp.where(valid, coef, 0.0)
    out = []
    for leaf, u, mask in zip(dirs.leaves, parts, dirs.masks, strict=True):
        if leaf.lowrank:
            keep = valid[:, None, None]
            a, b = (jnp.where(keep, x, 0.0) for x in u)
            n, m = leaf.matrix
            rows = jnp.einsum("kiq,kqp,kip->ki", a, jnp.einsum("kjq,kjp->kqp", b, b), a)
            cols = jnp.einsum("kjq,kqp,kjp->kj", b, jnp.einsum("kiq,kip->kqp", a, a), b)
            g_row = (c @ (rows / dirs.rank - m)) / m  # mean over j of g_ij
            g_col = (c @ (cols / dirs.rank - n)) / n  # mean over i of g_ij
            grand = jnp.mean(g_row)  # mean of g: counted once, not in both means
            out.append((g_row[:, None] + g_col[None, :] - grand).reshape(leaf.shape))
        else:
            keep = valid.reshape((-1,) + (1,) * len(leaf.shape))
            sq = u * u - (1.0 if mask is None else mask)
            out.append(jnp.tensordot(c, jnp.where(keep, sq, 0.0), axes=1))
    return out


def natural_gradient(p: zo.Problem, idx: Array, w: Array, valid: Array, kept: list | None
                     ) -> tuple[list[Array], list[Array]]:
    """``(g_mu, g_sigma)`` per leaf (module docstring) from the population's utilities,
    contracted chunk by chunk on regenerated noise (:func:`fold_jax.estimators.zo.accumulate`).

    Args:
        p: the step's :class:`fold_jax.estimators.zo.Problem` (its noise is the unscaled ``z``).
        idx: (chunks, per_chunk) direction indices.
        w: (chunks, per_chunk, signs) utilities; with mirrored pairs ``g_mu`` weighs
            ``z`` by ``w+ - w-`` and ``g_sigma`` by ``w+ + w-``.
        valid: (chunks, per_chunk) bool; invalid directions are removed by selection.
        kept: the one chunk's noise kept by :func:`fold_jax.estimators.zo.population_losses`, or
            None (regenerated from the keys).

    Returns:
        Two lists of float32 arrays shaped like the leaves: ``sum_k c_k z_k`` and
        :func:`scale_gradient`.
    """
    c_mu = w[..., 0] - w[..., 1] if w.shape[-1] == 2 else w[..., 0]
    c_sigma = jnp.sum(w, axis=-1)

    def contract(ids, x, z):
        cm, cs, ok = x
        z = p.noise(ids) if z is None else z
        return p.dirs.contract(cm, ok, z), scale_gradient(p.dirs, cs, ok, z)

    zeros = p.zeros()
    return zo.accumulate(contract, (zeros, zeros), idx, (c_mu, c_sigma, valid), kept)


def _info(dirs: Directions, log_sigma: PyTree, values: Array, valid: Array, ok: Array,
          evals: int, units: int) -> SNESInfo:
    """A step's :class:`SNESInfo` from its losses (chunks, per_chunk, signs)."""
    signs = values.shape[-1]
    n_valid = jnp.sum(valid)
    flat = values.reshape(-1, signs)  # the sum in the order of the flat population
    value = jnp.sum(jnp.where(valid.reshape(-1)[:, None], flat, 0.0)) / jnp.maximum(
        n_valid * signs, 1)
    sigma_mean = sum(jnp.sum(jnp.exp(ls) * (1.0 if m is None else m))
                     for ls, m in zip(jax.tree.leaves(log_sigma), dirs.masks,
                                      strict=True)) / dirs.d_eff
    return SNESInfo(
        loss=jnp.where(n_valid > 0, value, jnp.nan).astype(jnp.float32),
        evals=jnp.asarray(evals, jnp.int32),
        skipped=(~ok).astype(jnp.int32),
        valid_directions=(n_valid * signs).astype(jnp.int32),
        dropped_directions=((units - n_valid) * signs).astype(jnp.int32),
        sigma_mean=jnp.asarray(sigma_mean, jnp.float32))


def snes(
    loss: Callable[..., Array],
    tx: optax.GradientTransformation | str = "sgd",
    learning_rate: LearningRate | None = None,
    *,
    num_directions: int = 32,
    sigma: float = 0.02,
    sigma_learning_rate: float | None = None,
    antithetic: bool = True,
    rank: int | None = None,
    fused: bool | str = "auto",
    chunk_size: int | None = 16,
    prng: str = "hash",
    mask: PyTree | None = None,
) -> Method:
    """SNES as a :class:`fold_jax.estimators.methods.Method` (see the module docstring).

    Args:
        loss: ``loss(params, *args) -> scalar``.
        tx: optimizer of the mean (name or optax object, as in
            :func:`fold_jax.estimators.methods.optimizer`); it receives ``-sigma * g_mu``.
        learning_rate: the mean's learning rate with an optimizer name (None: 1.0,
            which with ``"sgd"`` is plain SNES); None when ``tx`` is an optax object.
        num_directions: loss evaluations per step (even with ``antithetic``).
        sigma: the initial scale of every entry (> 0).
        sigma_learning_rate: the scales' learning rate; None: SNES's default for d,
            the searched entries (those where ``mask`` != 0, or all).
        antithetic: mirrored pairs ``mu +- sigma z``.
        rank: None (per-entry scales, full-rank noise) or r >= 1: low-rank noise with
            factored scales on leaves of ndim >= 2 (module docstring).
        fused: with ``rank``: ``"auto"`` (factors go to the layers that consume
            them) or False (every perturbation materialized; same numbers, slower).
        chunk_size: evaluations per chunk (memory: chunk_size forward passes; with
            ``antithetic`` rounded down to whole pairs, at least one pair); None
            evaluates the whole population at once.
        prng: one of :data:`fold_jax.estimators.noise.PRNGS`.
        mask: pytree like params (0/1): only entries where mask != 0 are searched
            (not with ``rank``).

    Returns:
        A Method named ``"snes"``; ``info`` is an :class:`SNESInfo`: ``loss`` (mean
        loss of the valid perturbed points), ``evals`` (evaluations computed:
        ``num_directions`` plus the padding of a last short chunk, if any),
        ``skipped``, ``valid_directions``, ``dropped_directions`` (perturbed
        evaluations kept and dropped) and ``sigma_mean`` (mean scale over searched
        entries).

    A step is zo's population-wide schedule (:func:`fold_jax.estimators.zo.population_losses`
    then :func:`fold_jax.estimators.zo.accumulate`) on a
    :class:`fold_jax.estimators.zo.Problem` whose noise is scaled by ``sigma``
    (:func:`scaled`), with the NES :func:`utilities` as the shaping and
    :func:`natural_gradient` as the contraction.
    """
    check_callable(loss, "loss", "loss(params, *args) -> scalar")
    antithetic = check_bool(antithetic, "antithetic")
    if learning_rate is None and isinstance(tx, str):
        learning_rate = 1.0  # SNES's own step on the mean
    tx = optimizer(tx, learning_rate, argument="tx")
    num_directions = check_int(num_directions, "num_directions", 2 if antithetic else 1)
    if antithetic and num_directions % 2:
        raise ValueError(f"num_directions={num_directions} must be even with antithetic=True "
                         f"(mirrored pairs)")
    sigma = check_positive(sigma, "sigma")
    if sigma_learning_rate is not None:
        sigma_learning_rate = check_positive(sigma_learning_rate, "sigma_learning_rate")
    rank = check_int(rank, "rank", 1, allow_none=True)
    fused = check_bool_or(fused, "fused", ["auto"], bools=(False,))
    if rank is not None and mask is not None:
        raise ValueError(f"rank={rank} cannot be combined with a mask (a masked low-rank "
                         f"perturbation has no factored scales); use rank=None")
    fun = loss if rank is None else flax_layers.wrap(loss)
    # SNES's default scale learning rate counts the searched entries: a mask's nonzeros
    searched = None if mask is None else sum(
        int(np.count_nonzero(np.asarray(m))) for m in jax.tree.leaves(mask))
    chunk = check_int(chunk_size, "chunk_size", 1, allow_none=True)
    check_choice(prng, "prng", PRNGS)
    signs = 2 if antithetic else 1
    units = num_directions // signs
    chunk_units = None if chunk is None else max(1, chunk // signs)
    n_chunks, per_chunk = chunk_layout(units, chunk_units)
    evals = n_chunks * per_chunk * signs  # the padding of a last short chunk included

    def init(params: PyTree) -> SNESState:
        check_params(params, "snes")
        check_mask(mask, params)
        log_sigma = jax.tree.map(lambda w: jnp.full(jnp.shape(w), math.log(sigma),
                                                    jnp.float32), params)
        return SNESState(params, log_sigma, tx.init(params))

    def step(state: SNESState, key: PRNGKeyArray, *args) -> tuple[SNESState, SNESInfo]:
        check_key(key)
        masks = check_mask(mask, state.params)
        check_scalar_loss(fun, state.params, args, "loss")
        leaves, treedef = jax.tree.flatten(state.params)
        log_sigma = jax.tree.leaves(state.log_sigma)
        dirs = directions_lib.directions(leaves, noise="gaussian", prng=prng, rank=rank,
                                         mask=masks)
        assoc = fusion.plan(fun, leaves, treedef, args, dirs.matrices, rank, fused,
                            masked=masks is not None, who="snes",
                            paths=leaf_paths(state.params)).runtime

        def f(ls):
            return jnp.asarray(fun(jax.tree.unflatten(treedef, ls), *args), jnp.float32)

        # zo's problem with offsets +-1: the scales are in the noise (scaled), not in sigma
        p = zo.Problem(f, leaves, key, dirs, assoc, jnp.array([1.0, -1.0][:signs], jnp.float32),
                       None, 1.0, units)
        idx = zo.chunk_ids(n_chunks, per_chunk)

        def evaluate(ids):
            z = p.noise(ids)
            return (*p.evaluate(scaled(dirs, z, log_sigma), ids), z)

        values, valid, kept = zo.population_losses(evaluate, idx)
        w = utilities(values.reshape(-1), jnp.repeat(valid.reshape(-1), signs))
        g_mu, g_sigma = natural_gradient(p, idx, w.reshape(values.shape), valid, kept)
        d = max(1, searched if searched is not None
                else int(sum(math.prod(jnp.shape(w)) for w in leaves)))
        lr_sigma = (default_sigma_learning_rate(d) if sigma_learning_rate is None
                    else sigma_learning_rate)
        grads = jax.tree.unflatten(treedef, [(-jnp.exp(s) * g).astype(jnp.result_type(w))
                                             for s, g, w in zip(log_sigma, g_mu, leaves,
                                                                strict=True)])
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        log_sigma = jax.tree.unflatten(treedef, [
            ls + 0.5 * lr_sigma * g for ls, g in zip(log_sigma, g_sigma, strict=True)])
        new = SNESState(optax.apply_updates(state.params, updates), log_sigma, opt_state)
        n_valid = jnp.sum(valid)
        ok = (n_valid > 0) & all_finite(new.params) & all_finite(new.log_sigma)
        new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
        return new, _info(dirs, new.log_sigma, values, valid, ok, evals, units)

    return Method(init, step, "snes")

