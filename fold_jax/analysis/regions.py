"""Deep learning as folding space: linear regions of piecewise-linear nets.

A ReLU or abs MLP is affine on each *activation region* (a set of inputs sharing
the on/off, or sign, pattern of every hidden unit); each layer folds the space
again, so depth multiplies the regions.

- :func:`line_regions` counts them exactly along a segment ``x(t) = start + t (end
  - start)``, t in [0, 1], by tracking the net layer by layer as a piecewise-affine
  function of t. Between consecutive breakpoints found so far, every layer's
  pre-activation is affine in t (a composition of affine maps with a fixed pattern),
  so each unit's zero in that interval is one root ``-p / q`` or none: the
  breakpoints found are exactly the pattern changes (float64, roots closer than
  ``tol`` merged). It also counts the affine *pieces* of the output (adjacent
  regions where the net happens to have the same slope merged), <= regions.
- :func:`grid_regions` estimates them on a 2-D grid: distinct patterns, and
  8-connected components of equal pattern. Regions smaller than a cell are missed,
  so the pattern count is a lower bound that tightens with ``resolution``. Every
  activation region is convex (fixed pattern: the pre-activations are affine in x,
  the region an intersection of half-spaces), so each pattern is one region; more
  components than patterns means thin regions were cut by the sampling (aliasing).
- :func:`tent_net`: the constructive case, ``L`` tent maps ``x -> 1 - |2x - 1|``
  stacked; the net has exactly ``2**L`` affine pieces on [0, 1].
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree

from fold_jax.estimators import perturb
from fold_jax.learn import nets

__all__ = [
    "PIECEWISE_LINEAR",
    "GridRegions",
    "LineRegions",
    "activation_patterns",
    "box_plane",
    "grid_regions",
    "line_regions",
    "tent_net",
]

LEAKY_SLOPE = 0.01  # jax.nn.leaky_relu's default negative_slope
PIECEWISE_LINEAR = ("abs", "fold", "identity", "leaky_relu", "relu")


def _check_activation(activation: str) -> str:
    if activation not in PIECEWISE_LINEAR:
        raise ValueError(f"activation={activation!r} is not piecewise linear; allowed: "
                         f"{list(PIECEWISE_LINEAR)}")
    return "abs" if activation == "fold" else activation


def _dense(params: PyTree) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel (in, out), bias (out,)) of each dense layer, float64, in layer order."""
    out = []
    for _, layer in nets.dense_layers(params):
        kernel = np.asarray(perturb.materialize(layer["kernel"]), np.float64)
        bias = layer.get("bias")
        bias = np.zeros(kernel.shape[1]) if bias is None else np.asarray(bias, np.float64)
        out.append((kernel, bias))
    return out


def _on(z, activation: str):
    """The pattern bit of pre-activations z: relu/leaky z > 0; abs z >= 0 (the sign)."""
    return z >= 0 if activation == "abs" else z > 0


def _act(z, activation: str, xp=jnp):
    if activation == "relu":
        return xp.maximum(z, 0)
    if activation == "leaky_relu":
        return xp.where(z > 0, z, LEAKY_SLOPE * z)
    if activation == "abs":
        return xp.abs(z)
    return z


def activation_patterns(params: PyTree, x: ArrayLike, activation: str) -> Array:
    """Activation patterns (N, hidden units) bool of inputs x (N, in); layers concatenated.

    ``identity`` has no pattern: (N, 0).

    Args:
        params: the params of a ``fold_jax.learn.nets`` MLP.
        x: (N, in) inputs.
        activation: the piecewise-linear activation's name.

    Returns:
        The (N, hidden units) bool patterns.
    """
    activation = _check_activation(activation)
    layers = nets.dense_layers(params)
    h = jnp.asarray(x, jnp.float32)
    first = layers[0][1]["kernel"]
    n_in = jnp.shape(getattr(first, "base", first))[0]
    if h.ndim != 2 or h.shape[1] != n_in:
        raise ValueError(f"x has shape {h.shape}; it must be (N, in_features={n_in})")
    bits = []
    for _, layer in layers[:-1]:
        z = perturb.matmul(h, layer["kernel"]) + layer.get("bias", 0.0)
        if activation != "identity":
            bits.append(_on(z, activation))
        h = _act(z, activation)
    if not bits:
        return jnp.zeros((h.shape[0], 0), bool)
    return jnp.concatenate(bits, axis=-1)


class LineRegions(NamedTuple):
    """Regions met by a segment. breakpoints: (n_regions - 1,) sorted t in (0, 1) where
    the activation pattern changes; n_pieces: affine pieces of the output (<= regions);
    edges (n + 1,) / slopes (n, outputs): the output's derivative in t on each region."""

    breakpoints: np.ndarray
    n_regions: int
    n_pieces: int
    edges: np.ndarray
    slopes: np.ndarray


def line_regions(
    params: PyTree, start: ArrayLike, end: ArrayLike, *, activation: str, tol: float = 1e-9
) -> LineRegions:
    """Exact activation regions of a ReLU/abs MLP along the segment from start to end.

    start, end: (in_features,). Layer by layer, every interval carries the hidden
    state as ``p + t q``; roots of each unit's pre-activation split it, and the pattern
    on each new interval is read at its midpoint. Cost grows with the regions found.

    Args:
        params: the params of a ``fold_jax.learn.nets`` MLP.
        start: (in_features,) the segment's start (t = 0).
        end: (in_features,) its end (t = 1).
        activation: the piecewise-linear activation's name.
        tol: the smallest interval kept, in t.

    Returns:
        The :class:`LineRegions`.
    """
    activation = _check_activation(activation)
    layers = _dense(params)
    start = np.asarray(start, np.float64).ravel()
    end = np.asarray(end, np.float64).ravel()
    if start.shape != (layers[0][0].shape[0],) or end.shape != start.shape:
        raise ValueError(f"start {start.shape} and end {end.shape} must both be "
                         f"(in_features,) = ({layers[0][0].shape[0]},)")
    if not np.all(np.isfinite(start)) or not np.all(np.isfinite(end)):
        raise ValueError("start and end must be finite")
    if np.array_equal(start, end):
        raise ValueError("end equals start: the segment is empty; give two distinct points")
    edges = np.array([0.0, 1.0])
    p, q = start[None, :], (end - start)[None, :]  # hidden state p + t q per interval
    patterns = np.zeros((1, 0), bool)
    for kernel, bias in layers[:-1]:
        zp, zq = p @ kernel + bias, q @ kernel
        with np.errstate(divide="ignore", invalid="ignore"):
            roots = -zp / zq
        inside = (zq != 0) & (roots > edges[:-1, None] + tol) & (roots < edges[1:, None] - tol)
        old = edges
        edges = np.unique(np.concatenate([old, roots[inside]]))
        edges = edges[np.concatenate([[True], np.diff(edges) > tol])]
        edges[-1] = 1.0
        mid = 0.5 * (edges[:-1] + edges[1:])
        parent = np.clip(np.searchsorted(old, mid, side="right") - 1, 0, len(old) - 2)
        zp, zq = zp[parent], zq[parent]
        z = zp + mid[:, None] * zq
        on = _on(z, activation)
        if activation == "identity":
            p, q = zp, zq
        else:
            slope = {"relu": on * 1.0, "leaky_relu": np.where(on, 1.0, LEAKY_SLOPE),
                     "abs": np.where(on, 1.0, -1.0)}[activation]
            p, q = zp * slope, zq * slope
            patterns = np.concatenate([patterns[parent], on], axis=1)
    kernel, bias = layers[-1]
    slopes = q @ kernel
    changed = np.any(patterns[1:] != patterns[:-1], axis=1)
    scale = np.max(np.abs(slopes), initial=0.0)
    bent = np.any(np.abs(slopes[1:] - slopes[:-1]) > 1e-9 * max(scale, 1e-300), axis=1)
    return LineRegions(breakpoints=edges[1:-1][changed], n_regions=1 + int(changed.sum()),
                       n_pieces=1 + int(bent.sum()), edges=edges, slopes=slopes)


class GridRegions(NamedTuple):
    """Regions on a 2-D grid: pattern_ids (res, res) int, rows along v and columns
    along u; n_patterns distinct patterns; n_components 8-connected equal-pattern sets."""

    pattern_ids: np.ndarray
    n_patterns: int
    n_components: int


def box_plane(lo: ArrayLike, hi: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origin, u, v) spanning the 2-D box [lo0, hi0] x [lo1, hi1] for :func:`grid_regions`.

    Args:
        lo: (2,) lower corner.
        hi: (2,) upper corner (each coordinate above lo's).

    Returns:
        ``(origin, u, v)``, each (2,) float64.
    """
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if lo.shape != (2,) or hi.shape != (2,) or not np.all(hi > lo):
        raise ValueError(f"lo={lo} and hi={hi} must be 2-vectors with hi > lo")
    return lo, np.array([hi[0] - lo[0], 0.0]), np.array([0.0, hi[1] - lo[1]])


def grid_regions(
    params: PyTree,
    origin: ArrayLike,
    u: ArrayLike,
    v: ArrayLike,
    *,
    activation: str,
    resolution: int = 128,
) -> GridRegions:
    """Activation regions on the grid ``origin + s u + t v``, s, t in linspace(0, 1, res).

    origin, u, v: (in_features,) (for a 2-D input, :func:`box_plane`). A lower bound
    on the regions of that plane patch: regions thinner than a cell are missed.

    Args:
        params: the params of a ``fold_jax.learn.nets`` MLP.
        origin: (in_features,) the grid's corner.
        u: (in_features,) the first spanning vector.
        v: (in_features,) the second spanning vector.
        activation: the piecewise-linear activation's name.
        resolution: grid points per side (>= 2).

    Returns:
        The :class:`GridRegions`.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    activation = _check_activation(activation)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution={resolution!r} must be an int >= 2")
    origin, u, v = (np.asarray(a, np.float64).ravel() for a in (origin, u, v))
    n_in = _dense(params)[0][0].shape[0]
    if not origin.shape == u.shape == v.shape == (n_in,):
        raise ValueError(f"origin, u, v must be (in_features,) = ({n_in},)")
    s = np.linspace(0.0, 1.0, resolution)
    ss, tt = np.meshgrid(s, s)  # rows: t (along v), columns: s (along u)
    x = origin + ss.reshape(-1, 1) * u + tt.reshape(-1, 1) * v
    bits = np.asarray(activation_patterns(params, x.astype(np.float32), activation))
    packed = np.packbits(bits, axis=1) if bits.shape[1] else np.zeros((len(x), 1), np.uint8)
    _, ids = np.unique(packed, axis=0, return_inverse=True)
    ids = ids.reshape(resolution, resolution)
    index = np.arange(ids.size).reshape(ids.shape)
    pairs = [(index[:, :-1], index[:, 1:], ids[:, :-1] == ids[:, 1:]),
             (index[:-1, :], index[1:, :], ids[:-1, :] == ids[1:, :]),
             (index[:-1, :-1], index[1:, 1:], ids[:-1, :-1] == ids[1:, 1:]),
             (index[:-1, 1:], index[1:, :-1], ids[:-1, 1:] == ids[1:, :-1])]
    rows = np.concatenate([a[m] for a, _, m in pairs])
    cols = np.concatenate([b[m] for _, b, m in pairs])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(ids.size, ids.size))
    n_components, _ = connected_components(graph, directed=False)
    return GridRegions(ids, int(ids.max()) + 1, int(n_components))


def tent_net(depth: int, activation: str = "abs") -> tuple[nets.Net, PyTree]:
    """A ``fold_jax.learn.nets`` MLP computing the tent map ``x -> 1 - |2x - 1|`` ``depth`` times.

    abs: one unit per layer, ``|2x - 1|`` then ``1 - h`` folded into the next layer.
    relu: two units, ``tent(x) = relu(2x) - relu(4x - 2)`` on [0, 1]. On [0, 1] the
    net is a sawtooth with exactly ``2**depth`` affine pieces (slopes ``+-2**depth``).

    Args:
        depth: the number of tent maps composed (>= 1).
        activation: "abs" (or "fold") or "relu".

    Returns:
        ``(net, params)``: the :class:`fold_jax.learn.nets.Net` and its params.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth={depth!r} must be an int >= 1")
    if activation in ("abs", "fold"):
        first, hidden, out = ([[2.0]], [-1.0]), ([[-2.0]], [1.0]), ([[-1.0]], [1.0])
    elif activation == "relu":
        first, hidden, out = ([[2.0, 4.0]], [0.0, -2.0]), \
            ([[2.0, 4.0], [-2.0, -4.0]], [0.0, -2.0]), ([[1.0], [-1.0]], [0.0])
    else:
        raise ValueError(f"activation={activation!r}; allowed for tent_net: ['abs', 'fold', "
                         f"'relu']")
    width = len(first[1])
    net = nets.mlp((1, *(width,) * depth, 1), activation)
    weights = [first] + [hidden] * (depth - 1) + [out]
    params = {"params": {f"dense_{i}": {"kernel": jnp.asarray(k, jnp.float32),
                                        "bias": jnp.asarray(b, jnp.float32)}
                         for i, (k, b) in enumerate(weights)}}
    reference = net.init(jax.random.key(0))
    jax.tree.map(lambda a, b: a.shape == b.shape or _raise(a, b), params, reference)
    return net, params


def _raise(a, b):
    raise AssertionError(f"tent_net built a {a.shape} leaf where the net has {b.shape}")
