"""fold_jax.compress.walker: paths and leaf rules on linen and nnx trees, and the routing of Dense
layers by kernel type for a format registered from outside (as bcsr and binary do)."""

from __future__ import annotations

import dataclasses
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fold_jax.compress import bcsr, prune, walker
from fold_jax.learn import nets

F32 = float(np.finfo(np.float32).eps)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Halved:
    """A test kernel format: stores 2 W; Dense layers must multiply by W."""

    doubled: jax.Array


walker.register_format(Halved, walker.Format(
    name="halved",
    in_features=lambda k: int(k.doubled.shape[0]),
    product=lambda x, k, layer: x @ (k.doubled / 2),
    dense=lambda k, layer: k.doubled / 2,
))


def _halve(params):
    """Every kernel as Halved(2 W), doubled in numpy (no program per kernel shape)."""
    paths = walker.kernel_paths(params)
    return walker.replace_leaves(params, paths, lambda path, w: Halved(2 * np.asarray(w)))


def test_paths_and_rules_on_a_linen_tree():
    model = nn.Sequential([nn.Dense(4), nn.LayerNorm(), nn.Dense(2)])
    # paths, shapes and dtypes only: the abstract params (nothing compiled)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 3)))
    flat, _ = walker.flat_paths(params)
    assert [p for p, _ in flat] == [
        ("params", "layers_0", "bias"), ("params", "layers_0", "kernel"),
        ("params", "layers_1", "bias"), ("params", "layers_1", "scale"),
        ("params", "layers_2", "bias"), ("params", "layers_2", "kernel")]
    assert walker.kernel_paths(params) == [("params", "layers_0", "kernel"),
                                           ("params", "layers_2", "kernel")]
    assert [p for p, w in flat if walker.is_prunable(p, w)] == walker.kernel_paths(params)
    assert walker.show_path(()) == "<root>"
    assert walker.show_path(flat[0][0]) == "params/layers_0/bias"
    with pytest.raises(ValueError, match="no Dense kernels"):
        walker.kernel_paths(params, lambda p, w: False)
    with pytest.raises(TypeError, match="select"):
        walker.kernel_paths(params, "kernel")


def test_an_nnx_state_has_the_same_paths_without_the_value_attribute():
    abstract = nnx.eval_shape(lambda: nnx.Linear(3, 4, rngs=nnx.Rngs(0)))  # no compile
    _, state = nnx.split(abstract)
    assert walker.kernel_paths(state) == [("kernel",)]


@pytest.mark.parametrize("layer", [nn.Dense, nets.Dense,
                                   lambda f: nn.DenseGeneral(f, axis=-1)])
def test_a_registered_format_routes_linen_dense_layers(layer):
    model = nn.Sequential([layer(5), nn.relu, layer(2)])
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    params = jax.jit(model.init)(jax.random.key(0), x)
    y = jax.jit(walker.with_kernel_layers(model.apply))(_halve(params), x)
    # the same products, W recovered exactly (2 W / 2 is exact in float32)
    np.testing.assert_allclose(y, jax.jit(model.apply)(params, x), rtol=0, atol=8 * F32)


def test_a_registered_format_routes_nnx_linear_and_the_patch_is_restored():
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    x = np.ones((2, 4), np.float32)
    original = nnx.Linear.__dict__["__call__"]

    def apply(s, x):
        return nnx.merge(graphdef, s)(x)

    y = jax.jit(walker.with_kernel_layers(apply))(_halve(state), x)  # patched while tracing
    np.testing.assert_allclose(y, jax.jit(apply)(state, x), rtol=0, atol=8 * F32)
    assert nnx.Linear.__dict__["__call__"] is original
    with pytest.raises(RuntimeError), walker.kernel_layers(), walker.kernel_layers():
        assert nnx.Linear.__dict__["__call__"] is not original
        raise RuntimeError
    assert nnx.Linear.__dict__["__call__"] is original  # restored after an exception


def test_another_layer_with_a_converted_kernel_falls_back_visibly():
    class Manual(nn.Module):  # a layer that is not in LINEN_DENSE
        @nn.compact
        def __call__(self, x):
            w = self.param("kernel", nn.initializers.ones, (x.shape[-1], 2))
            return x @ w

    model = Manual()
    x = np.ones((1, 3), np.float32)
    params = jax.jit(model.init)(jax.random.key(0), x)
    with pytest.warns(walker.KernelFallbackWarning, match="Manual"):
        y = walker.with_kernel_layers(model.apply)(_halve(params), x)
    np.testing.assert_array_equal(y, model.apply(params, x))


def test_prune_reexports_the_walker_and_bcsr_names():
    for name in ["Format", "KernelFallbackWarning", "kernel_paths", "key_path", "is_kernel",
                 "is_prunable", "replace_leaves", "resolve_select", "register_format",
                 "with_kernel_layers", "mlp_layers"]:
        assert getattr(prune, name) is getattr(walker, name)
    assert sys.modules[prune.to_bcsr.__module__] is bcsr  # defined in bcsr, not prune
