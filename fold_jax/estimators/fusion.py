"""Which parameter leaves a loss can take as lazy low-rank factors (the fused path).

:func:`associations` evaluates the loss's shapes (``jax.eval_shape``: nothing runs)
with a recording :class:`fold_jax.estimators.perturb.LowRank` in place of each low-rank leaf. A
leaf is fused when a layer consumed its factors (fold_jax's layers and
:mod:`fold_jax.estimators.perturb`'s products; standard flax layers through
:mod:`fold_jax.estimators.flax_layers`, which the estimators wrap every loss in); the association
the layer picked (``"factored"``: ``x@W + s (x@A) B^T``, ``"dense"``: the layer forms
``W + s A B^T`` because that is cheaper for its shapes) is recorded per leaf. A leaf
that no layer consumed, or whose consumer formed the kernel without a pick (a layer's
fallback), is summed (``W + s A B^T`` before the loss sees it): still correct, one
dense leaf per direction. :func:`summed_cheaply` tells the harmless case apart: a
table only added to an activation at least its size (a learned positional
embedding ``h + pos[:T]``) costs no more per direction than the activation it
touches, so it is "summed", not a fallback; every other summed leaf is
materialized and named in a :class:`FallbackWarning`.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fold_jax.estimators import perturb

__all__ = ["MATERIALIZED", "FallbackWarning", "Plan", "associations", "failing_leaves", "plan",
           "summed_cheaply"]

MATERIALIZED = None  # association of a low-rank leaf the loss sees summed
FORMED = "formed"  # probe event: a consumer formed W + s A B^T (after a dense pick or not)


class FallbackWarning(UserWarning):
    """A low-rank leaf is materialized per direction instead of fused (slower)."""


class Plan(NamedTuple):
    """How each leaf reaches the loss in one estimator call (from :func:`plan`)."""

    picked: dict[int, str | None]  # low-rank leaf -> its consumers' pick or MATERIALIZED
    runtime: tuple[str | None, ...]  # per leaf: what its factors ask for, None: summed
    unfused: tuple[int, ...]  # low-rank leaves materialized although fusion was asked
    summed: Mapping[int, str] = MappingProxyType({})  # summed low-rank leaves that cost
    # no more than the activation they are added to -> why (not fallbacks, not unfused)

_RECORD = threading.local()


def _log() -> dict[int, list[str]]:
    if not hasattr(_RECORD, "log"):
        _RECORD.log = {}
    return _RECORD.log


@jax.tree_util.register_pytree_node_class
class _Probe(perturb.LowRank):
    """A LowRank that records (by leaf index) which association its consumers picked."""

    __slots__ = ("uid",)

    def __init__(self, base, a, b, scale, association: str = "auto", uid: int = -1):
        super().__init__(base, a, b, scale, association)
        self.uid = uid

    def __getattribute__(self, name):
        if name == "a":  # a consumer read the factors
            _log().setdefault(object.__getattribute__(self, "uid"), [])
        return object.__getattribute__(self, name)

    def pick(self, x_shape):
        choice = super().pick(x_shape)
        _log().setdefault(self.uid, []).append(choice)
        return choice

    def materialize(self):
        _log().setdefault(self.uid, []).append(FORMED)
        return super().materialize()

    def tree_flatten(self):
        get = object.__getattribute__
        children = (get(self, "base"), get(self, "a"), get(self, "b"), get(self, "scale"))
        return children, (get(self, "association"), get(self, "uid"))

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, association=aux[0], uid=aux[1])


def _spec(x: Any) -> Any:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
    return x


def _probe_tree(leaves: Sequence, treedef, candidates: Sequence[int], matrices, rank: int,
                association: str):
    out = [_spec(w) for w in leaves]
    for i in candidates:
        n_in, n_out = matrices[i]
        dtype = jnp.result_type(leaves[i])
        out[i] = _Probe(out[i], jax.ShapeDtypeStruct((n_in, rank), dtype),
                        jax.ShapeDtypeStruct((n_out, rank), dtype),
                        jax.ShapeDtypeStruct((), dtype), association, uid=i)
    return jax.tree.unflatten(treedef, out)


def _trace(fun: Callable, leaves, treedef, args, candidates, matrices, rank, association
           ) -> dict[int, list[str]] | Exception:
    """The consumed leaves and their picks, or the exception the loss raised."""
    log = _log()
    log.clear()
    try:
        # a fresh function each time: eval_shape caches traces by function, and a cache
        # hit would run no layer and record nothing
        probes = _probe_tree(leaves, treedef, candidates, matrices, rank, association)
        out = jax.eval_shape(lambda *a: fun(*a), probes, *jax.tree.map(_spec, args))
    except Exception as e:  # a layer that cannot take the factors
        return e
    finally:
        seen = dict(log)
        log.clear()
    if jnp.shape(out) != ():
        return ValueError(f"fun returned shape {jnp.shape(out)}, not a scalar")
    return seen


def _resolve(seen: dict[int, list[str]], candidates) -> dict[int, str | None]:
    out: dict[int, str | None] = {}
    for i in candidates:
        events = seen.get(i)
        picks = {e for e in events or () if e != FORMED}
        if events is None or events.count(FORMED) > events.count("dense"):
            out[i] = MATERIALIZED  # unread, or formed by a use that made no pick
        elif len(picks) <= 1:  # read without a pick: a user's consumer of the factors
            out[i] = next(iter(picks), "dense")
        else:
            out[i] = "mixed"
    return out


def associations(fun: Callable, leaves: Sequence, treedef, args: Sequence,
                 candidates: Sequence[int], matrices: dict[int, tuple[int, int]], rank: int,
                 association: str = "auto") -> dict[int, str | None]:
    """Per candidate leaf: the association its consumers picked, or ``MATERIALIZED``.

    All candidates are tried together first; when the loss fails with factors in
    every place, the failing ones are found by bisection (halves that trace are kept
    whole; about 2 log2(n) traces per failing leaf instead of one per leaf) and the
    ones that work are checked together once more.

    Args:
        fun: the loss, ``fun(params, *args) -> scalar``.
        leaves, treedef: params as leaves (arrays) and their tree structure.
        args: the loss's other arguments.
        candidates: indices of the leaves drawn as low-rank.
        matrices: index -> (in, out) matrix view of each candidate.
        rank: the factors' rank.
        association: what the factors ask for: ``"auto"`` or ``"factored"``.

    Returns:
        index -> ``"factored"``, ``"dense"``, ``"mixed"`` (different picks in different
        uses) or ``MATERIALIZED``.
    """
    candidates = list(candidates)
    if not candidates:
        return {}
    seen = _trace(fun, leaves, treedef, args, candidates, matrices, rank, association)
    if not isinstance(seen, Exception):
        return _resolve(seen, candidates)

    def working(group: list[int]) -> list[int]:  # bisection: 2 log2(n) traces per bad leaf
        if not isinstance(_trace(fun, leaves, treedef, args, group, matrices, rank,
                                 association), Exception):
            return group
        if len(group) == 1:
            return []
        return working(group[: len(group) // 2]) + working(group[len(group) // 2:])

    half = len(candidates) // 2
    works = (working(candidates[:half]) if half else []) + working(candidates[half:])
    seen = _trace(fun, leaves, treedef, args, works, matrices, rank, association)
    if isinstance(seen, Exception):
        return dict.fromkeys(candidates, MATERIALIZED)
    return {**dict.fromkeys(candidates, MATERIALIZED), **_resolve(seen, works)}


def failing_leaves(fun: Callable, leaves: Sequence, treedef, args: Sequence,
                   candidates: Sequence[int], matrices: dict[int, tuple[int, int]],
                   rank: int) -> dict[int, str]:
    """Per candidate leaf that no layer consumes as factors, the reason (for errors).

    Args:
        fun: the loss, ``fun(params, *args) -> scalar``.
        leaves: params as leaves (arrays).
        treedef: the params' tree structure.
        args: the loss's other arguments.
        candidates: indices of the leaves drawn as low-rank.
        matrices: index -> (in, out) matrix view of each candidate.
        rank: the factors' rank.

    Returns:
        index -> the reason, for each candidate traced alone that fails or is not
        consumed as factors.
    """
    out = {}
    for i in candidates:
        seen = _trace(fun, leaves, treedef, args, [i], matrices, rank, "factored")
        if isinstance(seen, Exception):
            out[i] = f"{type(seen).__name__}: {str(seen).splitlines()[0][:200]}"
        elif i not in seen:
            out[i] = "no layer multiplies by it through fold_jax.perturb or a flax layer"
    return out


_SHAPE_OPS = frozenset({"slice", "dynamic_slice", "reshape", "squeeze", "expand_dims",
                        "broadcast_in_dim", "convert_element_type", "transpose", "copy",
                        "copy_p", "rev"})
_ADDITIVE = frozenset({"add", "add_any", "sub", "mul", "max", "min"})


def _sub_jaxpr(eqn) -> Any:
    """The inner jaxpr of a call-like equation (jit, remat, custom_jvp), else None."""
    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        inner = eqn.params.get(name)
        inner = getattr(inner, "jaxpr", inner)
        if hasattr(inner, "eqns") and len(inner.invars) == len(eqn.invars):
            return inner
    return None


def _walk(jaxpr, table: set, data: set, size: int, uses: list) -> tuple[set, set]:
    """Follows the table's values through ``jaxpr`` (vars in ``table``: shape-only
    views of it; in ``data``: values that depend on the loss's arguments).

    Appends to ``uses`` one ``(ok, what)`` per place the table is used: ok when it is
    an elementwise op with an activation (a data-dependent operand) whose output has
    at least ``size`` entries. Returns the (table, data) vars among the outputs."""
    for eqn in jaxpr.eqns:
        ins = [v for v in eqn.invars if not hasattr(v, "val")]  # drop literals
        hit = [v for v in ins if v in table]
        dep = any(v in data for v in ins)
        inner = _sub_jaxpr(eqn)
        if hit and inner is not None:
            mask = [not hasattr(v, "val") and v in table for v in eqn.invars]
            dmask = [not hasattr(v, "val") and v in data for v in eqn.invars]
            t_in = {w for w, m in zip(inner.invars, mask, strict=True) if m}
            d_in = {w for w, m in zip(inner.invars, dmask, strict=True) if m}
            t_out, d_out = _walk(inner, t_in, d_in, size, uses)
            table.update(v for v, w in zip(eqn.outvars, inner.outvars, strict=True)
                         if w in t_out)
            data.update(v for v, w in zip(eqn.outvars, inner.outvars, strict=True)
                        if w in d_out)
            continue
        if hit and eqn.primitive.name in _SHAPE_OPS and not dep:
            table.update(eqn.outvars)
            continue
        if hit:
            out = eqn.outvars[0].aval
            n_out = math.prod(getattr(out, "shape", ()))
            ok = (eqn.primitive.name in _ADDITIVE and dep and len(hit) == 1
                  and n_out >= size)
            uses.append((ok, f"{eqn.primitive.name} -> {n_out} entries"
                         + ("" if dep else " (no activation operand)")))
        if dep or hit:
            data.update(eqn.outvars)
    return ({v for v in jaxpr.outvars if v in table},
            {v for v in jaxpr.outvars if v in data})


def summed_cheaply(fun: Callable, leaves: Sequence, treedef, args: Sequence, i: int
                   ) -> str | None:
    """Why summing leaf ``i`` per direction costs no more than the activations it touches.

    The loss is traced (``jax.make_jaxpr`` on shapes: nothing runs) with leaf i an
    array; its uses are followed through shape-only ops (slices, broadcasts, casts)
    and jitted / rematerialized calls. The leaf is cheap when every use is an
    elementwise op (add, sub, mul, max, min) with an operand that depends on the
    loss's arguments (an activation) and an output of at least the leaf's size: the
    per-direction ``W + s A B^T`` is then no larger than the activation it is added
    to (a learned positional table added to token embeddings).

    Args:
        fun: the loss, ``fun(params, *args) -> scalar``.
        leaves, treedef: params as leaves (arrays) and their tree structure.
        args: the loss's other arguments.
        i: the leaf's index.

    Returns:
        A sentence saying so, or None (not cheap, or the trace failed).
    """
    return _summed(fun, leaves, treedef, args, [i]).get(i)


def _summed(fun: Callable, leaves: Sequence, treedef, args: Sequence, indices: Sequence[int]
            ) -> dict[int, str]:
    """:func:`summed_cheaply` for several leaves from one trace: index -> why (cheap only)."""
    if not indices:
        return {}
    try:
        closed = jax.make_jaxpr(lambda ls, *a: fun(jax.tree.unflatten(treedef, ls), *a))(
            [_spec(w) for w in leaves], *jax.tree.map(_spec, list(args)))
    except Exception:  # the loss cannot run on plain arrays: no claim
        return {}
    jaxpr, n = closed.jaxpr, len(leaves)
    out = {}
    for i in indices:
        size = math.prod(jnp.shape(leaves[i]))
        uses: list[tuple[bool, str]] = []
        _walk(jaxpr, {jaxpr.invars[i]}, set(jaxpr.invars[n:]), size, uses)
        if uses and all(ok for ok, _ in uses):
            out[i] = (f"summed: W + s A B^T ({size} entries) is formed per direction and "
                      f"only added to activations at least that large "
                      f"({'; '.join(w for _, w in uses)})")
    return out


def plan(fun: Callable, leaves: Sequence, treedef, args: Sequence,
         matrices: dict[int, tuple[int, int]], rank: int | None, fused: bool | str, *,
         masked: bool, who: str = "", paths: Sequence[str] = (), hint: str = "",
         stacklevel: int = 2) -> Plan:
    """Which low-rank leaves an estimator's call hands to the loss as factors.

    ``fused=False``, a mask (a masked low-rank perturbation is summed and masked) or no
    low-rank leaf: every leaf is summed. Otherwise :func:`associations` decides
    (``fused=True`` asks for ``"factored"``, ``"auto"`` lets each layer pick); a
    low-rank leaf no layer consumes is summed; when :func:`summed_cheaply` finds it
    costs no more than the activations it is added to it is listed in ``Plan.summed``
    (with why), else it is materialized, listed in ``Plan.unfused`` and, with
    ``fused="auto"`` and a ``who``, named in a :class:`FallbackWarning` (``fused=True``
    makes it the caller's error instead).

    Args:
        fun: the loss, ``fun(params, *args) -> scalar``.
        leaves, treedef: params as leaves (arrays) and their tree structure.
        args: the loss's other arguments.
        matrices: index -> (in, out) matrix view of each low-rank leaf.
        rank: the factors' rank.
        fused: ``"auto"``, True or False.
        masked: whether a mask restricts the perturbation.
        who: the caller's name in the warning ("": no warning).
        paths: every leaf's path, for the warning.
        hint: appended to the warning.
        stacklevel: the warning's, counted from the caller of :func:`plan`.

    Returns:
        A :class:`Plan`.
    """
    fuse = fused is not False and not masked and bool(matrices)
    want = "factored" if fused is True else "auto"
    picked: dict[int, str | None] = dict.fromkeys(matrices, MATERIALIZED)
    if fuse:
        picked = associations(fun, leaves, treedef, args, list(matrices), matrices, rank,
                              want)
    runtime = tuple(None if picked.get(i, MATERIALIZED) is MATERIALIZED else want
                    for i in range(len(leaves)))
    summed = _summed(fun, leaves, treedef, args, sorted(
        i for i, a in picked.items() if a is MATERIALIZED)) if fuse else {}
    unfused = tuple(sorted(i for i, a in picked.items() if a is MATERIALIZED
                           and i not in summed)) if fuse else ()
    if unfused and who and fused is not True:
        warnings.warn(f"{who}: {len(unfused)} of {len(matrices)} low-rank leaves are "
                      f"materialized per direction (slower): "
                      f"{', '.join(paths[i] for i in unfused)}; no layer consumed their "
                      f"factors{hint}", FallbackWarning, stacklevel=stacklevel + 1)
    return Plan(picked, runtime, unfused, summed)
