"""Vanishing-gradient probes and softmax-on-multilabel helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.analysis import probes
from fold_jax.learn import heads


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)  # numpy: nothing compiled to make the data
    return rng.normal(size=(32, 5)).astype(np.float32), rng.integers(0, 3, 32, dtype=np.int32)


def _loss(net):
    head = heads.Head("multiclass")
    return lambda p, x, y: head.loss(net.apply(p, x), y)


def test_layer_grad_norms_equal_jax_grad(batch):
    net = probes.deep_mlp(5, 3, depth=11, width=4, activation="sigmoid")
    params = jax.jit(net.init)(jax.random.key(1))  # one program, not one per layer's init
    loss = _loss(net)
    # the probe under jit (callers jit it; whatever runs traced runs eagerly too) beside
    # jax.grad, in one program
    norms, grads = jax.jit(lambda p, x, y: (probes.layer_grad_norms(loss, p, x, y),
                                            jax.grad(loss)(p, x, y)["params"]))(params, *batch)
    expected = [np.linalg.norm(np.asarray(grads[f"dense_{i}"]["kernel"])) for i in range(12)]
    assert norms.shape == (12,)  # dense_10, dense_11 come after dense_9: numeric order
    # a norm of at most 16 float32 squares, summed in XLA's order or numpy's: relative
    # error <= 16 eps32 = 1.9e-6 on top of the gradients' own rounding: 1e-5
    np.testing.assert_allclose(np.asarray(norms), expected, rtol=1e-5)
    assert probes.layer_names(params)[-3:] == ["dense_9", "dense_10", "dense_11"]
    n = np.asarray(norms)
    np.testing.assert_allclose(probes.first_last_ratio(norms), n[0] / n[-1], rtol=1e-6)


def test_deep_sigmoid_gradient_vanishes_relu_does_not(batch):
    ratios = {}
    for activation in ("sigmoid", "relu"):
        net = probes.deep_mlp(5, 3, depth=12, width=16, activation=activation)
        norms = jax.jit(probes.layer_grad_norms, static_argnums=0)(
            _loss(net), net.init(jax.random.key(0)), *batch)
        ratios[activation] = float(probes.first_last_ratio(norms))
    # sigmoid' <= 1/4 per layer: with LeCun init the product over 12 layers is tiny
    assert ratios["sigmoid"] < 1e-4 < 1e-1 < ratios["relu"]


def test_layer_cosines_properties():
    net = probes.deep_mlp(5, 3, depth=2, width=4)
    init = jax.jit(net.init)
    g, h = init(jax.random.key(0)), init(jax.random.key(1))

    @jax.jit  # every cosine in one program (eager, each op compiles on its own)
    def cosines(g, h):
        return (probes.layer_cosines(g, g),
                probes.layer_cosines(jax.tree.map(lambda x: -3.0 * x, g), g),
                probes.layer_cosines(h, g),
                probes.layer_cosines(jax.tree.map(jnp.zeros_like, g), g),
                probes.tree_cosine(g, g))

    same, opposite, c, zero, tree = (np.asarray(a) for a in cosines(g, h))
    np.testing.assert_allclose(same, 1.0, rtol=1e-6)
    np.testing.assert_allclose(opposite, -1.0, rtol=1e-6)
    assert c.shape == (3,) and np.all(np.abs(c) <= 1.0 + 1e-6)
    manual = [np.dot(np.ravel(h["params"][k]["kernel"]), np.ravel(g["params"][k]["kernel"]))
              / np.linalg.norm(h["params"][k]["kernel"]) / np.linalg.norm(g["params"][k]["kernel"])
              for k in ("dense_0", "dense_1", "dense_2")]
    np.testing.assert_allclose(c, manual, rtol=1e-5)
    assert np.all(np.isnan(zero))
    np.testing.assert_allclose(tree, 1.0, rtol=1e-6)


def test_softmax_label_predictions_and_metrics():
    logits = np.log(np.array([[0.6, 0.3, 0.1], [0.2, 0.45, 0.35], [0.34, 0.33, 0.33]],
                             np.float32))
    labels = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 0]], np.int32)
    rng = np.random.default_rng(0)  # sigmoid decisions on 50 x 4 random logits
    sig_logits = rng.normal(size=(50, 4)).astype(np.float32)
    y = (rng.random((50, 4)) < 0.4).astype(np.int32)
    multilabel = heads.Head("multilabel")

    @jax.jit  # every prediction and metric in one program (eager, each op compiles alone)
    def run(logits, labels, sig_logits, y):
        by_threshold = probes.softmax_label_predictions(logits, threshold=0.25)
        return (by_threshold, probes.softmax_label_predictions(logits, threshold=0.5),
                probes.softmax_label_predictions(logits, k=labels.sum(-1)),
                probes.label_metrics(by_threshold, labels),
                multilabel.metrics(sig_logits, y, 0.7),
                probes.label_metrics(multilabel.predict(sig_logits, 0.7), y))

    by_threshold, at_half, oracle, m, head, mine = jax.tree.map(
        np.asarray, run(logits, labels, sig_logits, y))
    np.testing.assert_array_equal(by_threshold, [[1, 1, 0], [0, 1, 1], [1, 1, 1]])
    # above 1/2 at most one label can be on: a two-label row is never matched exactly
    assert int(at_half.sum(-1).max()) <= 1
    np.testing.assert_array_equal(oracle, labels)
    np.testing.assert_allclose(m["exact_match"], 2 / 3)
    np.testing.assert_allclose(m["micro_f1"], 2 * 4 / (2 * 4 + 3 + 0))
    # the same numbers as Head.metrics for sigmoid decisions
    np.testing.assert_allclose(mine["exact_match"], head["accuracy"], rtol=1e-6)
    np.testing.assert_allclose(mine["micro_f1"], head["micro_f1"], rtol=1e-6)


def test_normalized_targets_and_loss():
    y = jnp.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    t = probes.normalized_targets(y)
    np.testing.assert_allclose(t, [[0.5, 0, 0.5, 0], [0.25] * 4, [0, 1, 0, 0]])
    net = probes.deep_mlp(3, 4, depth=1, width=4)
    params = net.init(jax.random.key(0))
    x = np.ones((3, 3), np.float32)
    # the loss and the log-probabilities it should use, in one program
    loss, logp = jax.jit(lambda p, x, y: (probes.softmax_multilabel_loss(net.apply)(p, x, y),
                                          jax.nn.log_softmax(net.apply(p, x))))(params, x, y)
    np.testing.assert_allclose(loss, -(np.asarray(t) * np.asarray(logp)).sum(-1).mean(),
                               rtol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="depth"):
        probes.deep_mlp(2, 1, depth=0)
    with pytest.raises(ValueError, match="width"):
        probes.deep_mlp(2, 1, depth=2, width=0)
    with pytest.raises(ValueError, match="activation"):
        probes.deep_mlp(2, 1, depth=2, activation="swish")
    with pytest.raises(ValueError, match="norms"):
        probes.first_last_ratio(jnp.ones(1))
    with pytest.raises(ValueError, match="threshold"):
        probes.softmax_label_predictions(jnp.zeros((2, 3)), threshold=1.5)
    with pytest.raises(ValueError, match="threshold"):
        probes.softmax_label_predictions(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="labels"):
        probes.normalized_targets(jnp.zeros(3))
    with pytest.raises(ValueError, match="params"):
        probes.layer_norms({"a": jnp.zeros(2)})


def test_report_section_states_ratios_and_draws_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from fold_jax.report import probes as report

    def row(probe, metric, value, **k):
        base = dict(probe=probe, task="digits", activation=None, depth=None, width=64,
                    stage=None, method=None, layer=None, threshold=None)
        return {**base, **k, "metric": metric, "value": value}

    rows = []
    for act, per_layer in (("sigmoid", 0.25), ("relu", 1.0)):
        for depth in (2, 4):
            norms = [per_layer ** (depth - i) for i in range(depth + 1)]
            for stage in ("init", "trained"):
                ids = dict(activation=act, depth=depth, stage=stage, method="adam")
                rows += [row("vanishing", "grad_norm", n, layer=i, **ids)
                         for i, n in enumerate(norms)]
                rows += [row("vanishing", "ratio_first_last", norms[0] / norms[-1], **ids),
                         row("vanishing", "test_accuracy", 0.5, **ids)]
    for method, em in (("sigmoid", 0.9), ("softmax", 0.3)):
        for t in (0.3, 0.5):
            ids = dict(task="digit_attributes", method=method, threshold=t)
            rows += [row("threshold", "exact_match", em, **ids),
                     row("threshold", "micro_f1", em, **ids),
                     row("threshold", "labels_on", 1.0, **ids)]
    rows.append(row("threshold", "labels_on", 1.8, task="digit_attributes", method="truth"))
    text = report.section({"probes": pd.DataFrame(rows)}, tmp_path)
    assert "first/last ratio at init depth 2: 0.0625, depth 4: 3.9e-03" in text
    assert "sigmoid head's exact match is 0.9-0.9" in text
    for name in ("probes_grad_ratio", "probes_layer_norms", "probes_thresholds"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
        assert f"figures/{name}.png" in text
    assert report.section({}, tmp_path) == ""
