"""Zeroth-order gradient estimators: drop-ins for ``jax.value_and_grad`` that take a key.

``value_and_grad(fun, ...)(params, key, *args) -> (value, grads)`` estimates the
gradient of ``fun(params, *args)`` from loss evaluations at random perturbations
``params + sigma * u_k`` only (no backward pass)::

    grads = 1/K_valid * sum_k c_k u_k,  c_k = (f(x + s u_k) - f(x - s u_k)) / (2 s)

Semantics (decided here, documented in the README table of fold_jax.zo):

- ``num_directions`` is the number of *perturbed loss evaluations* per call (the
  population size of OpenAI-ES / evosax). ``antithetic=True`` (default) spends them
  as ``num_directions // 2`` mirrored pairs (central differences; ``num_directions``
  must be even) and ``value`` is the mean of the pair losses ``(f(x+su)+f(x-su))/2``,
  an O(sigma^2) estimate of ``f(x)`` that costs no extra evaluation.
  ``antithetic=False`` spends them as forward differences against one shared
  evaluation at ``params``; ``value`` is then exactly ``f(params)`` and a call costs
  ``num_directions + 1`` evaluations. ``vg.evals`` holds the evaluations a call spends.
- noise ``"gaussian"`` (u ~ N(0, I)), ``"rademacher"`` (SPSA, u in {-1, +1}^d) or
  ``"sphere"`` (u uniform on the sphere of radius sqrt(d), d = perturbed dimension).
  All have E[u u^T] = I, so the estimate is unbiased for the gradient of the
  smoothed loss (exactly the gradient on quadratics). Variance of one direction
  with an exact directional derivative (trace of the covariance of (g.u) u):
  gaussian (d+1)|g|^2, rademacher and sphere (d-1)|g|^2; the average over K
  directions (pairs) divides it by K.
- ``rank=r``: every 2-D leaf (in, out) is perturbed by ``A B^T / sqrt(r)`` with A
  (in, r), B (out, r) drawn from ``noise`` (gaussian or rademacher); 1-D and other
  leaves get full-rank noise. E[(AB^T)(AB^T)^T]/r = I, so the estimate stays unbiased.
  With ``fused`` the loss sees ``fold_jax.perturb.LowRank(W, A, B, s/sqrt(r))``
  leaves and fold_jax layers compute ``x@W + s (x@A) B^T``: a population costs
  about one inference on ``num_directions x batch`` examples. ``fused="auto"``
  uses that path when ``fun`` accepts LowRank leaves and every 2-D leaf reaches
  :func:`fold_jax.perturb.matmul` (checked with ``jax.eval_shape``), and otherwise
  materializes ``W + s A B^T / sqrt(r)``. A user's flax layer opts in by computing
  ``fold_jax.perturb.matmul(x, kernel)`` instead of ``x @ kernel``. A loss that also
  reads raw leaves (e.g. weight decay over ``jax.tree.leaves(params)``) would see the
  factors: pass ``fused=False`` or put the decay in the optimizer. ``fused=True``
  forces the factored association ``x@W + s (x@A) B^T`` in every layer;
  ``fused="auto"`` lets each layer pick its association by static shapes
  (:mod:`fold_jax.perturb`: factored unless the factors would add more than a quarter
  to the layer's FLOPs, as in a thin 128 -> 10 head, else ``x @ (W + s A B^T)``).
- ``chunk_size=c`` evaluates c perturbed losses at a time (``lax.scan`` over vmapped
  chunks), so memory is bounded by c forward passes; the last chunk is padded and
  the padding masked out (``vg.evals`` counts the padding: it is computed). What
  depends on params and args only (a first layer's shared ``x @ W``) is recomputed
  per chunk instead of being hoisted out of the loop and kept live across it.
- ``shaping="centered_ranks"`` (OpenAI-ES) replaces losses by centered ranks in
  [-0.5, 0.5] (coefficient ``rank(f+) - rank(f-)``, no 1/sigma): a descent direction
  invariant to monotone transforms of the loss, not in gradient units (use Adam).
  ``sign=True`` uses ``sign(f+ - f-)`` (one-bit comparisons, ZO-SignSGD style).
- ``mask`` (pytree like params, 0/1): only entries where mask != 0 are perturbed
  (pruned nets); grads are zero elsewhere.
- A direction (pair) whose perturbed loss is NaN or inf is dropped: its coefficient
  is zeroed and the average runs over the valid ones. If none is valid, grads are
  zero and value is NaN, so :func:`fold_jax.methods.descent` skips the step.
  ``vg.with_info(params, key, *args) -> (value, grads, {"valid_directions": n})``
  reports the perturbed evaluations that entered the estimate.

- ``population_map`` (default None: ``vmap``): a map ``f -> batched f`` used for the
  losses, e.g. :func:`fold_jax.parallel.population_map_factory`, which shards the
  directions over devices. It maps over rows of direction indices: one row per shard
  when the map has an int attribute ``shards`` (fold_jax.parallel's maps do), else a
  single row. The update is then assembled in a second pass from regenerated noise,
  so only the (directions x signs) losses cross devices. ``chunk_size`` does not
  bound memory on this path: each shard evaluates its row at once.

The (num_directions x n_params) noise is never kept: direction k's noise is
regenerated from ``jax.random.fold_in(key, k)`` (MeZO / OpenAI-ES seed trick). With
``prng="hash"`` (default) the threefry key only seeds a cheap counter hash
(lowbias32) over the flat noise vector, 2-10x cheaper than threefry on CPU;
``prng="threefry"`` uses ``jax.random`` directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax import perturb
from fold_jax.checks import check_callable, check_int, check_key, check_params, check_positive

__all__ = ["NOISES", "PRNGS", "SHAPINGS", "forward_value_and_grad", "sample", "value_and_grad"]

NOISES = ("gaussian", "rademacher", "sphere")
SHAPINGS = (None, "centered_ranks")
PRNGS = ("hash", "threefry")
FUSED = ("auto", True, False)


# ----------------------------------------------------------------------------- noise


def _lowbias32(x: Array) -> Array:
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _bits(key: PRNGKeyArray, m: int, prng: str) -> Array:
    """m uint32 words for one direction's key."""
    if prng == "threefry":
        return jax.random.bits(key, (m,), jnp.uint32)
    seed = jax.random.bits(key, (2,), jnp.uint32)
    return _lowbias32(_lowbias32(jnp.arange(m, dtype=jnp.uint32) ^ seed[0]) + seed[1])


def _flat_noise(key: PRNGKeyArray, m: int, noise: str, prng: str) -> Array:
    """(m,) float32 noise with E[u u^T] = I per coordinate (sphere is normalized later)."""
    if noise == "rademacher":
        words = _bits(key, -(-m // 32), prng)
        bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & jnp.uint32(1)
        return bits.reshape(-1)[:m].astype(jnp.float32) * 2.0 - 1.0
    if prng == "threefry":
        return jax.random.normal(key, (m,), jnp.float32)
    u = ((_bits(key, m, prng) >> 8).astype(jnp.float32) + 0.5) * (1.0 / 16777216.0)
    return jnp.sqrt(2.0).astype(jnp.float32) * jax.lax.erf_inv(2.0 * u - 1.0)


class _Leaf(NamedTuple):
    shape: tuple[int, ...]
    lowrank: bool  # perturbed by A B^T / sqrt(r)
    offset: int  # start in the flat noise vector
    size: int  # noise entries (r (in + out) for low-rank leaves)


def _flatten(params: PyTree) -> tuple[list[Array], jax.tree_util.PyTreeDef]:
    """Leaves as arrays (Python-float and NumPy leaves too, as jax.value_and_grad takes
    them) and the treedef."""
    leaves, treedef = jax.tree.flatten(params)
    return [jnp.asarray(w) for w in leaves], treedef


def _plan(leaves: list[Array], rank: int | None) -> tuple[list[_Leaf], int]:
    plan, offset = [], 0
    for leaf in leaves:
        shape = tuple(jnp.shape(leaf))
        low = rank is not None and len(shape) == 2
        size = rank * (shape[0] + shape[1]) if low else math.prod(shape)
        plan.append(_Leaf(shape, low, offset, size))
        offset += size
    return plan, offset


def _leaf_noise(plan, flat: Array, rank, masks) -> list:
    """Split one direction's flat noise into per-leaf arrays or (A, B) factor pairs."""
    out = []
    for leaf, m in zip(plan, masks, strict=True):
        seg = flat[leaf.offset : leaf.offset + leaf.size]
        if leaf.lowrank:
            n_in = leaf.shape[0] * rank
            out.append((seg[:n_in].reshape(leaf.shape[0], rank), seg[n_in:].reshape(-1, rank)))
        else:
            u = seg.reshape(leaf.shape)
            out.append(u if m is None else u * m)
    return out


def _direction(key, k, plan, m_total, noise, prng, rank, masks, d_eff):
    flat = _flat_noise(jax.random.fold_in(key, k), m_total, noise, prng)
    parts = _leaf_noise(plan, flat, rank, masks)
    if noise == "sphere":  # normalize the (masked) vector to radius sqrt(d_eff)
        sq = sum(jnp.sum(u * u) for u in parts)
        parts = [u * jnp.sqrt(d_eff / sq) for u in parts]
    return parts


def _stacked(gen: Callable, idx: Array):
    """``gen`` over the direction indices ``idx``, stacked on a leading axis.

    A loop (``lax.map``), not ``vmap``: the loop's output is a buffer, so XLA cannot
    fuse the noise generation (hash, ``erf_inv``) into its consumers. Fused, a bias's
    noise would be recomputed for every activation entry it is broadcast to, which
    made a rank-4 step on the digits MLP about 2x slower on CPU.
    """
    return jax.lax.map(gen, idx)


def _blocks(idx: Array, population_map: Callable) -> Array:
    """(n,) direction indices as (blocks, size) rows for ``population_map``: one row per
    shard (``population_map.shards``, 1 when the map has no such attribute).

    Each row's noise is then generated in one ``_stacked`` loop. A map over single
    directions ran that loop once per index, a loop XLA removes, after which the noise
    fused into its consumers again (the sharded rank-4 digits step ran 2x slower than
    the unsharded one); fixed-size blocks of two would pad small populations to twice
    the work per device. The padding repeats the last index; callers drop its values.
    """
    shards = getattr(population_map, "shards", 1)
    size = max(1, -(-idx.shape[0] // shards))
    pad = (-idx.shape[0]) % size
    return jnp.concatenate([idx, jnp.repeat(idx[-1:], pad)]).reshape(-1, size)


def _dense(leaf: _Leaf, u, rank, m) -> Array:
    """The perturbation a leaf's noise stands for, as a dense array."""
    if leaf.lowrank:
        a, b = u
        w = (a @ b.T) / math.sqrt(rank)
        return w if m is None else w * m
    return u


def _perturb(plan, leaves, parts, t, rank, masks, association: str | None) -> list:
    """Perturbed leaves; low-rank leaves stay factored (LowRank) unless association is None."""
    out = []
    for leaf, w, u, m in zip(plan, leaves, parts, masks, strict=True):
        if leaf.lowrank and association is not None:
            a, b = u
            out.append(perturb.LowRank(w, a.astype(w.dtype), b.astype(w.dtype),
                                       (t / math.sqrt(rank)).astype(w.dtype), association))
        else:
            out.append(w + (t * _dense(leaf, u, rank, m)).astype(w.dtype))
    return out


def _contract(plan, c: Array, parts, rank, masks) -> list[Array]:
    """sum_k c_k u_k per leaf, for stacked noise parts with leading axis k."""
    out = []
    for leaf, u, m in zip(plan, parts, masks, strict=True):
        if leaf.lowrank:
            a, b = u
            g = jnp.einsum("kir,kor->io", a * c[:, None, None], b) / math.sqrt(rank)
            out.append(g if m is None else g * m)
        else:
            out.append(jnp.tensordot(c, u, axes=1))
    return out


# ----------------------------------------------------------------------- fused probe

_SEEN: set[int] = set()


@jax.tree_util.register_pytree_node_class
class _Probe(perturb.LowRank):
    """A LowRank that records (by leaf id) when a layer reads its factors."""

    __slots__ = ("uid",)

    def __init__(self, base, a, b, scale, uid: int = -1):
        super().__init__(base, a, b, scale)
        self.uid = uid

    def __getattribute__(self, name):
        if name == "a":
            _SEEN.add(object.__getattribute__(self, "uid"))
        return object.__getattribute__(self, name)

    def tree_flatten(self):
        get = object.__getattribute__
        return (get(self, "base"), get(self, "a"), get(self, "b"), get(self, "scale")), get(
            self, "uid"
        )

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, uid=aux)


def _fusable(fun, params, args, rank) -> bool:
    """True when ``fun`` takes LowRank leaves for every 2-D leaf and multiplies by them."""
    leaves, treedef = jax.tree.flatten(params)
    probes, ids = [], []
    for i, w in enumerate(leaves):
        if jnp.ndim(w) == 2:
            a = jax.ShapeDtypeStruct((w.shape[0], rank), w.dtype)
            b = jax.ShapeDtypeStruct((w.shape[1], rank), w.dtype)
            probes.append(_Probe(w, a, b, jax.ShapeDtypeStruct((), w.dtype), uid=i))
            ids.append(i)
        else:
            probes.append(w)
    if not ids:
        return False
    spec = lambda x: (jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))  # noqa: E731
                      if hasattr(x, "shape") and hasattr(x, "dtype") else x)
    probes = [_Probe(spec(p.base), p.a, p.b, p.scale, uid=p.uid) if isinstance(p, _Probe)
              else spec(p) for p in probes]
    args = jax.tree.map(spec, args)
    _SEEN.clear()
    try:
        out = jax.eval_shape(lambda p, *a: fun(p, *a), jax.tree.unflatten(treedef, probes), *args)
    except Exception:
        return False
    finally:
        seen = set(_SEEN)
        _SEEN.clear()
    return jnp.shape(out) == () and set(ids) <= seen


# ------------------------------------------------------------------------ validation


def _check_options(num_directions, sigma, noise, antithetic, rank, chunk_size, shaping, fused,
                   prng):
    check_int(num_directions, "num_directions")
    check_positive(sigma, "sigma")
    if noise not in NOISES:
        raise ValueError(f"noise={noise!r} is not known; allowed: {list(NOISES)}")
    if antithetic and num_directions % 2:
        raise ValueError(f"num_directions={num_directions} must be even with antithetic=True "
                         "(it counts evaluations: num_directions // 2 mirrored pairs)")
    check_int(rank, "rank", allow_none=True)
    if rank is not None and noise == "sphere":
        raise ValueError("noise='sphere' cannot be combined with rank; allowed noise with "
                         "rank: ['gaussian', 'rademacher']")
    check_int(chunk_size, "chunk_size", allow_none=True)
    if chunk_size is not None and antithetic and chunk_size % 2:
        raise ValueError(f"chunk_size={chunk_size} must be even with antithetic=True "
                         "(it counts evaluations, pairs stay together)")
    if shaping not in SHAPINGS:
        raise ValueError(f"shaping={shaping!r} is not known; allowed: {list(SHAPINGS)}")
    if not (fused is True or fused is False or (isinstance(fused, str) and fused == "auto")):
        raise ValueError(f"fused={fused!r}; allowed: ['auto', True, False]")
    if prng not in PRNGS:
        raise ValueError(f"prng={prng!r} is not known; allowed: {list(PRNGS)}")


def _check_call(params, rank, mask, fused):
    check_params(params, "nothing to perturb")
    leaves = jax.tree.leaves(params)
    if rank is not None:
        mats = [tuple(jnp.shape(w)) for w in leaves if jnp.ndim(w) == 2]
        if fused is True and not mats:
            raise ValueError("fused=True needs at least one 2-D leaf in params")
        for shape in mats:
            if rank > min(shape):
                raise ValueError(f"rank={rank} exceeds min(shape)={min(shape)} of a 2-D leaf "
                                 f"{shape}; allowed: 1..{min(min(s) for s in mats)}")
    if mask is not None:
        if jax.tree.structure(mask) != jax.tree.structure(params):
            raise ValueError("mask must be a pytree with the structure of params (or None)")
        for w, m in zip(leaves, jax.tree.leaves(mask), strict=True):
            if jnp.shape(m) != jnp.shape(w):
                raise ValueError(f"mask leaf shape {jnp.shape(m)} != param shape {jnp.shape(w)}")


# ------------------------------------------------------------------------- estimator


def _check_loss(fun, params, args) -> None:
    """ValueError unless ``fun(params, *args)`` is a scalar (shapes only, nothing runs)."""
    try:
        out = jax.eval_shape(fun, params, *args)
    except (TypeError, ValueError) as e:
        raise ValueError(f"fun(params, *args) fails on params/args of these shapes "
                         f"({[jnp.shape(a) for a in args]} for args): {e}") from e
    if getattr(out, "shape", None) != ():
        raise ValueError(f"fun must return a scalar loss; it returned "
                         f"{getattr(out, 'shape', type(out).__name__)}")


def _ranks(values: Array, valid: Array) -> Array:
    """Centered ranks in [-0.5, 0.5] of the valid entries (0 for invalid)."""
    flat = jnp.where(valid, values, jnp.inf).reshape(-1)
    ranks = jnp.argsort(jnp.argsort(flat)).astype(jnp.float32)
    n = jnp.sum(valid)
    centered = ranks / jnp.maximum(n - 1, 1).astype(jnp.float32) - 0.5
    return jnp.where(valid, centered.reshape(values.shape), 0.0)


def value_and_grad(
    fun: Callable[..., Array],
    *,
    num_directions: int = 64,
    sigma: float = 1e-3,
    noise: str = "gaussian",
    antithetic: bool = True,
    rank: int | None = None,
    chunk_size: int | None = None,
    shaping: str | None = None,
    sign: bool = False,
    mask: PyTree | None = None,
    fused: bool | str = "auto",
    prng: str = "hash",
    population_map: Callable | None = None,
) -> Callable[..., tuple[Array, PyTree]]:
    """Zeroth-order ``vg(params, key, *args) -> (value, grads)`` for ``fun(params, *args)``.

    See the module docstring for the meaning of every option. The returned function
    has attributes ``evals`` (loss evaluations per call) and ``with_info`` (same
    call, returns ``(value, grads, {"valid_directions": int32})``).
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    _check_options(num_directions, sigma, noise, antithetic, rank, chunk_size, shaping, fused,
                   prng)
    if population_map is not None and not callable(population_map):
        raise TypeError("population_map must be callable (f -> batched f) or None")
    if fused is True and mask is not None:
        raise ValueError("fused=True cannot be combined with mask (a masked low-rank "
                         "perturbation is not low rank); use fused='auto' or False")
    if fused is True and rank is None:
        raise ValueError("fused=True needs rank=r (only low-rank perturbations are fused)")
    signs = 2 if antithetic else 1
    units = num_directions // signs  # pairs (antithetic) or single directions
    per_chunk = units if chunk_size is None else max(1, min(units, chunk_size // signs))
    n_chunks = -(-units // per_chunk)
    evals = n_chunks * per_chunk * signs + (0 if antithetic else 1)

    def with_info(params: PyTree, key: PRNGKeyArray, *args) -> tuple[Array, PyTree, dict]:
        check_key(key)
        _check_call(params, rank, mask, fused)
        _check_loss(fun, params, args)
        leaves, treedef = _flatten(params)
        masks = [None] * len(leaves) if mask is None else [
            jnp.asarray(m != 0, jnp.float32) for m in jax.tree.leaves(mask)]
        plan, m_total = _plan(leaves, rank)
        use_fused = rank is not None and mask is None and (
            fused is True or (fused == "auto" and _fusable(fun, params, args, rank)))
        association = ("factored" if fused is True else "auto") if use_fused else None
        d_eff = (sum(jnp.sum(m) for m in masks) if mask is not None
                 else float(sum(math.prod(p.shape) for p in plan)))
        f = lambda ls: fun(jax.tree.unflatten(treedef, ls), *args)  # noqa: E731
        f0 = None if antithetic else jnp.asarray(f(leaves), jnp.float32)
        ts = jnp.asarray([sigma, -sigma] if antithetic else [sigma], jnp.float32)

        def noise_of(idx):
            gen = lambda k: _direction(key, k, plan, m_total, noise, prng, rank, masks, d_eff)  # noqa: E731
            return _stacked(gen, idx)

        def values_of(parts, idx):
            # Tie the parameters to the chunk's indices: XLA would otherwise hoist what
            # depends on params and args only (the shared x @ W of a first layer) out of
            # the chunk loop, keeping it live beside every chunk's activations.
            ls, _ = jax.lax.optimization_barrier((leaves, idx))

            def unit(u):
                ev = lambda t: f(_perturb(plan, ls, u, t, rank, masks, association))  # noqa: E731
                return jax.vmap(lambda t: jnp.asarray(ev(t), jnp.float32))(ts)

            return jax.vmap(unit)(parts)  # (chunk, signs)

        def coefficients(vals, idx):
            valid = jnp.all(jnp.isfinite(vals), axis=1) & (idx < units)
            diff = vals[:, 0] - vals[:, 1] if antithetic else vals[:, 0] - f0
            coef = jnp.sign(diff) if sign else diff / (signs * sigma)
            return jnp.where(valid, coef, 0.0), valid

        def pair_value(vals, valid):
            return jnp.sum(jnp.where(valid, jnp.mean(vals, axis=1), 0.0))

        idx_all = jnp.arange(n_chunks * per_chunk, dtype=jnp.uint32).reshape(n_chunks, -1)
        zeros = [jnp.zeros(p.shape, jnp.float32) for p in plan]
        if shaping is None and population_map is None:
            def body(carry, idx):
                acc, total, count = carry
                parts = noise_of(idx)
                vals = values_of(parts, idx)
                coef, valid = coefficients(vals, idx)
                acc = [a + g for a, g in zip(acc, _contract(plan, coef, parts, rank, masks),
                                             strict=True)]
                return (acc, total + pair_value(vals, valid), count + jnp.sum(valid)), None

            carry = (zeros, jnp.float32(0), jnp.int32(0))
            if n_chunks == 1:
                (acc, total, count), _ = body(carry, idx_all[0])
            else:
                (acc, total, count), _ = jax.lax.scan(body, carry, idx_all)
        else:  # two passes: every loss first, then the update from regenerated noise
            parts = None
            if population_map is not None:  # sharded: only the loss matrix crosses devices
                block = lambda ks: values_of(noise_of(ks), ks)  # noqa: E731
                vals = population_map(block)(_blocks(idx_all.reshape(-1), population_map))
                vals = vals.reshape(-1, signs)[: n_chunks * per_chunk].reshape(
                    n_chunks, per_chunk, signs)
            elif n_chunks == 1:
                parts = noise_of(idx_all[0])
                vals = values_of(parts, idx_all[0])[None]
            else:
                vals = jax.lax.map(lambda idx: values_of(noise_of(idx), idx), idx_all)
            if shaping is None:
                coef, valid = jax.vmap(coefficients)(vals, idx_all)
            else:
                valid = jnp.all(jnp.isfinite(vals), axis=-1) & (idx_all < units)
                if antithetic:
                    r = _ranks(vals, jnp.broadcast_to(valid[..., None], vals.shape))
                    coef = r[..., 0] - r[..., 1]
                else:
                    coef = _ranks(vals[..., 0], valid)
                coef = jnp.sign(coef) if sign else coef
            if parts is not None:
                acc = _contract(plan, coef[0], parts, rank, masks)
            else:
                def accumulate(acc, xs):
                    idx, c = xs
                    g = _contract(plan, c, noise_of(idx), rank, masks)
                    return [a + b for a, b in zip(acc, g, strict=True)], None

                acc, _ = jax.lax.scan(accumulate, zeros, (idx_all, coef))
            total = jnp.sum(jax.vmap(pair_value)(vals, valid))
            count = jnp.sum(valid)

        ok = count > 0
        n = jnp.maximum(count, 1).astype(jnp.float32)
        grads = [jnp.where(ok, a / n, 0.0).astype(w.dtype) for a, w in zip(acc, leaves,
                                                                          strict=True)]
        value = jnp.where(ok, total / n, jnp.nan) if antithetic else jnp.where(ok, f0, jnp.nan)
        info = {"valid_directions": (count * signs).astype(jnp.int32)}
        return value, jax.tree.unflatten(treedef, grads), info

    def vg(params: PyTree, key: PRNGKeyArray, *args) -> tuple[Array, PyTree]:
        value, grads, _ = with_info(params, key, *args)
        return value, grads

    vg.with_info = with_info
    vg.evals = evals
    return vg


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
    """Direction ``k`` exactly as :func:`value_and_grad` draws it for ``key``, as a dense
    pytree like ``params`` (low-rank leaves materialized as A B^T / sqrt(rank)). For a
    pair estimator the pair index is k; ``u`` then enters ``params +- sigma * u``."""
    _check_options(2, 1.0, noise, True, rank, None, None, "auto", prng)
    _check_call(params, rank, mask, "auto")
    leaves, treedef = _flatten(params)
    masks = [None] * len(leaves) if mask is None else [
        jnp.asarray(m != 0, jnp.float32) for m in jax.tree.leaves(mask)]
    plan, m_total = _plan(leaves, rank)
    d_eff = (sum(jnp.sum(m) for m in masks) if mask is not None
             else float(sum(math.prod(p.shape) for p in plan)))
    parts = _direction(key, jnp.asarray(k, jnp.uint32), plan, m_total, noise, prng, rank, masks,
                       d_eff)
    return jax.tree.unflatten(treedef, [_dense(p, u, rank, m)
                                        for p, u, m in zip(plan, parts, masks, strict=True)])


def forward_value_and_grad(
    fun: Callable[..., Array],
    *,
    num_directions: int = 1,
    prng: str = "hash",
    population_map: Callable | None = None,
) -> Callable[..., tuple[Array, PyTree]]:
    """Forward gradient (Baydin et al. 2022): ``grads = mean_k (grad f . u_k) u_k`` with
    u_k ~ N(0, I) and the directional derivative from one ``jax.jvp`` each (exact,
    unbiased; variance (d+1)|g|^2 / K). ``value = fun(params, *args)`` exactly.
    Directions with a non-finite derivative are dropped as in :func:`value_and_grad`;
    ``vg.evals = num_directions`` (one forward-with-tangent each); ``vg.with_info``.
    ``population_map`` as in :func:`value_and_grad` (tangents sharded over devices;
    only the directional derivatives cross, the tangents are regenerated).
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    check_int(num_directions, "num_directions")
    if population_map is not None and not callable(population_map):
        raise TypeError("population_map must be callable (f -> batched f) or None")
    if prng not in PRNGS:
        raise ValueError(f"prng={prng!r} is not known; allowed: {list(PRNGS)}")

    def with_info(params: PyTree, key: PRNGKeyArray, *args):
        check_key(key)
        _check_call(params, None, None, "auto")
        _check_loss(fun, params, args)
        leaves, treedef = _flatten(params)
        plan, m_total = _plan(leaves, None)
        masks = [None] * len(leaves)
        f = lambda ls: jnp.asarray(fun(jax.tree.unflatten(treedef, ls), *args), jnp.float32)  # noqa: E731

        def gen(k):
            return _direction(key, k, plan, m_total, "gaussian", prng, None, masks, 0.0)

        def derivative(parts):
            tangents = [u.astype(w.dtype) for u, w in zip(parts, leaves, strict=True)]
            return jax.jvp(f, (leaves,), (tangents,))  # (value, directional derivative)

        ks = jnp.arange(num_directions, dtype=jnp.uint32)
        parts = _stacked(gen, ks)
        if population_map is None:
            values, derivs = jax.vmap(derivative)(parts)
        else:  # sharded: each device regenerates its tangents, only derivatives cross
            block = lambda b: jax.vmap(derivative)(_stacked(gen, b))  # noqa: E731
            values, derivs = (v.reshape(-1)[:num_directions]
                              for v in population_map(block)(_blocks(ks, population_map)))
        valid = jnp.isfinite(derivs)
        count = jnp.sum(valid)
        coef = jnp.where(valid, derivs, 0.0) / jnp.maximum(count, 1).astype(jnp.float32)
        grads = [g.astype(w.dtype) for g, w in zip(_contract(plan, coef, parts, None, masks),
                                                   leaves, strict=True)]
        value = jnp.where(count > 0, values[0], jnp.nan)
        return value, jax.tree.unflatten(treedef, grads), {
            "valid_directions": count.astype(jnp.int32)}

    def vg(params: PyTree, key: PRNGKeyArray, *args):
        value, grads, _ = with_info(params, key, *args)
        return value, grads

    vg.with_info = with_info
    vg.evals = num_directions
    return vg

