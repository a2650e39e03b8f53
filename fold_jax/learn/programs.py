"""Compiled programs shared across calls: trace a function, look its program up by
the jaxpr, and lower and compile only what was never compiled before.

``jax.jit`` caches a compiled program by the identity of the Python function. A
training loop that builds its step from fresh closures on every call (a new
method, loss and ``apply`` per seed, as the benchmark does) misses that cache and
traces, lowers and compiles the same program again, run after run.
:func:`compile` instead keys the program by what determines it: the traced jaxpr
(every equation's primitive, parameters, literal values, the types of every
variable), the input and output tree structures, and JAX's trace-time
configuration. The arrays a function closes over (data, masks, constants) are not
part of the key: they become arguments of the compiled program, so the same
program serves other values of them. Two functions that trace to different jaxprs
never share a program.

What is left per call is tracing (cheap next to lowering and compiling) and a walk
over the jaxpr. :func:`cache_info` counts hits and misses (each miss is one
lowering), so a caller can see what was reused; a program whose jaxpr holds a
parameter that cannot be keyed is compiled uncached and counted as ``unkeyed``.

Example::

    prog = programs.compile(lambda x: jnp.sin(x) * scale, x)   # traced, compiled
    again = programs.compile(lambda x: jnp.sin(x) * scale, x)  # traced, reused
    again.hit, again(x)
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.extend.core as jcore
import numpy as np
from jax._src import config as _jax_config  # trace_context: the flags jit keys on

__all__ = ["MAX_PROGRAMS", "CacheInfo", "Program", "cache_info", "clear", "compile",
           "program_key"]

MAX_PROGRAMS = 256  # compiled programs kept (least recently used dropped first)

# parameters the lowering never reads: the differentiation rules of custom_jvp /
# custom_vjp calls (a compiled program is only run, never differentiated; lowering
# inlines call_jaxpr). They are fresh objects on every trace, so keying on them
# would make every call a miss.
_UNUSED_PARAMS = {
    "custom_jvp_call": frozenset({"jvp_jaxpr_fun", "jvp_jaxpr_thunk"}),
    "custom_vjp_call": frozenset({"fwd_jaxpr_thunk", "bwd", "out_trees"}),
}


class CacheInfo(NamedTuple):
    """Counts since the last :func:`clear`: ``hits`` (programs reused), ``misses``
    (programs lowered and compiled, ``unkeyed`` included), ``size`` (programs held
    now), ``unkeyed`` (programs compiled uncached because a parameter of their jaxpr
    could not be keyed: neither hashable nor a known kind of value)."""

    hits: int
    misses: int
    size: int
    unkeyed: int = 0


class Program(NamedTuple):
    """A compiled program bound to one call's closed-over arrays.

    ``program(*args)`` runs it on arguments shaped like the ones it was traced with
    and returns the function's output pytree. ``hit`` says whether the executable
    was reused from the cache (False: it was lowered and compiled for this call).
    """

    executable: Any  # jax.stages.Compiled of run(consts, args)
    consts: tuple[Any, ...]
    hit: bool

    def __call__(self, *args):
        return self.executable(self.consts, args)


_lock = threading.Lock()
_cache: collections.OrderedDict[Any, Any] = collections.OrderedDict()
_counts = {"hits": 0, "misses": 0, "unkeyed": 0}


def cache_info() -> CacheInfo:
    """Hits, misses (lowerings) and the number of programs held.

    Returns:
        A :class:`CacheInfo`.
    """
    with _lock:
        return CacheInfo(_counts["hits"], _counts["misses"], len(_cache), _counts["unkeyed"])


def clear() -> None:
    """Drop every cached program and zero the counts."""
    with _lock:
        _cache.clear()
        _counts.update(hits=0, misses=0, unkeyed=0)


def _array_key(value: Any) -> tuple:
    """An exact key of an array's value: dtype, shape and a digest of its bytes
    (-0.0 and 0.0 differ, NaN equals itself)."""
    a = np.asarray(value)
    if a.dtype == object:
        raise TypeError(f"cannot key an object array of shape {a.shape}")
    digest = hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=32).digest()
    return ("array", str(a.dtype), a.shape, digest)


def _value_key(x: Any, memo: dict[int, Any]) -> Any:
    """An exact, hashable key of an equation parameter (recursing into jaxprs)."""
    if isinstance(x, jcore.ClosedJaxpr):
        return ("closed_jaxpr", _jaxpr_key(x.jaxpr, memo),
                tuple(_array_key(c) for c in x.consts))
    if isinstance(x, jcore.Jaxpr):
        return ("jaxpr", _jaxpr_key(x, memo))
    if isinstance(x, bool | int | str | bytes) or x is None:
        return (type(x).__name__, x)  # typed: True and 1 are different parameters
    if isinstance(x, float):
        return ("float", x.hex())
    if isinstance(x, complex):
        return ("complex", x.real.hex(), x.imag.hex())
    if isinstance(x, np.ndarray | np.generic | jax.Array):
        return _array_key(x)
    if isinstance(x, tuple | list):
        return (type(x), tuple(_value_key(v, memo) for v in x))
    if isinstance(x, dict):
        return ("dict", tuple(sorted((repr(k), _value_key(v, memo)) for k, v in x.items())))
    hash(x)  # TypeError: unhashable and unknown, the program cannot be keyed
    # value-equal objects (dtypes, enums, shardings, avals) compare by value; the rest
    # (callbacks, interned contexts) by identity, kept alive by the key that holds them
    return (type(x), x)


def _jaxpr_key(jaxpr: Any, memo: dict[int, Any]) -> tuple:
    """A key of a jaxpr's structure: variables numbered in order of definition, each
    with its type; literals by exact value; equations with their keyed parameters."""
    if id(jaxpr) in memo:
        return memo[id(jaxpr)][1]
    names: dict[Any, int] = {}

    def define(v) -> Any:
        if isinstance(v, jcore.DropVar):
            return ("drop", v.aval)
        names[v] = len(names)
        return (names[v], v.aval)

    def use(v) -> Any:
        if isinstance(v, jcore.Literal):
            return ("literal", v.aval, _array_key(v.val))
        return names[v]

    head = (tuple(define(v) for v in jaxpr.constvars), tuple(define(v) for v in jaxpr.invars))
    eqns = []
    for e in jaxpr.eqns:
        skip = _UNUSED_PARAMS.get(e.primitive.name, frozenset())
        params = tuple(sorted((k, _value_key(v, memo)) for k, v in e.params.items()
                              if k not in skip))
        eqns.append((e.primitive, params, tuple(use(v) for v in e.invars),
                     tuple(define(v) for v in e.outvars), e.ctx, frozenset(e.effects)))
    key = (head, tuple(eqns), tuple(use(v) for v in jaxpr.outvars), frozenset(jaxpr.effects))
    memo[id(jaxpr)] = (jaxpr, key)  # the jaxpr is kept so its id is not reused meanwhile
    return key


def program_key(closed: Any, in_tree: Any, out_tree: Any) -> tuple:
    """The cache key of a traced program.

    Args:
        closed: the ``ClosedJaxpr`` (its consts are arguments, not part of the key).
        in_tree: the PyTreeDef of the arguments.
        out_tree: the PyTreeDef of the output.

    Returns:
        A hashable key; equal keys lower to the same program.
    """
    return (_jaxpr_key(closed.jaxpr, {}), in_tree, out_tree, _jax_config.trace_context(),
            jax.default_backend())


def compile(fun: Callable[..., Any], *args: Any) -> Program:
    """Trace ``fun(*args)`` and return its compiled program, reused when a program with
    the same key (:func:`program_key`) was compiled before.

    Args:
        fun: a function of arrays (pytrees), traceable by ``jax.jit``.
        *args: example arguments (their shapes, dtypes and tree structure fix the
            program; their values are not part of it).

    Returns:
        A :class:`Program`: call it with arguments shaped like ``args``.
    """
    closed, shapes = jax.make_jaxpr(fun, return_shape=True)(*args)
    in_tree = jax.tree.structure(args)
    out_tree = jax.tree.structure(shapes)
    try:
        key = program_key(closed, in_tree, out_tree)
        hash(key)
    except TypeError:  # an unhashable parameter of an unknown kind: compiled, not cached
        key = None
    consts = tuple(closed.consts)
    with _lock:
        executable = None if key is None else _cache.get(key)
        if executable is not None:
            _cache.move_to_end(key)
            _counts["hits"] += 1
            return Program(executable, consts, True)
    jaxpr = closed.jaxpr

    def run(consts, args):
        out = jax.core.eval_jaxpr(jaxpr, list(consts), *jax.tree.leaves(args))
        return jax.tree.unflatten(out_tree, out)

    executable = jax.jit(run).lower(consts, args).compile()
    with _lock:
        _counts["misses"] += 1
        if key is None:
            _counts["unkeyed"] += 1
            return Program(executable, consts, False)
        _cache[key] = executable
        while len(_cache) > MAX_PROGRAMS:
            _cache.popitem(last=False)
    return Program(executable, consts, False)
