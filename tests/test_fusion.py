"""fusion: which leaves a loss takes as low-rank factors, leaf by leaf."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fold_jax import fusion, perturb

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
