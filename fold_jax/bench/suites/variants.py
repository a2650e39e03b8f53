"""Dense vs binarized vs pruned: kernels and trained nets -> results/variants.csv.

Rows (``row_kind``):

- "kernel": one matmul (M x K) @ (K x N) per row; dense f32, masked-dense (the mask
  multiplied in every call: simulated sparsity), BCSR (real sparse kernel) at each
  sparsity; binarized as packed XNOR-popcount (real 1-bit kernel, uint32 words and
  uint64 under x64) and as an unpacked f32 {-1, +1} matmul (simulated). Each kernel is
  timed in alternating rounds with the dense matmul, and ``speedup_vs_dense`` divides
  that paired dense median by the kernel's: a same-run, same-time ratio.
- "train": MLPs trained on digits (dense Adam; STE-binarized Adam; zeroth-order on the
  latent weights; bit flips in sign space; gradual magnitude pruning to each sparsity),
  with test accuracy and the inference time of the trained net on the test set, by its
  real kernel (packed / BCSR) and by dense f32 (``speedup_vs_dense``).

Columns: row_kind, variant, kernel, method, real_kernel, sparsity, shape, word_bits,
time_median_s, time_iqr_s, compile_s, speedup_vs_dense, weight_bytes, bits_per_weight,
nonzeros, accuracy, steps, train_s; "zo_variance" rows add est_mse, est_mse_sem,
expected_mse, grad_sq_survivors, grad_sq_all (zeroth-order estimator error on a pruned
net with the mask vs without it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fold_jax import results
from fold_jax.bench import timing
from fold_jax.bench.common import Job, check_profile
from fold_jax.compress import binary, prune
from fold_jax.estimators import methods
from fold_jax.learn import nets, tasks, train

FILE = "variants"
KEY = ["row_kind", "variant", "kernel", "method", "sparsity", "shape", "word_bits",
       *results.MACHINE_KEY]

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
HIDDEN = (64, 256, 256, 10)  # dense and pruned nets
BIN_HIDDEN = (64, 64, 10)  # binarized nets (all three training methods, and a dense twin):
# zeroth-order descent needs many steps on 85k latent weights; 4.8k train in minutes
PROFILE = {
    # quick times the BCSR kernels at 1024 only: at 4096 they take 2 of the quick run's 20
    # minutes (the half-dense 4096 x 4096 BCSR product is slow); full times both
    "quick": dict(shapes=((256, 1024, 1024), (256, 4096, 4096)),
                  sparse_shapes=((256, 1024, 1024),), max_time_s=0.5,
                  steps=600, zo_steps=3000, flip_steps=20000, train_sparsities=(0.5, 0.9, 0.99)),
    "full": dict(shapes=((256, 1024, 1024), (256, 4096, 4096)),
                 sparse_shapes=((256, 1024, 1024), (256, 4096, 4096)), max_time_s=2.0,
                 steps=1500, zo_steps=6000, flip_steps=50000, train_sparsities=SPARSITIES),
}

# training steps per second of each binarized method on a 2-core CPU (progress-bar weights)
STEPS_PER_S = {"ste_adam": 150, "ste_adam_bnn": 150, "zo_gaussian": 250, "bit_flip": 2500}


def _row(**kw) -> dict:
    base = dict(row_kind="kernel", variant="dense", kernel="dense", method="none",
                real_kernel=False, sparsity=0.0, shape="", word_bits=0,
                time_median_s=math.nan, time_iqr_s=math.nan, compile_s=math.nan,
                speedup_vs_dense=math.nan, weight_bytes=math.nan, bits_per_weight=math.nan,
                nonzeros=math.nan, accuracy=math.nan, steps=0, train_s=math.nan)
    return {**base, **kw}


def _time(fn, *args, max_time_s: float) -> timing.Timing:
    return timing.measure(fn, *args, max_time_s=max_time_s, block_each=True)


def _timed(t: timing.Timing, dense_s: float) -> dict:
    return dict(time_median_s=t.median_s, time_iqr_s=t.iqr_s, compile_s=t.compile_s,
                speedup_vs_dense=dense_s / t.median_s)


def _operands(m, k, n):
    kx, kw = jax.random.split(jax.random.key(0))
    return (jax.random.normal(kx, (m, k), jnp.float32),
            jax.random.normal(kw, (k, n), jnp.float32))


def _paired(dense_call, calls: list, max_time_s: float) -> list[dict]:
    """Time dense and each ``calls`` entry in alternating rounds; ``_timed`` fields of
    each call, its speedup against the dense time of the same rounds."""
    t_dense, *ts = timing.interleaved([dense_call, *calls], block_each=True,
                                      min_rounds=10, max_time_s=max_time_s * (1 + len(calls)))
    return [_timed(t, t_dense.median_s) for t in ts]


def _matmul(x, w):
    return x @ w


def sparse_kernels(shape: tuple[int, int, int], max_time_s: float) -> list[dict]:
    """Dense, masked-dense and BCSR rows at every sparsity for one shape.

    BCSR appears twice: ``"bcsr"`` keeps activations feature-major (``sparse_matmul_t``,
    the layout :func:`fold_jax.compress.prune.sparse_apply` runs in) and ``"bcsr_row_major"``
    pays a transpose of x and of the result (``sparse_matmul``).
    """
    m, k, n = shape
    name = "x".join(map(str, shape))
    x, w = _operands(m, k, n)
    dense = _time(_matmul, x, w, max_time_s=max_time_s)
    rows = [_row(shape=name, weight_bytes=w.nbytes, bits_per_weight=32.0, nonzeros=w.size,
                 **_timed(dense, dense.median_s))]
    for s in SPARSITIES:
        mask = prune.random_mask(jax.random.key(1), {"w": w}, s)["w"]
        ws = w * mask
        nnz = int(np.count_nonzero(np.asarray(ws)))
        wt = prune.to_bcsr(ws)
        nbytes = wt.data.nbytes + wt.indices.nbytes + wt.indptr.nbytes
        masked, row_major, feature_major = _paired(
            (_matmul, (x, w)), [(lambda x, w, m: x @ (w * m), (x, w, mask)),
                                (prune.sparse_matmul, (x, wt)),
                                (prune.sparse_matmul_t, (wt, x.T))], max_time_s)
        common = dict(variant="pruned", sparsity=s, shape=name, nonzeros=nnz)
        rows.append(_row(kernel="masked", weight_bytes=w.nbytes, bits_per_weight=32.0,
                         **common, **masked))
        for kernel, t in (("bcsr_row_major", row_major), ("bcsr", feature_major)):
            rows.append(_row(kernel=kernel, real_kernel=True, weight_bytes=nbytes,
                             bits_per_weight=8 * nbytes / w.size, **common, **t))
    return rows


def binary_kernels(shape: tuple[int, int, int], max_time_s: float) -> list[dict]:
    """Dense f32, unpacked sign matmul and packed XNOR (uint32 and uint64) rows."""
    m, k, n = shape
    name = "x".join(map(str, shape))
    x, w = _operands(m, k, n)
    dense = _time(_matmul, x, w, max_time_s=max_time_s)
    sx, sw = binary.sign(x), binary.sign(w)
    (unpacked,) = _paired((_matmul, (x, w)), [(_matmul, (sx, sw))], max_time_s)
    rows = [_row(variant="binarized_dense_baseline", shape=name, weight_bytes=w.nbytes,
                 bits_per_weight=32.0, nonzeros=w.size, **_timed(dense, dense.median_s)),
            _row(variant="binarized", kernel="sign_unpacked", shape=name, weight_bytes=sw.nbytes,
                 bits_per_weight=32.0, nonzeros=w.size, **unpacked)]
    for word_bits in (32, 64):
        with jax.enable_x64(word_bits == 64):
            a = binary.pack(x, word_bits=word_bits)
            b = binary.pack(w, axis=0, word_bits=word_bits)
            # the second call packs the activation inside (weights packed once, offline)
            packed, incl_pack = _paired(
                (_matmul, (x, w)),
                [(lambda a, b: binary.xnor_matmul(a, b, k), (a, b)),
                 (lambda x, b, wb=word_bits: binary.xnor_matmul(binary.pack(x, word_bits=wb),
                                                                b, k), (x, b))], max_time_s)
        for kernel, t in (("xnor_packed", packed), ("xnor_packed_incl_act_pack", incl_pack)):
            rows.append(_row(variant="binarized", kernel=kernel, real_kernel=True, shape=name,
                             word_bits=word_bits, weight_bytes=int(b.nbytes),
                             bits_per_weight=8 * b.nbytes / w.size, nonzeros=w.size, **t))
    return rows


# ----------------------------------------------------------------------- training


def _fit(method, params, task, apply, steps, batch_size=128):
    r = train.fit(method, params, task, apply=apply, steps=steps, eval_every=steps,
                  batch_size=batch_size, seed=0)
    return r.state.params, float(r.history["test_accuracy"].iloc[-1]), \
        float(r.history["elapsed_s"].iloc[-1])


def _infer(apply, x, max_time_s):
    return _time(apply, x, max_time_s=max_time_s)


def train_dense(steps: int, max_time_s: float, widths=HIDDEN) -> list[dict]:
    task = tasks.get("digits")
    net = nets.mlp(widths, "relu")
    m = methods.gradient(task.loss_fn(net.apply), optax.adam(2e-3))
    params, acc, train_s = _fit(m, net.init(jax.random.key(0)), task, net.apply, steps)
    t = _infer(jax.jit(lambda x: net.apply(params, x)), task.x_test, max_time_s)
    n = sum(x.size for x in jax.tree.leaves(params) if x.ndim == 2)
    return [_row(row_kind="train", method="adam", shape="mlp" + "-".join(map(str, widths)),
                 accuracy=acc, steps=steps, train_s=train_s, weight_bytes=4 * n,
                 bits_per_weight=32.0, nonzeros=n, **_timed(t, t.median_s))]


def train_binarized(method: str, steps: int, max_time_s: float) -> list[dict]:
    """method: "ste_adam", "ste_adam_bnn" (binarized tanh activations: hidden layers run
    XNOR on packed activations at inference), "zo_gaussian" (latent weights) or
    "bit_flip" (sign space). The first layer sees real inputs: 1-bit weights, f32 math."""
    task = tasks.get("digits")
    bnn = method == "ste_adam_bnn"  # binarized activations too: hidden layers fully XNOR
    act = "tanh" if bnn else "relu"
    net = nets.mlp(BIN_HIDDEN, act, layer=binary.binary_layer(binarize_activations=bnn))
    loss = task.loss_fn(net.apply)
    tx = optax.chain(optax.adam(3e-3 if method.startswith("ste") else 1e-2),
                     binary.clip_latent())
    if method.startswith("ste_adam"):
        m = methods.gradient(loss, tx)
    elif method == "zo_gaussian":
        m = methods.zeroth_order(loss, tx, num_directions=64, sigma=0.05)
    elif method == "bit_flip":
        m = binary.flip_search(loss, flips=4)
    else:
        raise ValueError(f"method={method!r}; allowed: ste_adam, ste_adam_bnn, zo_gaussian, "
                         f"bit_flip")
    batch = 128 if method.startswith("ste") else 256  # forward-only: less batch noise pays
    params, acc, train_s = _fit(m, net.init(jax.random.key(0)), task, net.apply, steps, batch)
    packed = binary.pack_mlp(params, act, binarize_activations=bnn)
    (t_packed,) = _paired((jax.jit(lambda x: net.apply(params, x)), (task.x_test,)),
                          [(jax.jit(lambda x: binary.packed_apply(packed, x)), (task.x_test,))],
                          max_time_s)
    n = sum(x.size for x in jax.tree.leaves(params) if x.ndim == 2)
    return [_row(row_kind="train", variant="binarized", kernel="packed_1bit_weights",
                 method=method, real_kernel=True, shape="mlp" + "-".join(map(str, BIN_HIDDEN)),
                 accuracy=acc, steps=steps, train_s=train_s, weight_bytes=packed.weight_bytes,
                 bits_per_weight=8 * packed.weight_bytes / n, nonzeros=n, **t_packed)]


def train_pruned(sparsity: float, steps: int, max_time_s: float) -> list[dict]:
    """Gradual magnitude pruning (cubic, over the first 2/3 of the steps), then BCSR."""
    task = tasks.get("digits")
    net = nets.mlp(HIDDEN, "relu")
    tx = optax.chain(optax.adam(2e-3),
                     prune.gradual_prune(sparsity, (2 * steps) // 3, frequency=max(steps // 60, 1)))
    m = methods.gradient(task.loss_fn(net.apply), tx)
    params, acc, train_s = _fit(m, net.init(jax.random.key(0)), task, net.apply, steps)
    model = prune.sparse_mlp(params)
    dense_apply = jax.jit(lambda x: net.apply(params, x))
    t_dense = _infer(dense_apply, task.x_test, max_time_s)
    (t_sparse,) = _paired((dense_apply, (task.x_test,)),
                          [(jax.jit(lambda x: prune.sparse_apply(model, x)), (task.x_test,))],
                          max_time_s)
    n = sum(x.size for x in jax.tree.leaves(params) if x.ndim == 2)
    name = "mlp" + "-".join(map(str, HIDDEN))
    common = dict(row_kind="train", variant="pruned", method="gradual_adam", sparsity=sparsity,
                  shape=name, accuracy=acc, steps=steps, train_s=train_s,
                  nonzeros=model.nonzeros)
    return [_row(kernel="masked", weight_bytes=4 * n, bits_per_weight=32.0, **common,
                 **_timed(t_dense, t_dense.median_s)),
            _row(kernel="bcsr", real_kernel=True, weight_bytes=model.weight_bytes,
                 bits_per_weight=8 * model.weight_bytes / n, **common, **t_sparse)]


def zo_variance(sparsity: float, repeats: int = 64) -> list[dict]:
    """Error of one antithetic gaussian ZO pair on the surviving weights of a magnitude-
    pruned digits MLP, perturbing only survivors (mask) vs all weights (full).

    For coordinates S (survivors) and true gradient g: E|g_hat_S - g_S|^2 is
    (|S| + 1)|g_S|^2 with the mask and |S||g|^2 + |g_S|^2 without (``expected_mse``).
    """
    from fold_jax.estimators import zo

    task = tasks.get("digits")
    net = nets.mlp(HIDDEN, "relu")
    params = net.init(jax.random.key(0))
    mask = prune.magnitude_mask(params, sparsity)
    params = prune.apply_mask(params, mask)
    loss = task.loss_fn(net.apply)
    x, y = task.x_train[:256], task.y_train[:256]
    g = prune.apply_mask(jax.grad(loss)(params, x, y), mask)
    g_full = jax.grad(loss)(params, x, y)
    sq = lambda t: float(sum(jnp.sum(v ** 2) for v in jax.tree.leaves(t)))  # noqa: E731
    d_eff = int(sum(jnp.sum(m) for m in jax.tree.leaves(mask)))
    g_s2, g2 = sq(g), sq(g_full)
    keys = jax.random.split(jax.random.key(1), repeats)
    rows = []
    for kernel, m, expected in (("zo_masked", mask, (d_eff + 1) * g_s2),
                                ("zo_full", None, d_eff * g2 + g_s2)):
        vg = zo.value_and_grad(loss, num_directions=2, sigma=1e-3, mask=m)

        def err(key, vg=vg):
            est = prune.apply_mask(vg(params, key, x, y)[1], mask)
            return sum(jnp.sum((e - t) ** 2) for e, t in zip(jax.tree.leaves(est),
                                                             jax.tree.leaves(g), strict=True))

        errs = np.asarray(jax.jit(jax.vmap(err))(keys))
        rows.append(_row(row_kind="zo_variance", variant="pruned", kernel=kernel,
                         method="zo_gaussian", sparsity=sparsity, nonzeros=d_eff,
                         shape="mlp" + "-".join(map(str, HIDDEN)), est_mse=float(errs.mean()),
                         est_mse_sem=float(errs.std() / np.sqrt(repeats)),
                         expected_mse=expected, grad_sq_survivors=g_s2, grad_sq_all=g2))
    return rows


def _meta_key(**kw) -> dict:
    """The key of a job's last row (the runner adds results.MACHINE_KEY)."""
    base = dict(row_kind="kernel", variant="dense", kernel="dense", method="none",
                sparsity=0.0, shape="", word_bits=0)
    return {**base, **kw}


def jobs(profile: str = "quick") -> Iterator[Job]:
    p = PROFILE[check_profile(profile)]
    t = p["max_time_s"]
    for shape in p["shapes"]:
        name = "x".join(map(str, shape))
        if shape in p["sparse_shapes"]:
            yield Job(_meta_key(variant="pruned", kernel="bcsr", sparsity=SPARSITIES[-1],
                                shape=name),
                      lambda shape=shape: sparse_kernels(shape, t), f"sparse kernels {name}",
                      cost=(25.0 if shape[-1] <= 1024 else 120.0) * t / 0.5)
        yield Job(_meta_key(variant="binarized", kernel="xnor_packed_incl_act_pack",
                            shape=name, word_bits=64),
                  lambda shape=shape: binary_kernels(shape, t), f"binary kernels {name}",
                  cost=8.0 * t / 0.5)
    mlp = "mlp" + "-".join(map(str, HIDDEN))
    yield Job(_meta_key(row_kind="train", method="adam", shape=mlp),
              lambda: train_dense(p["steps"], t), "train dense", cost=p["steps"] / 120)
    bin_mlp = "mlp" + "-".join(map(str, BIN_HIDDEN))
    yield Job(_meta_key(row_kind="train", method="adam", shape=bin_mlp),
              lambda: train_dense(p["steps"], t, BIN_HIDDEN), "train dense small",
              cost=p["steps"] / 300)
    for method, steps in (("ste_adam", p["steps"]), ("ste_adam_bnn", p["steps"]),
                          ("zo_gaussian", p["zo_steps"]),
                          ("bit_flip", p["flip_steps"])):
        yield Job(_meta_key(row_kind="train", variant="binarized", kernel="packed_1bit_weights",
                            method=method, shape=bin_mlp),
                  lambda method=method, steps=steps: train_binarized(method, steps, t),
                  f"train binarized {method}", cost=steps / STEPS_PER_S[method])
    for s in SPARSITIES:
        yield Job(_meta_key(row_kind="zo_variance", variant="pruned", kernel="zo_full",
                            method="zo_gaussian", sparsity=s, shape=mlp),
                  lambda s=s: zo_variance(s), f"zo variance {s}", cost=3.0)
    for s in p["train_sparsities"]:
        yield Job(_meta_key(row_kind="train", variant="pruned", kernel="bcsr",
                            method="gradual_adam", sparsity=s, shape=mlp),
                  lambda s=s: train_pruned(s, p["steps"], t), f"train pruned {s}",
                  cost=p["steps"] / 65)
