"""Compiled programs shared across fits: the same setting lowers once, a different
setting lowers again, and a reused program gives bit-identical results."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.estimators import methods
from fold_jax.learn import nets, programs, tasks, train

LOWERING = "/jax/core/compile/jaxpr_to_mlir_module_duration"  # one event per lowering


@contextlib.contextmanager
def count_lowerings():
    """Counts JAX's own lowering events (jaxpr -> MLIR module) inside the block."""
    seen = []

    def listener(event, duration_secs, **kwargs):
        if event == LOWERING:
            seen.append(duration_secs)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(scope="module")
def small():
    return tasks.get("digits"), nets.mlp((64, 16, 10), "relu")


def run(small, seed, *, lr=1e-2, batch_size=32, reuse=True, method="zo"):
    """One fit with everything rebuilt from scratch, as a benchmark job does."""
    task, net = small
    loss = task.loss_fn(net.apply)
    m = (methods.zeroth_order(loss, "adam", lr, num_directions=4) if method == "zo"
         else methods.gradient(loss, "sgd", lr))
    return train.fit(m, net.init(jax.random.key(seed)), task, apply=net.apply, steps=20,
                     eval_every=10, batch_size=batch_size, seed=seed, reuse_programs=reuse)


def assert_same_run(a, b):
    for u, v in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True):
        np.testing.assert_array_equal(u, v)
    cols = [c for c in a.history.columns if c != "elapsed_s"]
    assert a.history[cols].equals(b.history[cols])


def test_fits_of_one_setting_on_other_seeds_lower_once(small):
    programs.clear()
    with count_lowerings() as lowered:
        first = run(small, 0)
        n_first = len(lowered)
        later = [run(small, seed) for seed in (1, 2, 3)]
    # the chunk of 10 steps (run twice) and the evaluation
    assert (first.lowered, first.reused) == (2, 0) and n_first >= 2
    assert all((r.lowered, r.reused) == (0, 2) for r in later)
    assert len(lowered) == n_first  # nothing at all was lowered again
    info = programs.cache_info()
    assert (info.hits, info.misses) == (6, 2)
    assert not np.array_equal(later[0].history["test_loss"], later[1].history["test_loss"])


@pytest.mark.parametrize("change", [{"lr": 2e-2}, {"batch_size": 16}, {"method": "backprop"}])
def test_a_changed_setting_lowers_its_training_programs_again(small, change):
    run(small, 0)
    again = run(small, 1, **change)
    # the evaluation program depends only on the net and the task: reused
    assert (again.lowered, again.reused) == (1, 1)


def test_reused_programs_are_bit_identical_to_the_uncached_path(small):
    fresh = run(small, 5, lr=3e-2, reuse=False)  # jax.jit of fit's own closures
    assert (fresh.lowered, fresh.reused) == (2, 0)
    compiled_now = run(small, 5, lr=3e-2)  # a miss: compiled by programs.compile
    reused = run(small, 5, lr=3e-2)
    assert reused.lowered == 0
    assert_same_run(fresh, compiled_now)
    assert_same_run(fresh, reused)


def test_closed_over_arrays_are_arguments_not_part_of_the_key():
    programs.clear()
    x = jnp.arange(4.0)
    outs = []

    def scaled(c):
        return lambda v: v * c  # c is closed over: a constant of the traced program

    for scale in (np.float32([1, 2, 3, 4]), np.float32([-1, 0, 5, 7])):
        prog = programs.compile(scaled(jnp.asarray(scale)), x)
        outs.append((prog.hit, np.asarray(prog(x))))
    assert [hit for hit, _ in outs] == [False, True]
    np.testing.assert_array_equal(outs[1][1], np.arange(4.0) * [-1, 0, 5, 7])


def test_literals_are_keyed_by_exact_value():
    x = jnp.full(3, -1.0)
    plus = programs.compile(lambda v: v * 0.0, x)
    minus = programs.compile(lambda v: v * -0.0, x)  # 0.0 == -0.0 in Python, not here
    assert not minus.hit
    assert np.all(np.signbit(plus(x))) and not np.any(np.signbit(minus(x)))
    wide = programs.compile(lambda v: v * 1.0000001, x)
    assert not wide.hit and not np.array_equal(wide(x), programs.compile(lambda v: v * 1.0,
                                                                         x)(x))


def test_shapes_and_trees_are_part_of_the_key():
    programs.clear()
    programs.compile(jnp.sin, jnp.ones(3))
    assert not programs.compile(jnp.sin, jnp.ones(4)).hit
    assert not programs.compile(jnp.sin, jnp.ones(3, jnp.int32)).hit
    assert programs.compile(lambda v: jnp.sin(v), jnp.ones(3)).hit  # same program
    assert not programs.compile(lambda t: jnp.sin(t[0]), (jnp.ones(3),)).hit


def test_cache_is_bounded(monkeypatch):
    programs.clear()
    monkeypatch.setattr(programs, "MAX_PROGRAMS", 2)
    for n in (1, 2, 3):
        programs.compile(jnp.cos, jnp.ones(n))
    assert programs.cache_info().size == 2
    assert not programs.compile(jnp.cos, jnp.ones(1)).hit  # the oldest went first


def test_a_program_that_cannot_be_keyed_is_compiled_uncached_and_counted(monkeypatch):
    programs.clear()

    def unkeyable(jaxpr, memo):
        raise TypeError("unhashable parameter")

    monkeypatch.setattr(programs, "_jaxpr_key", unkeyable)
    x = jnp.arange(3.0)
    for _ in range(2):
        prog = programs.compile(jnp.tanh, x)
        assert not prog.hit
        np.testing.assert_array_equal(prog(x), jnp.tanh(x))
    assert programs.cache_info() == programs.CacheInfo(hits=0, misses=2, size=0, unkeyed=2)


def test_reuse_programs_is_checked(small):
    task, net = small
    m = methods.gradient(task.loss_fn(net.apply), "sgd", 0.1)
    with pytest.raises(TypeError, match="reuse_programs"):
        train.fit(m, net.init(jax.random.key(0)), task, apply=net.apply, steps=1,
                  reuse_programs="yes")
