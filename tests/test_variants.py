"""fold_jax.variants: one interface for dense, binarized and pruned nets."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fold_jax import methods, prune, variants

WIDTHS = (12, 16, 3)


def _steps(v, tx, n=3):
    x = jax.random.normal(jax.random.key(1), (8, WIDTHS[0]))
    loss = lambda p: jnp.mean(v.net.apply(p, x) ** 2)  # noqa: E731
    m = methods.descent(lambda p, k: jax.value_and_grad(loss)(p), v.wrap_tx(tx),
                        evals_per_step=1)
    state = m.init(v.params)
    step = jax.jit(m.step)
    for i in range(n):
        state, _ = step(state, jax.random.key(i))
    return state.params


@pytest.mark.parametrize("name", variants.NAMES)
def test_every_variant_trains_through_the_same_method(name):
    v = variants.make(name, WIDTHS, key=jax.random.key(0), sparsity=0.5)
    assert isinstance(v, variants.Variant) and v.name == name
    params = _steps(v, optax.adam(0.5))  # a large step: constraints must still hold
    kernels = [p for p in jax.tree.leaves(params) if p.ndim == 2]
    if name == "binarized":
        assert all(float(jnp.max(jnp.abs(k))) <= 1.0 for k in kernels)
        assert v.zo_mask is None
    elif name == "pruned":
        assert prune.sparsity(params) == pytest.approx(0.5, abs=1e-6)
        for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(v.zo_mask), strict=True):
            assert np.all(np.asarray(p)[np.asarray(m) == 0] == 0)
    else:
        assert v.zo_mask is None


def test_gradual_pruned_variant_reaches_sparsity():
    v = variants.make("pruned", WIDTHS, key=jax.random.key(0), sparsity=0.6, gradual=4,
                      frequency=1)
    assert prune.sparsity(v.params) == 0.0
    assert prune.sparsity(_steps(v, optax.sgd(1e-2), n=5)) == pytest.approx(0.6, abs=0.02)


def test_variant_zo_mask_feeds_zeroth_order():
    zo = pytest.importorskip("fold_jax.zo")
    v = variants.make("pruned", WIDTHS, key=jax.random.key(0), sparsity=0.8)
    x = jax.random.normal(jax.random.key(1), (8, WIDTHS[0]))
    vg = zo.value_and_grad(lambda p: jnp.mean(v.net.apply(p, x) ** 2), num_directions=4,
                           mask=v.zo_mask)
    _, g = vg(v.params, jax.random.key(2))
    for gl, m in zip(jax.tree.leaves(g), jax.tree.leaves(v.zo_mask), strict=True):
        assert np.all(np.asarray(gl)[np.asarray(m) == 0] == 0)


def test_bad_input():
    with pytest.raises(ValueError, match="name="):
        variants.make("ternary", WIDTHS, key=jax.random.key(0))
    with pytest.raises(ValueError, match="sparsity"):
        variants.make("pruned", WIDTHS, key=jax.random.key(0), sparsity=1.0)
    with pytest.raises(ValueError, match="scope"):
        variants.make("pruned", WIDTHS, key=jax.random.key(0), scope="row")
    with pytest.raises(ValueError, match="mask="):
        variants.make("pruned", WIDTHS, key=jax.random.key(0), mask="hessian")
    with pytest.raises(ValueError, match="unknown options"):
        variants.make("binarized", WIDTHS, key=jax.random.key(0), bits=2)
    with pytest.raises(ValueError, match="activation"):
        variants.make("binarized", WIDTHS, key=jax.random.key(0), binarize_activations=True)
