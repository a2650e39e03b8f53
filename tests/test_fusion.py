"""fusion: which leaves a loss takes as low-rank factors, leaf by leaf."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import pytest

from fold_jax.estimators import fusion, perturb

X = jnp.ones((8, 6))


def unused(p, x):
    """Layer a multiplies through perturb.matmul; leaf b is never read."""
    return jnp.sum(perturb.matmul(x, p["a"]))


def broken(p, x):
    """Layer b is multiplied with @, which a LowRank refuses (loudly)."""
    return jnp.sum(perturb.matmul(x, p["a"]) @ p["b"])


def _run(fun, association="auto"):
    params = {"a": jnp.ones((6, 5)), "b": jnp.ones((5, 4))}
    leaves, treedef = jax.tree.flatten(params)
    matrices = {0: (6, 5), 1: (5, 4)}
    return fusion.associations(fun, leaves, treedef, (X,), [0, 1], matrices, 2,
                               association), (leaves, treedef, matrices)


def test_only_consumed_leaves_are_fused():
    got, _ = _run(broken)  # together they fail; alone, a works and b does not
    assert got[1] is fusion.MATERIALIZED and got[0] in ("factored", "dense")


def test_forced_factored_association_is_recorded_and_failures_explained():
    got, (leaves, treedef, matrices) = _run(broken, "factored")
    assert got[0] == "factored"
    why = fusion.failing_leaves(broken, leaves, treedef, (X,), [1], matrices, 2)
    assert set(why) == {1} and "Error" in why[1]


def test_a_leaf_no_layer_reads_is_not_fused():
    got, _ = _run(unused)
    assert got[0] in ("factored", "dense") and got[1] is fusion.MATERIALIZED


def _plan(fun, fused, masked=False, who="caller"):
    params = {"a": jnp.ones((6, 5)), "b": jnp.ones((5, 4)), "c": jnp.ones((4,))}
    leaves, treedef = jax.tree.flatten(params)
    return fusion.plan(fun, leaves, treedef, (X,), {0: (6, 5), 1: (5, 4)}, 2, fused,
                       masked=masked, who=who, paths=["a", "b", "c"])


def test_plan_sums_everything_when_fusion_is_off_or_masked():
    for fused, masked in ((False, False), ("auto", True)):
        got = _plan(broken, fused, masked)
        assert got.runtime == (None, None, None) and got.unfused == ()
        assert got.picked == {0: fusion.MATERIALIZED, 1: fusion.MATERIALIZED}


def test_plan_names_the_unfused_leaf_in_a_warning_pointing_at_its_caller():
    with pytest.warns(fusion.FallbackWarning, match=r"caller: 1 of 2 .*: b;") as rec:
        got = _plan(broken, "auto")
    assert rec[0].filename == __file__  # stacklevel: the caller's line, not fusion's
    assert got.runtime == ("auto", None, None) and got.unfused == (1,)


def test_plan_leaves_fused_true_failures_to_the_caller_and_is_silent_without_who():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forced = _plan(broken, True)
        quiet = _plan(broken, "auto", who="")
    assert forced.runtime == ("factored", None, None) and forced.unfused == (1,)
    assert quiet.unfused == (1,)


def test_a_use_that_forms_the_kernel_without_a_pick_is_materialized():
    """A layer's fallback (materialize without a pick) is not a 'dense' association."""
    def fallback(p, x):
        return jnp.sum(x @ perturb.materialize(p["a"])) + jnp.sum(perturb.matmul(x, p["b"]))

    def dense_pick(p, x):
        return jnp.sum(perturb.matmul(x, p["a"])) + jnp.sum(perturb.matmul(x, p["b"]))

    params = {"a": jnp.ones((6, 5)), "b": jnp.ones((6, 4))}
    leaves, treedef = jax.tree.flatten(params)
    matrices = {0: (6, 5), 1: (6, 4)}
    got = fusion.associations(fallback, leaves, treedef, (X,), [0, 1], matrices, 2, "auto")
    assert got[0] is fusion.MATERIALIZED and got[1] is not fusion.MATERIALIZED
    forced = fusion.associations(dense_pick, leaves, treedef, (X,), [0, 1], matrices, 2,
                                 "dense")
    assert forced == {0: "dense", 1: "dense"}


def test_summed_cheaply_only_for_tables_added_to_activations_at_least_their_size():
    pos = jnp.ones((8, 6))
    h = jnp.ones((3, 8, 6))  # 144 entries >= 48

    cases = {
        "added": lambda p, h: jnp.sum(h + p["pos"][:8]),
        "squared": lambda p, h: jnp.sum(p["pos"] ** 2),  # no activation: a weight decay
        "product": lambda p, h: jnp.sum(h @ p["pos"].T),  # a matmul: a real fallback
        "constant": lambda p, h: jnp.sum(p["pos"] + jnp.ones((8, 6))),  # no data operand
        "jitted": lambda p, h: jnp.sum(jax.jit(lambda a, b: a * b)(h, p["pos"])),
    }
    leaves, treedef = jax.tree.flatten({"pos": pos})
    why = {name: fusion.summed_cheaply(f, leaves, treedef, (h,), 0)
           for name, f in cases.items()}
    assert why["added"] and "add -> 144 entries" in why["added"], why
    assert why["jitted"] and "mul" in why["jitted"], why
    assert why["squared"] is why["product"] is why["constant"] is None, why
    small = jnp.ones((2, 6))  # the table (48 entries) is larger than this activation (12)
    assert fusion.summed_cheaply(lambda p, h: jnp.sum(h + p["pos"][:2]), leaves, treedef,
                                 (small,), 0) is None
