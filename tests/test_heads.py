import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fold_jax.learn.heads import KINDS, METRICS, Head, higher_is_better

# Inputs are numpy and each check's head calls run as one jitted program: an eager head
# method compiles one program per jnp op and shape (the threshold is validated as a
# concrete number, so it is closed over, not traced).
LOGITS = np.array([[3.331, -1.20, -0.002, 2.91, 0.32]], np.float32)


def test_softmax_matches_the_essay_to_four_decimals():
    probs = np.asarray(jax.jit(Head("multiclass").probs)(LOGITS))[0]
    np.testing.assert_allclose(probs, [0.5707, 0.0061, 0.0204, 0.3746, 0.0281], atol=5e-5)
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-6)


def test_losses_equal_optax():
    logits = np.random.default_rng(1).normal(size=(7, 5)).astype(np.float32)
    labels = np.array([0, 4, 2, 1, 3, 3, 0], np.int32)
    bin_labels = labels % 2
    multi = (logits > 0).astype(np.float32)[:, ::-1].copy()

    @jax.jit
    def pairs(logits, labels, bin_labels, multi):  # (head loss, optax reference) per kind
        return [
            (Head("multiclass").loss(logits, labels),
             optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()),
            (Head("binary").loss(logits[:, :1], bin_labels),
             optax.sigmoid_binary_cross_entropy(logits[:, 0], bin_labels).mean()),
            (Head("multilabel").loss(logits, multi),
             optax.sigmoid_binary_cross_entropy(logits, multi).sum(-1).mean())]

    for got, expected in pairs(logits, labels, bin_labels, multi):
        assert float(got) == pytest.approx(float(expected))


def test_multilabel_threshold_changes_predictions_as_documented():
    # probabilities 0.6, 0.75, 0.85: each threshold switches off the labels below it
    p = np.array([[0.6, 0.75, 0.85]])
    logits = np.log(p / (1 - p)).astype(np.float32)
    head = Head("multilabel")
    labels = np.array([[0, 1, 1]], np.int32)

    @jax.jit
    def run(logits, labels):
        return ([head.predict(logits, t) for t in (0.5, 0.7, 0.8)],
                head.metrics(logits, labels, 0.7), head.metrics(logits, labels, 0.5))

    (p5, p7, p8), m7, m = run(logits, labels)
    assert np.asarray(p5).tolist() == [[1, 1, 1]]
    assert np.asarray(p7).tolist() == [[0, 1, 1]]
    assert np.asarray(p8).tolist() == [[0, 0, 1]]
    assert float(m7["accuracy"]) == 1.0
    assert float(m["accuracy"]) == 0.0
    assert float(m["micro_f1"]) == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))


def test_binary_and_multiclass_predictions():
    run = jax.jit(lambda b, m: (Head("binary").predict(b), Head("multiclass").predict(m)))
    binary, multi = run(np.array([[-1.0], [2.0]], np.float32), LOGITS)
    assert np.asarray(binary).tolist() == [0, 1]
    assert np.asarray(multi).tolist() == [0]


def test_numpy_and_jax_thresholds_act_as_python_floats():
    for t in (np.float32(0.7), np.float64(0.7), jnp.float32(0.7)):
        expected = Head("multilabel").predict(LOGITS, float(t))
        np.testing.assert_array_equal(Head("multilabel").predict(LOGITS, t), expected)


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 1.5, "0.5", True, np.nan])
def test_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold"):
        Head("multilabel").predict(LOGITS, threshold)


def test_unknown_kind_lists_kinds():
    with pytest.raises(ValueError, match="kind") as e:
        Head("ordinal")
    for k in KINDS:
        assert k in str(e.value)


@pytest.mark.parametrize(
    ("kind", "logits_shape", "labels_shape"),
    [("multiclass", (0, 5), (0,)), ("multiclass", (4, 5), (3,)), ("binary", (4, 2), (4,)),
     ("multilabel", (4, 3), (4,)), ("multiclass", (5,), (5,))],
)
def test_bad_shapes_name_the_argument(kind, logits_shape, labels_shape):
    with pytest.raises(ValueError, match=r"logits|labels"):
        Head(kind).loss(jnp.zeros(logits_shape), jnp.zeros(labels_shape, jnp.int32))


def test_non_finite_logits_give_non_finite_loss_not_an_exception():
    loss = jax.jit(Head("multiclass").loss)(np.array([[np.nan, 0.0]], np.float32),
                                            np.array([0], np.int32))
    assert not np.isfinite(np.asarray(loss))


# -------------------------------------------------------------------------- regression

N_REG = 1000
# float32 sums of N_REG positive terms vs sklearn's float64: worst-case relative error of
# a sequential float32 sum is N * eps32 = 1.2e-4 (r2 = 1 - ss_res / ss_tot stays within
# a few of those when it is not near 0, as here, r2 ~ 0.5)
RTOL_SUM = N_REG * float(np.finfo(np.float32).eps)


def _regression_data(outputs):
    rng = np.random.default_rng(outputs)
    target = rng.normal(3.0, 2.0, size=(N_REG, outputs)).astype(np.float32)
    pred = (target + rng.normal(0.0, 1.4, size=target.shape) * np.arange(1, outputs + 1)
            ).astype(np.float32)
    return pred, target


@pytest.mark.parametrize("outputs", [1, 3])
def test_regression_metrics_equal_sklearn(outputs):
    # imported here: sklearn.metrics costs every xdist worker ~1.8 s at collection
    from sklearn.metrics import mean_squared_error, r2_score

    pred, target = _regression_data(outputs)
    head = Head("regression")
    m, loss = jax.jit(lambda p, t: (head.metrics(p, t), head.loss(p, t)))(pred, target)
    assert set(m) == set(METRICS["regression"])
    mse = mean_squared_error(target.astype(np.float64), pred.astype(np.float64))
    r2 = r2_score(target.astype(np.float64), pred.astype(np.float64))  # per column, averaged
    assert float(m["mse"]) == pytest.approx(mse, rel=RTOL_SUM)
    assert float(m["loss"]) == float(m["mse"])
    assert float(m["rmse"]) == pytest.approx(np.sqrt(mse), rel=RTOL_SUM)
    assert float(m["r2"]) == pytest.approx(r2, rel=4 * RTOL_SUM)
    assert float(loss) == float(m["mse"])


def test_regression_one_target_takes_flat_labels_without_broadcasting():
    pred, target = _regression_data(1)
    head = Head("regression")
    both = jax.jit(lambda p, t: (head.metrics(p, t[:, 0]), head.metrics(p, t)))
    flat, col = both(pred, target)
    for k in METRICS["regression"]:
        assert float(flat[k]) == float(col[k])  # (N,) labels mean (N, 1), never (N, N)
    with pytest.raises(ValueError, match=r"labels has shape \(1000,\); for outputs"):
        head.loss(jnp.zeros((N_REG, 2)), target[:, 0])
    with pytest.raises(ValueError, match="labels has shape"):
        head.loss(pred, target.T)
    np.testing.assert_array_equal(head.predict(pred), pred)
    with pytest.raises(ValueError, match="no probabilities"):
        head.probs(pred)


def test_r2_conventions():
    head = Head("regression")
    r2 = jax.jit(lambda p, y: head.metrics(p, y)["r2"])
    r2_mean = jax.jit(lambda y: jnp.broadcast_to(y.mean(0), y.shape))
    y = np.array([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]], np.float32)
    assert float(r2(y, y)) == 1.0  # perfect, constant column included
    # the column means as jax computes them (a numpy float32 mean can round differently)
    mean = np.asarray(r2_mean(y))
    # predicting the column mean scores 0 (the same sum as ss_tot: exact); the constant
    # column's mean is its value, predicted exactly: 1; averaged over columns: 0.5
    assert float(r2(mean[:, :1], y[:, :1])) == 0.0
    assert float(r2(mean, y)) == 0.5
    # a constant column predicted wrongly scores 0 (sklearn's force_finite convention)
    off = y.copy()
    off[:, 1] += 1.0
    assert float(r2(off, y)) == pytest.approx(0.5, abs=1e-7)


def test_metric_directions_and_names():
    for kind in KINDS:
        head = Head(kind)
        assert head.metric_names == METRICS[kind]
        assert head.default_metric in head.metric_names
    assert [higher_is_better(m) for m in ("accuracy", "micro_f1", "r2", "test_r2")] == [True] * 4
    assert [higher_is_better(m) for m in ("loss", "mse", "rmse", "value", "val_loss")] == [
        False] * 5
    with pytest.raises(ValueError, match="metric='f1'"):
        higher_is_better("f1")
