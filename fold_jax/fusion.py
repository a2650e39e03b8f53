"""Which parameter leaves a loss can take as lazy low-rank factors (the fused path).

:func:`associations` evaluates the loss's shapes (``jax.eval_shape``: nothing runs)
with a recording :class:`fold_jax.perturb.LowRank` in place of each low-rank leaf. A
leaf is fused when a layer consumed its factors (fold_jax's layers and
``perturb.matmul``; standard flax layers through :mod:`fold_jax.flax_layers`, which
the estimators wrap every loss in); the association the layer picked
(``"factored"``: ``x@W + s (x@A) B^T``, ``"dense"``: ``x@(W + s A B^T)``) is recorded
per leaf. Leaves no layer consumed, or whose consumer failed, are materialized
(``W + s A B^T`` summed before the loss sees it): still correct, but a population
then costs one dense weight per direction.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fold_jax import perturb

__all__ = ["MATERIALIZED", "FallbackWarning", "Plan", "associations", "failing_leaves", "plan"]

MATERIALIZED = None  # association of a low-rank leaf the loss sees summed


class FallbackWarning(UserWarning):
    """A low-rank leaf is materialized per direction instead of fused (slower)."""


class Plan(NamedTuple):
    """How each leaf reaches the loss in one estimator call (from :func:`plan`)."""

    picked: dict[int, str | None]  # low-rank leaf -> its consumers' pick or MATERIALIZED
    runtime: tuple[str | None, ...]  # per leaf: what its factors ask for, None: summed
    unfused: tuple[int, ...]  # low-rank leaves materialized although fusion was asked

_RECORD = threading.local()


def _log() -> dict[int, set[str]]:
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
            _log().setdefault(object.__getattribute__(self, "uid"), set())
        return object.__getattribute__(self, name)

    def pick(self, x_shape):
        choice = super().pick(x_shape)
        _log().setdefault(self.uid, set()).add(choice)
        return choice

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
           ) -> dict[int, set[str]] | Exception:
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


def _resolve(seen: dict[int, set[str]], candidates) -> dict[int, str | None]:
    out: dict[int, str | None] = {}
    for i in candidates:
        picks = seen.get(i)
        if picks is None:
            out[i] = MATERIALIZED
        elif len(picks) == 1:
            out[i] = next(iter(picks))
        else:  # read without a pick: the consumer materialized it per direction
            out[i] = "dense" if not picks else "mixed"
    return out


def associations(fun: Callable, leaves: Sequence, treedef, args: Sequence,
                 candidates: Sequence[int], matrices: dict[int, tuple[int, int]], rank: int,
                 association: str = "auto") -> dict[int, str | None]:
    """Per candidate leaf: the association its consumers picked, or ``MATERIALIZED``.

    All candidates are tried together first; when the loss fails with factors in
    every place, each is tried alone and the ones that work are kept (then checked
    together once more).

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
    works = [i for i in candidates if not isinstance(
        _trace(fun, leaves, treedef, args, [i], matrices, rank, association), Exception)]
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


def plan(fun: Callable, leaves: Sequence, treedef, args: Sequence,
         matrices: dict[int, tuple[int, int]], rank: int | None, fused: bool | str, *,
         masked: bool, who: str = "", paths: Sequence[str] = (), hint: str = "",
         stacklevel: int = 2) -> Plan:
    """Which low-rank leaves an estimator's call hands to the loss as factors.

    ``fused=False``, a mask (a masked low-rank perturbation is summed and masked) or no
    low-rank leaf: every leaf is summed. Otherwise :func:`associations` decides
    (``fused=True`` asks for ``"factored"``, ``"auto"`` lets each layer pick); a
    low-rank leaf no layer consumes is materialized, listed in ``Plan.unfused`` and,
    with ``fused="auto"`` and a ``who``, named in a :class:`FallbackWarning`
    (``fused=True`` makes it the caller's error instead).

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
    unfused = tuple(sorted(i for i, a in picked.items() if a is MATERIALIZED)) if fuse else ()
    if unfused and who and fused is not True:
        warnings.warn(f"{who}: {len(unfused)} of {len(matrices)} low-rank leaves are "
                      f"materialized per direction (slower): "
                      f"{', '.join(paths[i] for i in unfused)}; no layer consumed their "
                      f"factors{hint}", FallbackWarning, stacklevel=stacklevel + 1)
    return Plan(picked, runtime, unfused)
