"""A user's flax linen model for the variant tests (prune -> BCSR, binarize -> packed):
Dense / LayerNorm nested in a submodule, so kernels sit at deep paths such as
("params", "Block_0", "Dense_1", "kernel"); biases and LayerNorm parameters are moved
off their init values (a missing bias or a pruned LayerNorm would show); and the
float64 transcription and rounding bound both variant tests check their outputs against."""

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


@jax.jit
def _inputs_and_params():
    """X and USER_PARAMS as one program: built at import in every xdist worker, where
    eager init and jitter compiled ~40 small programs each."""
    x = jax.random.normal(jax.random.key(7), (BATCH, FEATURES))
    return x, jitter_vectors(USER.init(jax.random.key(8), x[:1]), 9)


X, USER_PARAMS = _inputs_and_params()
KERNELS = [("params", "Block_0", "Dense_0", "kernel"), ("params", "Block_0", "Dense_1", "kernel"),
           ("params", "Dense_0", "kernel")]


def at(tree, path):
    """``tree[path[0]][path[1]]...``."""
    for key in path:
        tree = tree[key]
    return tree


def user_steps(params, prefix=("params",), names=("Block_0", "Dense_0", "LayerNorm_0",
                                                    "Dense_1")):
    """UserModel as (kind, arrays) steps in float64, read from params by path."""
    block, first, norm, second = names
    p = lambda *path: np.asarray(at(params, (*prefix, *path)), np.float64)  # noqa: E731
    return [("dense", p(block, first, "kernel"), p(block, first, "bias")),
            ("ln", p(block, norm, "scale"), p(block, norm, "bias")), ("relu",),
            ("dense", p(block, second, "kernel"), p(block, second, "bias")), ("relu",),
            ("dense", p(first, "kernel"), p(first, "bias"))]


def dense_rounding(h, w, b):
    """One float32 run of h @ w + b, summed in any order (BCSR / packed vs dense): each
    entry is off by <= (k + 2) EPS (|h| @ |w| + |b|) (k products and k - 1 adds, the bias
    add, a scale multiply; each <= EPS / 2); returned as a per-sample l2 norm."""
    return (w.shape[0] + 2) * EPS * np.linalg.norm(np.abs(h) @ np.abs(w) + np.abs(b), axis=-1)


def chain_bound(x, steps, ln_eps=1e-6):
    """Float64 forward of ``steps`` and a per-sample l2 bound on the difference of two
    float32 runs of it that differ in how each Dense sum is ordered (first order).

    Dense: the input difference d grows by the spectral norm ||W||_2, plus both runs'
    rounding (2 x :func:`dense_rounding`). LayerNorm: its Jacobian has norm <= max|g|/s
    (s = sqrt(var + eps)), plus both runs' own rounding: mean and variance are sums of
    n terms ((n + 8) EPS relative, 8 for the elementwise ops). ReLU: 1-Lipschitz.
    """
    h = np.asarray(x, np.float64)
    d = np.zeros(len(h))
    for kind, *arrays in steps:
        if kind == "dense":
            w, b = arrays
            d = np.linalg.norm(w, 2) * d + 2 * dense_rounding(h, w, b)
            h = h @ w + b
        elif kind == "ln":
            g, beta = arrays
            n = h.shape[-1]
            s = np.sqrt(h.var(-1) + ln_eps)
            hat = (h - h.mean(-1, keepdims=True)) / s[:, None]
            own = (n + 8) * EPS * (np.abs(g).max() * (np.linalg.norm(hat, axis=-1)
                                                       + np.sqrt(n) * np.abs(h).mean(-1) / s)
                                   + np.linalg.norm(beta))
            d = np.abs(g).max() / s * d + 2 * own
            h = hat * g + beta
        else:
            h = np.maximum(h, 0.0)
    return h, d


def assert_within(got, ref, exact, bound):
    """Per sample: ||got - ref||_2 <= bound (two runs), and the float64 transcription of
    the model agrees with ref within one run's share (so the bound is about this model)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert np.all(np.linalg.norm(got - ref, axis=-1) <= bound)
    assert np.all(np.linalg.norm(ref - exact, axis=-1) <= bound / 2)
