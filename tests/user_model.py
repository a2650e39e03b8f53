"""A user's flax linen model for the variant tests (prune -> BCSR, binarize -> packed):
Dense / LayerNorm nested in a submodule, so kernels sit at deep paths such as
("params", "Block_0", "Dense_1", "kernel"); biases and LayerNorm parameters are moved
off their init values (a missing bias or a pruned LayerNorm would show)."""

import flax.linen as nn
import jax
import numpy as np

EPS = float(np.finfo(np.float32).eps)  # 2^-23; one float32 rounding is <= EPS / 2 relative
BATCH, FEATURES, WIDTH, OUTPUTS = 256, 64, 64, 10


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.LayerNorm()(nn.Dense(WIDTH)(x)))
        return nn.relu(nn.Dense(WIDTH)(x))


class UserModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(OUTPUTS)(Block()(x))


def jitter_vectors(tree, seed):
    """1-D leaves (biases, LayerNorm scale/offset) moved off their init 0 / 1."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [
        p + 0.1 * jax.random.normal(k, p.shape) if p.ndim == 1 else p
        for p, k in zip(leaves, keys, strict=True)])


USER = UserModel()
X = jax.random.normal(jax.random.key(7), (BATCH, FEATURES))
USER_PARAMS = jitter_vectors(USER.init(jax.random.key(8), X[:1]), 9)
KERNELS = [("params", "Block_0", "Dense_0", "kernel"), ("params", "Block_0", "Dense_1", "kernel"),
           ("params", "Dense_0", "kernel")]
