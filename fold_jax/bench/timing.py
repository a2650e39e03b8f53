"""Honest wall-clock timing of JAX callables.

Compile is timed apart (``jax.jit(f).lower(*args).compile()``); the compiled
executable is warmed up, each round runs enough back-to-back calls to last at
least ``min_round_s`` and ends with ``jax.block_until_ready``; we report the median
and inter-quartile range of the per-call time over rounds. FLOPs come from the
compiled ``cost_analysis()`` and memory from ``memory_analysis()`` as
argument + output + temp - alias bytes (its peak field is wrong on CPU); both are
NaN where the backend gives none.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = ["Timing", "aot", "calibrate", "flops", "interleaved", "measure", "mem_bytes",
           "time_rounds"]


class Timing(NamedTuple):
    """Seconds per call (median, IQR over ``rounds``), compile seconds, FLOPs, bytes."""

    compile_s: float
    median_s: float
    iqr_s: float
    rounds: int
    flops: float
    mem_bytes: float


def aot(fn: Callable, *args, **kwargs) -> tuple[Any, float]:
    """Compile ``fn`` ahead of time for ``args``: ``(compiled, compile_s)``.

    ``fn`` may be a plain function (jitted here) or already ``jax.jit``-ed (its
    static arguments kept). Compile time includes tracing and lowering.

    Args:
        fn: the function, plain or jitted.
        *args: example arguments it is compiled for.
        **kwargs: example keyword arguments.

    Returns:
        ``(compiled, compile_s)``: the compiled executable and the seconds compiling took.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    t0 = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    return compiled, time.perf_counter() - t0


def flops(compiled) -> float:
    """FLOPs of one call from ``compiled.cost_analysis()`` (dict, list of dicts or None
    across jax versions); NaN when absent.

    Args:
        compiled: the compiled executable.

    Returns:
        The FLOPs of one call, or NaN.
    """
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends raise instead of returning None
        return math.nan
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return math.nan
    value = float(cost["flops"])
    return value if value >= 0 else math.nan


def mem_bytes(compiled) -> float:
    """argument + output + temp - alias bytes of ``compiled``; NaN when absent.

    Args:
        compiled: the compiled executable.

    Returns:
        The bytes, or NaN.
    """
    try:
        m = compiled.memory_analysis()
    except Exception:
        return math.nan
    if m is None:
        return math.nan
    try:
        total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                 - m.alias_size_in_bytes)
    except AttributeError:
        return math.nan
    return float(total)


def _call(compiled, args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - t0


def calibrate(compiled, args: tuple, *, min_round_s: float = 1e-3, warmup: int = 2
              ) -> tuple[int, float]:
    """Warm up, then ``(iterations, seconds_per_call)``: calls per round so that a
    round lasts at least ``min_round_s``.

    Args:
        compiled: the compiled executable.
        args: its arguments.
        min_round_s: the shortest round, in seconds.
        warmup: warm-up calls (at least 1).

    Returns:
        ``(iterations, seconds_per_call)``.
    """
    for _ in range(max(warmup, 1)):
        per_call = _call(compiled, args)
    # re-estimate on a batch of calls: single-call time overstates tiny kernels
    n = max(1, min(1000, int(min_round_s / max(per_call, 1e-9))))
    t0 = time.perf_counter()
    out = None
    for _ in range(n):
        out = compiled(*args)
    jax.block_until_ready(out)
    per_call = (time.perf_counter() - t0) / n
    iterations = max(1, math.ceil(min_round_s / max(per_call, 1e-9)))
    return iterations, per_call


def time_rounds(compiled, args: tuple, *, iterations: int, rounds: int,
                block_each: bool = False) -> np.ndarray:
    """Per-call seconds of each of ``rounds`` rounds of ``iterations`` calls (blocking
    at the end of a round, or after every call with ``block_each``).

    Args:
        compiled: the compiled executable.
        args: its arguments.
        iterations: calls per round.
        rounds: the number of rounds.
        block_each: block on every call's result.

    Returns:
        (rounds,) seconds per call of each round.
    """
    times = np.empty(rounds)
    for r in range(rounds):
        out = None
        t0 = time.perf_counter()
        for _ in range(iterations):
            out = compiled(*args)
            if block_each:
                jax.block_until_ready(out)
        jax.block_until_ready(out)
        times[r] = (time.perf_counter() - t0) / iterations
    return times


def measure(
    fn: Callable,
    *args,
    min_round_s: float = 1e-3,
    min_rounds: int = 5,
    max_rounds: int = 200,
    max_time_s: float = 1.0,
    warmup: int = 2,
    block_each: bool = False,
) -> Timing:
    """Time ``fn(*args)``: compile apart, warm up, rounds >= ``min_round_s``.

    Runs between ``min_rounds`` and ``max_rounds`` rounds, as many as fit in about
    ``max_time_s`` seconds. ``block_each`` waits for every call's result (the
    pytest-benchmark convention) rather than once per round. ``fn`` may also be an
    already compiled executable (``compile_s`` is then 0).

    Args:
        fn: the function, plain, jitted or compiled.
        *args: its arguments.
        min_round_s: the shortest round, in seconds.
        min_rounds: the fewest rounds.
        max_rounds: the most rounds.
        max_time_s: the time budget, in seconds.
        warmup: warm-up calls.
        block_each: block on every call's result, not once per round.

    Returns:
        The :class:`Timing`.
    """
    return interleaved([(fn, args)], min_round_s=min_round_s, min_rounds=min_rounds,
                       max_rounds=max_rounds, max_time_s=max_time_s, warmup=warmup,
                       block_each=block_each)[0]


def interleaved(
    calls: Sequence[tuple[Callable, tuple]],
    *,
    min_round_s: float = 1e-3,
    min_rounds: int = 5,
    max_rounds: int = 200,
    max_time_s: float = 1.0,
    warmup: int = 2,
    block_each: bool = False,
) -> list[Timing]:
    """:func:`measure` for several ``(fn, args)`` at once, in alternating rounds.

    Round r of every callable runs before round r + 1 of any, so slow drifts of a
    shared machine (frequency, neighbours) hit all of them alike and the ratio of
    their medians is a same-time comparison. ``max_time_s`` budgets all of them
    together. Returns one :class:`Timing` per call, in order.

    Args:
        calls: ``(fn, args)`` pairs; ``fn`` plain, jitted or compiled.
        min_round_s: the shortest round, in seconds.
        min_rounds: the fewest rounds.
        max_rounds: the most rounds.
        max_time_s: the time budget of all calls together, in seconds.
        warmup: warm-up calls per callable.
        block_each: block on every call's result, not once per round.

    Returns:
        One :class:`Timing` per call, in order.
    """
    for value, argument in ((min_round_s, "min_round_s"), (max_time_s, "max_time_s")):
        if not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{argument}={value!r} must be a positive number of seconds")
    for value, argument in ((min_rounds, "min_rounds"), (max_rounds, "max_rounds")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{argument}={value!r} must be a positive int")
    if min_rounds > max_rounds:
        raise ValueError(f"min_rounds={min_rounds} exceeds max_rounds={max_rounds}")
    if not calls:
        raise ValueError("calls must hold at least one (fn, args) pair")
    prepared = []
    for fn, args in calls:
        if isinstance(fn, jax.stages.Compiled):
            compiled, compile_s = fn, 0.0
        else:
            compiled, compile_s = aot(fn, *args)
        iterations, per_call = calibrate(compiled, args, min_round_s=min_round_s,
                                         warmup=warmup)
        prepared.append((compiled, tuple(args), compile_s, iterations, per_call * iterations))
    per_round = max(sum(p[4] for p in prepared), 1e-9)
    rounds = int(np.clip(max_time_s / per_round, min_rounds, max_rounds))
    times = np.empty((len(prepared), rounds))
    for r in range(rounds):
        for i, (compiled, args, _, iterations, _) in enumerate(prepared):
            times[i, r] = time_rounds(compiled, args, iterations=iterations, rounds=1,
                                      block_each=block_each)[0]
    out = []
    for (compiled, _, compile_s, _, _), t in zip(prepared, times, strict=True):
        q1, median, q3 = np.percentile(t, [25, 50, 75])
        out.append(Timing(compile_s, float(median), float(q3 - q1), rounds, flops(compiled),
                          mem_bytes(compiled)))
    return out
