import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fold_jax.heads import KINDS, Head

LOGITS = jnp.array([[3.331, -1.20, -0.002, 2.91, 0.32]])


def test_softmax_matches_the_essay_to_four_decimals():
    probs = Head("multiclass").probs(LOGITS)[0]
    np.testing.assert_allclose(probs, [0.5707, 0.0061, 0.0204, 0.3746, 0.0281], atol=5e-5)
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-6)


def test_losses_equal_optax():
    key = jax.random.key(1)
    logits = jax.random.normal(key, (7, 5))
    labels = jnp.array([0, 4, 2, 1, 3, 3, 0])
    assert Head("multiclass").loss(logits, labels) == pytest.approx(
        float(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()))
    bin_labels = labels % 2
    assert Head("binary").loss(logits[:, :1], bin_labels) == pytest.approx(
        float(optax.sigmoid_binary_cross_entropy(logits[:, 0], bin_labels).mean()))
    multi = (logits > 0).astype(jnp.float32)[:, ::-1]
    expected = optax.sigmoid_binary_cross_entropy(logits, multi).sum(-1).mean()
    assert Head("multilabel").loss(logits, multi) == pytest.approx(float(expected))


def test_multilabel_threshold_changes_predictions_as_documented():
    # probabilities 0.6, 0.75, 0.85: each threshold switches off the labels below it
    logits = jnp.log(jnp.array([[0.6, 0.75, 0.85]]) / (1 - jnp.array([[0.6, 0.75, 0.85]])))
    head = Head("multilabel")
    assert head.predict(logits, 0.5).tolist() == [[1, 1, 1]]
    assert head.predict(logits, 0.7).tolist() == [[0, 1, 1]]
    assert head.predict(logits, 0.8).tolist() == [[0, 0, 1]]
    labels = jnp.array([[0, 1, 1]])
    assert float(head.metrics(logits, labels, 0.7)["accuracy"]) == 1.0
    m = head.metrics(logits, labels, 0.5)
    assert float(m["accuracy"]) == 0.0
    assert float(m["micro_f1"]) == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))


def test_binary_and_multiclass_predictions():
    assert Head("binary").predict(jnp.array([[-1.0], [2.0]])).tolist() == [0, 1]
    assert Head("multiclass").predict(LOGITS).tolist() == [0]


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 1.5, "0.5"])
def test_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold"):
        Head("multilabel").predict(LOGITS, threshold)


def test_unknown_kind_lists_kinds():
    with pytest.raises(ValueError, match="kind") as e:
        Head("regression")
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
    loss = Head("multiclass").loss(jnp.array([[jnp.nan, 0.0]]), jnp.array([0]))
    assert not bool(jnp.isfinite(loss))
