"""perturb: LowRank kernels of any ndim through their matrix view, pick, matmul, conv.

Tolerances: float32 rounding, eps = 2^-23 ~ 1.2e-7. A product summing n terms, computed
two ways (factored vs materialized kernel), differs by at most about
eps * (n + r + 2) * M per entry (gamma_n for each side, plus the r low-rank terms and
the rounding of W + s a b^T), where M is the same product on absolute values,
|x| (x) (|base| + |s| |a| |b|^T). ``_bound`` computes exactly that.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fold_jax.estimators import perturb
from fold_jax.estimators.perturb import LowRank

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7


@pytest.fixture(autouse=True)
def _float32_products():
    """Full float32 dots and convs (TF32 on a GPU would need 1e-3 tolerances)."""
    with jax.default_matmul_precision("float32"):
        yield


def _factors(key, shape, rank, lead=()):
    """a (*lead, prod(shape[:-1]), r), b (*lead, shape[-1], r), standard normal."""
    ka, kb = jax.random.split(key)
    n_in, n_out = math.prod(shape[:-1]), shape[-1]
    return (jax.random.normal(ka, (*lead, n_in, rank)),
            jax.random.normal(kb, (*lead, n_out, rank)))


def _abs_kernel(w: LowRank) -> jax.Array:
    """|base| + |s| |a| |b|^T in base's shape: the magnitude every kernel entry sums."""
    low = jnp.abs(w.scale) * (jnp.abs(w.a) @ jnp.abs(w.b).T)
    return jnp.abs(w.base) + low.reshape(w.shape)


def _bound(product, x, w: LowRank, n_terms: int) -> np.ndarray:
    """eps * (n + r + 2) * product(|x|, |kernel terms|): the float32 bound of the header."""
    rank = w.a.shape[-1]
    return EPS32 * (n_terms + rank + 2) * np.asarray(product(jnp.abs(x), _abs_kernel(w)))


def _assert_within(got, want, bound):
    err = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    worst = err.argmax()
    assert np.all(err <= bound), f"max error {err.flat[worst]:.3g}, bound {bound.flat[worst]:.3g}"


def _eqns(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in its equations."""
    for eqn in jaxpr.eqns:
        yield eqn
        for v in eqn.params.values():
            for sub in v if isinstance(v, tuple | list) else (v,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _eqns(inner)


def _operand_shapes(fun, *args, primitive):
    """(lhs shape, rhs shape) of every ``primitive`` equation in fun's jaxpr."""
    jaxpr = jax.make_jaxpr(fun)(*args).jaxpr
    return [tuple(tuple(v.aval.shape) for v in e.invars[:2]) for e in _eqns(jaxpr)
            if e.primitive.name == primitive]


# ---------------------------------------------------------------------- matrix view


def test_materialize_reshapes_the_matrix_view_product_to_the_kernel_shape():
    k = jax.random.split(jax.random.key(0), 2)
    base = jax.random.normal(k[0], (3, 3, 8, 16))
    a, b = _factors(k[1], base.shape, 4)
    w = LowRank(base, a, b, 0.3)
    assert w.shape == (3, 3, 8, 16) and w.matrix_shape == (72, 16)
    want = np.asarray(base, np.float64) + 0.3 * (
        np.asarray(a, np.float64) @ np.asarray(b, np.float64).T).reshape(3, 3, 8, 16)
    got = perturb.materialize(w)
    assert got.shape == base.shape
    # each entry: base + s sum_k a b over r = 4 terms; float32 eps * (r + 2) * |terms|
    _assert_within(got, want, EPS32 * 6 * np.asarray(_abs_kernel(w)))
    # entry (i, j, c, o) is a[(i*3 + j)*8 + c] . b[o]: row-major flattening of (kh, kw, cin)
    np.testing.assert_allclose(got[1, 2, 5, 7], base[1, 2, 5, 7] + 0.3 * a[(1 * 3 + 2) * 8 + 5]
                               @ b[7], rtol=EPS32 * 8)


def test_matmul_takes_nd_kernels_through_their_matrix_view():
    k = jax.random.split(jax.random.key(1), 3)
    base = jax.random.normal(k[0], (4, 6, 32))  # matrix view (24, 32)
    a, b = _factors(k[1], base.shape, 2)
    x = jax.random.normal(k[2], (5, 24))
    for how in ("factored", "dense"):
        w = LowRank(base, a, b, 0.5, how)
        got = perturb.matmul(x, w)
        want = x @ perturb.materialize(w).reshape(24, 32)
        _assert_within(got, want, _bound(lambda x, k: x @ k.reshape(24, 32), x, w, 24))


def test_bad_factor_shapes_and_pick_answers_raise():
    base = jnp.zeros((3, 3, 8, 16))
    x = jnp.ones((2, 72))
    with pytest.raises(ValueError, match=r"needs a \(72, r\) and b \(16, r\)"):
        perturb.matmul(x, LowRank(base, jnp.zeros((8, 2)), jnp.zeros((16, 2)), 1.0))
    with pytest.raises(ValueError, match="ndim >= 2"):
        LowRank(jnp.zeros(5), jnp.zeros((5, 1)), jnp.zeros((5, 1)), 1.0).matrix_shape  # noqa: B018

    class Bad(LowRank):
        __slots__ = ()

        def pick(self, x_shape):
            return "auto"

    w = Bad(base, jnp.zeros((72, 2)), jnp.zeros((16, 2)), 1.0)
    with pytest.raises(ValueError, match=r"Bad\.pick returned 'auto'"):
        perturb.matmul(x, w)


# ----------------------------------------------------------------------------- pick


def test_pick_respects_the_association_and_applies_the_rule_to_the_matrix_view():
    base = jnp.zeros((3, 3, 8, 16))  # in = 72, out = 16, in * out = 1152
    for how in ("factored", "dense"):
        a, b = _factors(jax.random.key(2), base.shape, 4)
        assert LowRank(base, a, b, 1.0, how).pick((1, 2, 7, 8)) == how
    # rank 2: 4 r (in + out) = 704 <= 1152, so factored at any rows
    a, b = _factors(jax.random.key(2), base.shape, 2)
    assert LowRank(base, a, b, 1.0).pick((4096, 8, 8, 8)) == "factored"
    # rank 4: 1408 > 1152; then factored iff rows * (in + out) = rows * 88 <= 1152, rows <= 13
    a, b = _factors(jax.random.key(2), base.shape, 4)
    w = LowRank(base, a, b, 1.0)
    assert w.pick((1, 3, 4, 8)) == "factored"  # rows = 12
    assert w.pick((1, 2, 7, 8)) == "dense"  # rows = 14
    assert w.pick((13, 72)) == "factored" and w.pick((14, 72)) == "dense"


def test_pick_keeps_a_layer_exactly_at_a_quarter_dense():
    # rank 4, 32 x 32: 4 r (in + out) = 1024 = in out, not less: dense for rows * 64 >
    # 1024 (rows > 16); one more unit a side, 33 x 33: 1056 < 1089, factored at any rows
    for n, rows, want in ((32, 16, "factored"), (32, 17, "dense"), (32, 128, "dense"),
                          (33, 4096, "factored")):
        a, b = _factors(jax.random.key(2), (n, n), 4)
        assert LowRank(jnp.zeros((n, n)), a, b, 1.0).pick((rows, n)) == want, (n, rows)


def test_matmul_calls_pick_once_and_obeys_it(recorder):
    k = jax.random.split(jax.random.key(3), 3)
    base = jax.random.normal(k[0], (64, 128))
    a, b = _factors(k[1], base.shape, 8)  # rank 8 > UNROLL_MAX_RANK: (x @ a) @ b.T is a dot
    x = jax.random.normal(k[2], (16, 64))
    for how in ("factored", "dense"):
        w = recorder(base, a, b, 0.2, how)
        recorder.picks.clear()
        dots = _operand_shapes(lambda x, w: perturb.matmul(x, w), x, w, primitive="dot_general")
        assert recorder.picks == [how] and recorder.a_reads
        if how == "factored":  # x @ base, x @ a, (x a) @ b^T; no (in, r) x (out, r) product
            assert sorted(dots) == sorted([((16, 64), (64, 128)), ((16, 64), (64, 8)),
                                           ((16, 8), (8, 128))])
        else:  # a @ b^T, then x @ W
            assert sorted(dots) == sorted([((64, 8), (8, 128)), ((16, 64), (64, 128))])


def test_matmul_casts_the_factors_to_dtype_and_passes_precision():
    k = jax.random.split(jax.random.key(4), 3)
    base = jax.random.normal(k[0], (32, 48))
    a, b = _factors(k[1], base.shape, 2)
    x = jax.random.normal(k[2], (4, 32)).astype(jnp.bfloat16)
    w = LowRank(base, a, b, 0.1, "factored")
    assert perturb.matmul(x, w, dtype=jnp.bfloat16).dtype == jnp.bfloat16
    jaxpr = jax.make_jaxpr(lambda x: perturb.matmul(x, w, precision=lax.Precision.HIGHEST))(
        x.astype(jnp.float32)).jaxpr
    precisions = [e.params["precision"] for e in _eqns(jaxpr) if e.primitive.name == "dot_general"]
    assert len(precisions) == 2  # x @ base and x @ a (rank 2 expands b^T elementwise)
    assert all(p == (lax.Precision.HIGHEST, lax.Precision.HIGHEST) for p in precisions)


# ----------------------------------------------------------------------------- conv


def _lax_conv(groups=1):
    """A conv_fn with stride 2, asymmetric padding and dilation, NHWC / HWIO."""
    def conv_fn(x, kernel):
        return lax.conv_general_dilated(
            x, kernel, window_strides=(2, 1), padding=((1, 0), (2, 1)), rhs_dilation=(1, 2),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    return conv_fn


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("how", ["factored", "dense"])
def test_conv_matches_the_materialized_kernel_under_vmap(how, groups, recorder):
    """Conv 3x3x8 -> 16 on 8x8 images, 5 directions vmapped over stacked a, b, scale."""
    k = jax.random.split(jax.random.key(5), 4)
    base = jax.random.normal(k[0], (3, 3, 8 // groups, 16)) / 6.0
    a, b = _factors(k[1], base.shape, 3, lead=(5,))
    scale = jax.random.uniform(k[2], (5,), minval=0.05, maxval=0.2)
    x = jax.random.normal(k[3], (4, 8, 8, 8))
    conv_fn = _lax_conv(groups)

    def one(a, b, s):
        w = recorder(base, a, b, s, how)
        return perturb.conv(x, w, conv_fn, feature_group_count=groups), conv_fn(
            x, perturb.materialize(w))

    got, want = jax.jit(jax.vmap(one))(a, b, scale)
    assert got.shape == want.shape == (5, 4, 4, 7, 16)  # H (8 + 1 - 3) / 2 + 1, W 8 + 3 - 5 + 1
    assert recorder.picks == [how]  # traced once under vmap: one pick per use
    # each output sums kh kw cin / groups = 72 / groups products
    bounds = np.stack([_bound(conv_fn, x, LowRank(base, a[i], b[i], scale[i]), 72 // groups)
                       for i in range(5)])
    _assert_within(got, want, bounds)


def test_factored_conv_convolves_with_the_rank_r_factor(recorder):
    base = jnp.zeros((3, 3, 8, 16))
    a, b = _factors(jax.random.key(6), base.shape, 2)
    x = jnp.ones((1, 8, 8, 8))
    for how, rhs in (("factored", {(3, 3, 8, 16), (3, 3, 8, 2)}), ("dense", {(3, 3, 8, 16)})):
        w = recorder(base, a, b, 1.0, how)
        shapes = _operand_shapes(lambda x, w: perturb.conv(x, w, _lax_conv()), x, w,
                                 primitive="conv_general_dilated")
        assert {r for _, r in shapes} == rhs


def test_grouped_factor_is_tiled_per_group():
    """groups 4: output channel j of group g = j // 4 reads only group g's inputs."""
    k = jax.random.split(jax.random.key(7), 3)
    base = jax.random.normal(k[0], (1, 1, 2, 16))
    a, b = _factors(k[1], base.shape, 3)
    x = jax.random.normal(k[2], (1, 3, 3, 8))
    conv_fn = _lax_conv(4)
    w = LowRank(base, a, b, 0.7, "factored")
    got = perturb.conv(x, w, conv_fn, feature_group_count=4)
    want = conv_fn(x, perturb.materialize(w))
    _assert_within(got, want, _bound(conv_fn, x, w, 2))


def test_arrays_pass_straight_through():
    x, w = jnp.ones((2, 3)), jnp.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(perturb.matmul(x, w), x @ w)
    kernel = jnp.ones((3, 3, 8, 16))
    xs = jnp.ones((1, 8, 8, 8))
    np.testing.assert_array_equal(perturb.conv(xs, kernel, _lax_conv()), _lax_conv()(xs, kernel))
    np.testing.assert_array_equal(perturb.materialize(w), w)


# ---------------------------------------- embeddings, additive tables, DenseGeneral


_REFERENCES = {  # name: (kernel shape, x maker, fused op, reference on a dense kernel, n)
    "take": ((50, 24), lambda k: jax.random.randint(k, (6, 7), 0, 50),
             lambda x, w: perturb.take(w, x), lambda x, k: jnp.take(k, x, axis=0), 0),
    "attend": ((50, 24), lambda k: jax.random.normal(k, (6, 24)),
               lambda x, w: perturb.matmul(x, w, transpose=True), lambda x, k: x @ k.T, 24),
    "add": ((16, 24), lambda k: jax.random.normal(k, (3, 16, 24)),
            lambda x, w: perturb.add(x, w), lambda x, k: x + k, 0),
    "qkv": ((24, 4, 8), lambda k: jax.random.normal(k, (5, 24)),  # (in, heads, head_dim)
            lambda x, w: perturb.dense_general(x, w, 1),
            lambda x, k: jnp.einsum("bi,ihd->bhd", x, k), 24),
    "out": ((4, 8, 24), lambda k: jax.random.normal(k, (5, 4, 8)),  # two contracted axes
            lambda x, w: perturb.dense_general(x, w, 2),
            lambda x, k: jnp.einsum("bhd,hdo->bo", x, k), 32),
}


@pytest.mark.parametrize("how", ["factored", "dense"])
@pytest.mark.parametrize("name", sorted(_REFERENCES))
def test_take_add_attend_dense_general_equal_the_materialized_kernel(name, how, recorder):
    """Each op against the same op on materialize(w): eps (n + r + 2) M (header), M the
    reference on |x| and the kernel magnitudes (for take / add the rows are read, not
    summed: n = 0)."""
    shape, make_x, op, ref, n = _REFERENCES[name]
    kx, kw, kf = jax.random.split(jax.random.key(11), 3)
    x = make_x(kx)
    a, b = _factors(kf, shape, 3)
    w = recorder(jax.random.normal(kw, shape), a, b, jnp.float32(0.3), how)
    got = jax.jit(op)(x, w)
    assert recorder.picks == [how]
    want = ref(x, perturb.materialize(w))
    magnitude = ref(x if x.dtype.kind == "i" else jnp.abs(x), _abs_kernel(w))
    _assert_within(got, want, EPS32 * (n + 3 + 2) * np.asarray(jnp.abs(magnitude)))
    jaxpr = jax.make_jaxpr(op)(x, w).jaxpr
    factored_rhs = {tuple(e.invars[1].aval.shape) for e in _eqns(jaxpr)
                    if e.primitive.name == "dot_general"}
    if name in ("qkv", "out"):  # factored contracts x with a reshaped, dense never does
        assert ((*shape[:-1], 3) in factored_rhs) == (how == "factored"), factored_rhs


def test_the_factored_embedding_never_forms_the_table():
    """take gathers rows of base and a: no (vocab, features) product in the jaxpr."""
    w = LowRank(jnp.ones((1000, 16)), jnp.ones((1000, 4)), jnp.ones((16, 4)), 0.1, "factored")
    jaxpr = jax.make_jaxpr(lambda w, i: perturb.take(w, i))(w, jnp.zeros((8,), jnp.int32))
    shapes = {tuple(v.aval.shape) for e in _eqns(jaxpr.jaxpr) for v in e.outvars}
    assert (1000, 16) not in shapes, shapes
    with pytest.raises(ValueError, match="2-D"):
        perturb.take(LowRank(jnp.ones((2, 3, 4)), jnp.ones((6, 2)), jnp.ones((4, 2)), 1.0),
                     jnp.zeros((2,), jnp.int32))
