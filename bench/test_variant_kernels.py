"""Micro-benchmarks of the binarized and pruned kernels (rows in kernels.csv).

Each row's ``inference`` is the f32 dense matmul of the same shape, timed in the same
test, so ``frac_of_inference`` = dense time / kernel time = the speedup over dense.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax import binary, prune

SHAPES = [(256, 1024, 1024), (256, 4096, 4096)]
SPARSITIES = [0.5, 0.9, 0.95, 0.99]


def _dense(m, k, n):
    kx, kw = jax.random.split(jax.random.key(0))
    return (jax.random.normal(kx, (m, k), jnp.float32),
            jax.random.normal(kw, (k, n), jnp.float32))


def _matmul(x, w):
    return x @ w


@pytest.mark.parametrize("word_bits", [32, 64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_xnor_packed_matmul(kernel_row, shape, word_bits):
    m, k, n = shape
    x, w = _dense(m, k, n)
    with jax.enable_x64(word_bits == 64):
        a = binary.pack(x, word_bits=word_bits)
        b = binary.pack(w, axis=0, word_bits=word_bits)
        row = kernel_row(bench="xnor_matmul", fn=lambda a, b: binary.xnor_matmul(a, b, k),
                         args=(a, b), method="xnor_packed", variant="binarized",
                         n_params=k * n, batch_size=m, dtype=f"uint{word_bits}",
                         inference=(_matmul, (x, w)), shape="x".join(map(str, shape)),
                         word_bits=word_bits, weight_bytes=int(b.nbytes))
    assert b.nbytes * 32 == w.nbytes or k % word_bits
    print(f"xnor {shape} u{word_bits}: {row['frac_of_inference']:.2f}x dense")


@pytest.mark.parametrize("layout", ["feature_major", "row_major"])
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_bcsr_matmul(kernel_row, sparsity, layout):
    """BCSR times dense x: feature-major (sparse_matmul_t, as sparse_apply runs) and
    row-major (sparse_matmul: two transposes more)."""
    m, k, n = SHAPES[0]
    x, w = _dense(m, k, n)
    w = prune.apply_mask({"w": w}, prune.random_mask(jax.random.key(1), {"w": w}, sparsity))["w"]
    wt = prune.to_bcsr(w)
    fn, args = ((prune.sparse_matmul_t, (wt, x.T)) if layout == "feature_major"
                else (prune.sparse_matmul, (x, wt)))
    row = kernel_row(bench="bcsr_matmul", fn=fn, args=args, method="bcsr",
                     variant="pruned", n_params=int(np.count_nonzero(np.asarray(w))),
                     batch_size=m, sparsity=sparsity, inference=(_matmul, (x, w)),
                     shape="x".join(map(str, SHAPES[0])), layout=layout)
    print(f"bcsr {layout} s={sparsity}: {row['frac_of_inference']:.2f}x dense")
