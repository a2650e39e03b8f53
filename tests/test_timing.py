"""fold_jax.bench.timing: compile apart, sane medians, FLOPs and memory from the compiled object."""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.bench import timing

N = 64


def _sleepy(x, seconds):
    """Takes ``seconds`` on the host per call (a function of known duration)."""

    def host(v):
        time.sleep(seconds)
        return np.asarray(v)

    return jax.pure_callback(host, jax.ShapeDtypeStruct(x.shape, x.dtype), x)


def test_known_duration_is_measured():
    x = jnp.ones(3)
    t = timing.measure(functools.partial(_sleepy, seconds=2e-3), x, min_rounds=5,
                       max_rounds=5, max_time_s=0.05)
    assert t.rounds == 5
    assert 2e-3 <= t.median_s < 2e-2  # sleep is a lower bound; scheduling adds little
    assert 0 <= t.iqr_s < t.median_s
    assert t.compile_s > 0


def test_interleaved_times_each_call_apart_in_alternating_rounds():
    x = jnp.ones(3)
    calls = [(functools.partial(_sleepy, seconds=s), (x,)) for s in (2e-3, 6e-3)]
    short, long = timing.interleaved(calls, min_rounds=4, max_rounds=4, max_time_s=0.01)
    assert short.rounds == long.rounds == 4
    assert 2e-3 <= short.median_s < 6e-3 <= long.median_s  # each its own duration
    with pytest.raises(ValueError, match="calls"):
        timing.interleaved([])


def test_matmul_flops_and_memory_are_exact():
    a = jnp.ones((N, N), jnp.float32)
    b = jnp.ones((N, N), jnp.float32)
    t = timing.measure(jnp.matmul, a, b, max_time_s=0.05)
    assert t.flops == 2 * N**3  # cost_analysis counts a multiply-add as 2 FLOPs
    assert t.mem_bytes == 3 * N * N * 4  # two arguments + one output, no temp, no alias
    assert t.median_s > 0 and t.iqr_s >= 0 and 5 <= t.rounds <= 200


def test_rounds_last_at_least_min_round_s():
    compiled, _ = timing.aot(jnp.sin, jnp.ones(8))
    iterations, per_call = timing.calibrate(compiled, (jnp.ones(8),), min_round_s=1e-3)
    assert iterations * per_call >= 1e-3 * 0.999
    assert iterations > 1  # sin of 8 floats is far below a millisecond


def test_aot_keeps_static_arguments_and_compiled_input():
    f = jax.jit(lambda x, n: x * n, static_argnums=1)
    compiled, compile_s = timing.aot(f, jnp.ones(3), 4)
    assert compile_s > 0
    np.testing.assert_array_equal(compiled(jnp.ones(3)), 4 * np.ones(3))
    t = timing.measure(timing.aot(jnp.cos, jnp.ones(3))[0], jnp.ones(3), max_time_s=0.02)
    assert t.compile_s == 0.0 and t.median_s > 0


class _Fake:
    def __init__(self, cost=None, memory=None, raises=False):
        self._cost, self._memory, self._raises = cost, memory, raises

    def cost_analysis(self):
        if self._raises:
            raise NotImplementedError
        return self._cost

    def memory_analysis(self):
        if self._raises:
            raise NotImplementedError
        return self._memory


class _Memory:
    argument_size_in_bytes = 100
    output_size_in_bytes = 20
    temp_size_in_bytes = 7
    alias_size_in_bytes = 20


@pytest.mark.parametrize(
    ("fake", "expected_flops", "expected_mem"),
    [
        (_Fake({"flops": 12.0}, _Memory()), 12.0, 107.0),
        (_Fake([{"flops": 5.0}]), 5.0, math.nan),  # older jax: a list per program
        (_Fake([], None), math.nan, math.nan),
        (_Fake({"bytes accessed": 1.0}), math.nan, math.nan),
        (_Fake(raises=True), math.nan, math.nan),
    ],
)
def test_cost_and_memory_across_versions(fake, expected_flops, expected_mem):
    np.testing.assert_equal(timing.flops(fake), expected_flops)
    np.testing.assert_equal(timing.mem_bytes(fake), expected_mem)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"min_round_s": 0}, "min_round_s"), ({"max_time_s": -1}, "max_time_s"),
     ({"min_rounds": 0}, "min_rounds"), ({"min_rounds": 9, "max_rounds": 3}, "exceeds")],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timing.measure(jnp.sin, jnp.ones(2), **kwargs)


def test_not_callable_raises():
    with pytest.raises(TypeError, match="callable"):
        timing.aot(3, jnp.ones(2))
