"""Robustness pass over the public API (issue 7, item 4): bad input fails fast with a
ValueError/TypeError naming the argument, or is handled as documented; nothing
corrupts state (params, optimizer state, results files).

Bad inputs tried (every one is exercised below):

Keys (``BAD_KEYS``; given to zo ``vg`` and ``vg.with_info``, zo forward ``vg``, search
gld/rso/one_plus_one ``step``, methods gradient/zeroth_order/forward_gradient ``step``,
``Net.init``, ``variants.make(key=)``, ``prune.random_mask``, ``binary.flip_search``
``step``): a Python int seed (0), None, a string, a float, a float32 array of shape (2,),
a uint32 array of shape (3,), a uint32 array of shape (1, 2), a batch of typed keys
(shape (2,)), an int32 array of shape (2,). Accepted: a typed key of shape () and a
legacy raw uint32 key of shape (2,) (as jax.random accepts it).

Shapes: ``Net.apply`` x with a wrong last axis, 0-d x and strings (hypothesis over
ranks 0..3 and sizes); params of another net and empty params for ``Net.apply`` and
``train.fit``; ``Head.loss`` with logits of rank != 2, a zero-size batch, a binary head
with > 1 output, labels of a wrong shape (hypothesis over shapes, three head kinds);
zo/search losses fed an argument of the wrong length (hypothesis) and losses that
return a vector instead of a scalar; ``Objective`` x with the wrong dimension;
``regions.activation_patterns`` x with the wrong number of features;
``probes.softmax_label_predictions`` with k out of 1..L; ``binary.packed_apply`` and
``prune.sparse_apply`` x with a wrong number of features.

Dtypes: integer params (zo, forward, gld, rso, one_plus_one, train.fit); float labels
for a multiclass head; a string as learning rate / seed / progress / target.

NaN / inf: NaN and inf in the batch (hypothesis over positions and values) for
backprop, zeroth-order, forward-gradient and flip-search steps (step skipped or
rejected, params and optimizer state unchanged) and for the three search methods
(candidate rejected, params unchanged; also when the NaN batch is the one confirming a
nominated candidate under acceptance="reevaluate": it is dropped); NaN/inf in a search
``eval_batch`` (ValueError at build); NaN params for a zeroth-order step (skipped,
params unchanged); NaN/inf/bool/negative for learning_rate, sigma, budget_s, target,
threshold, test_fraction, val_fraction, spirals noise, search radii and the prune sparsity;
NaN/inf values in a results row (written and read back as NaN/inf); NaN/inf in a task's
data or in the initial params for ``train.fit`` (ValueError before anything runs); NaN/inf
in ``tasks.from_arrays`` x or y, x/y of different lengths, labels out of range for the
kind, an unknown kind, fractions summing to 1, a string seed; an Objective given to
``train.fit`` with an ``apply`` or with net params (ValueError), a Task without one
(TypeError).

Empty pytrees / zero-size: {} params for zo, forward, the search inits, train.fit,
``Net.apply``, ``probes.tree_cosine``, ``binary.pack_mlp``, ``binary.flip_search``,
``prune.magnitude_mask``, ``prune.sparse_mlp``; trees without Dense kernels for
``prune.sparse_params`` / ``binary.packed_inference``, a mask that does not fit params;
``methods.all_finite({})`` (True, as documented); a zero-size batch (0, features) for a
descent step (loss NaN -> step skipped) and for ``Net.apply`` (returns (0, outputs));
batch_size 0 for ``train.fit``.

Wrong types / values of options: non-callable losses/functions (zo, forward, search,
gradient, descent, flip_search, parallel.population_map, timing.measure), a string tx
for ``descent`` and ``prune.keep_masked``, negative ``evals_per_step``, unknown names
(task, activation, optimizer, noise, head kind, variant, prune scope, search
acceptance), search ``confirmations`` / ``eval_batch`` of a bad value or beside a rule
that does not use them, a traced ``confirmations``, steps/batch_size/
eval_every of 0, -1, 1.5, True, "10" (hypothesis), odd antithetic num_directions,
a learning_rate beside an optax object, a callable learning_rate that is no schedule,
``parallel.mesh`` of 0 / too many / a string, a non-Mesh ``mesh``, a negative
prune ``begin_step``, ``timing.measure`` round limits of NaN / 0.

Results files: rows given as a string, a dict, a list of lists; rows lacking key or core
columns; a name with a slash; key as a string; ``done`` with a list or an empty dict;
``load`` of a missing file; a results directory replaced by a file between appends.
After every failed append the file is byte-identical.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fold_jax import results
from fold_jax.analysis import probes, regions
from fold_jax.bench import timing
from fold_jax.compress import binary, prune, variants
from fold_jax.estimators import methods, search, zo
from fold_jax.learn import heads, nets, parallel, tasks, train

SETTINGS = settings(derandomize=True, max_examples=12, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))
KEY = jax.random.key(0)
BAD_KEYS = {
    "int": 0,
    "none": None,
    "str": "key",
    "float": 1.5,
    "float32(2,)": np.zeros(2, np.float32),
    "uint32(3,)": np.zeros(3, np.uint32),
    "uint32(1,2)": np.zeros((1, 2), np.uint32),
    "typed batch (2,)": jax.random.split(KEY),
    "int32(2,)": np.zeros(2, np.int32),
}
KEY_MESSAGE = r"key must be"


def quad(p, x):
    return jnp.sum((p["w"] - x) ** 2)


# numpy constants: no program compiled at collection (every xdist worker collects)
P = {"w": np.ones(3, np.float32)}
X = np.zeros(3, np.float32)


def _with(x, index, value):
    """A copy of the numpy array x with x[index] = value."""
    x = x.copy()
    x[index] = value
    return x


def _host(leaf):
    leaf = jax.random.key_data(leaf) if jax.dtypes.issubdtype(
        getattr(leaf, "dtype", None), jax.dtypes.prng_key) else leaf
    return np.asarray(leaf)


def _same(a, b) -> bool:
    """Equal trees, NaN equal to NaN; compared in numpy (no program per leaf shape)."""
    return all(np.array_equal(_host(u), _host(v), equal_nan=True)
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# ------------------------------------------------------------------------------ methods

METHODS = {
    "gradient": lambda f: methods.gradient(f, "adam", 1e-2),
    "zeroth_order": lambda f: methods.zeroth_order(f, "adam", 1e-2, num_directions=4),
    "forward_gradient": lambda f: methods.forward_gradient(f, "adam", 1e-2, 2),
    "gld": search.gld,
    "rso": search.rso,
    "one_plus_one": search.one_plus_one,
}


@pytest.mark.parametrize("bad", list(BAD_KEYS))
@pytest.mark.parametrize("name", list(METHODS))
def test_method_step_rejects_bad_keys_before_tracing(name, bad):
    m = METHODS[name](quad)
    with pytest.raises(TypeError, match=KEY_MESSAGE):
        m.step(m.init(P), BAD_KEYS[bad], X)


@pytest.mark.parametrize("bad", ["int", "none", "float32(2,)", "typed batch (2,)"])
def test_estimators_and_init_reject_bad_keys(bad):
    key = BAD_KEYS[bad]
    for vg in (zo.value_and_grad(quad, num_directions=4), zo.forward_value_and_grad(quad)):
        with pytest.raises(TypeError, match=KEY_MESSAGE):
            vg(P, key, X)
        with pytest.raises(TypeError, match=KEY_MESSAGE):
            vg.with_info(P, key, X)
    with pytest.raises(TypeError, match=KEY_MESSAGE):
        nets.mlp((3, 2), "relu").init(key)
    with pytest.raises(TypeError, match=KEY_MESSAGE):
        variants.make("dense", (3, 4, 2), "relu", key=key)


def test_legacy_raw_keys_are_accepted_and_match_typed_keys():
    raw, typed = jax.random.PRNGKey(3), jax.random.key(3)
    vg = jax.jit(zo.value_and_grad(quad, num_directions=4))  # the key check runs in the trace
    assert _same(vg(P, raw, X), vg(P, typed, X))
    m, step = _jitted("gld")  # the typed-key program is the one the NaN sweeps reuse
    assert _same(step(m.init(P), raw, X)[0], step(m.init(P), typed, X)[0])


def test_bad_params_are_named():
    for vg in (zo.value_and_grad(quad, num_directions=4), zo.forward_value_and_grad(quad)):
        with pytest.raises(ValueError, match="params has no entries"):
            vg({}, KEY, X)
        with pytest.raises(TypeError, match="params leaves must be floating"):
            vg({"w": jnp.ones(3, jnp.int32)}, KEY, X)
    for build in (search.gld, search.rso, search.one_plus_one):
        m = build(quad)
        with pytest.raises(ValueError, match="params has no entries"):
            m.init({})
        with pytest.raises(ValueError, match="params has no entries"):
            m.init({"w": jnp.ones(0)})
        with pytest.raises(TypeError, match="params leaves must be floating"):
            m.init({"w": jnp.ones(3, jnp.int32)})
    assert bool(methods.all_finite({}))  # documented: an empty tree is finite


@SETTINGS
@given(n=st.integers(0, 6).filter(lambda n: n not in (1, 3)))  # 1 broadcasts
def test_args_that_do_not_fit_the_loss_are_named(n):
    x = jnp.zeros(n)
    with pytest.raises(ValueError, match=r"fun\(params, \*args\) fails"):
        zo.value_and_grad(quad, num_directions=4)(P, KEY, x)
    with pytest.raises((ValueError, TypeError)):
        search.gld(quad).step(search.gld(quad).init(P), KEY, x)


def test_vector_losses_are_rejected():
    vec = lambda p, x: p["w"] - x  # noqa: E731
    for vg in (zo.value_and_grad(vec, num_directions=4), zo.forward_value_and_grad(vec)):
        with pytest.raises(ValueError, match="scalar loss"):
            vg(P, KEY, X)
    for build in (search.gld, search.rso, search.one_plus_one):
        m = build(vec)
        with pytest.raises(ValueError, match="scalar loss"):
            m.step(m.init(P), KEY, X)


@pytest.mark.parametrize("builder", [zo.value_and_grad, zo.forward_value_and_grad, search.gld,
                                     search.rso, search.one_plus_one])
def test_non_callable_losses_are_rejected(builder):
    with pytest.raises(TypeError, match="fun must be callable"):
        builder(3)


def test_method_builder_options_are_named():
    cases = [
        (lambda: methods.gradient(3, "adam"), TypeError, "loss must be callable"),
        (lambda: methods.descent(3, optax.adam(1e-3), evals_per_step=1), TypeError,
         "value_and_grad must be callable"),
        (lambda: methods.descent(lambda *a: 0.0, "adam", evals_per_step=1), TypeError,
         "tx must be an optax"),
        (lambda: methods.descent(lambda *a: 0.0, optax.adam(1e-3), evals_per_step=-1),
         ValueError, "evals_per_step"),
        (lambda: methods.optimizer("adamx", 1e-3), ValueError, "optimizer='adamx'"),
        (lambda: methods.optimizer(3, 1e-3), TypeError, "optimizer must be"),
        (lambda: methods.gradient(quad, "adm", 1e-3), ValueError, "tx='adm' is not known"),
        (lambda: methods.zeroth_order(quad, 3, 1e-3), TypeError, "tx must be an optimizer"),
        (lambda: methods.zeroth_order(None, "adam", 1e-3), TypeError, "loss must be callable"),
        (lambda: methods.forward_gradient(None, "adam", 1e-3), TypeError,
         "loss must be callable"),
        (lambda: methods.zeroth_order(quad, "adam", 1e-3, num_directions=3), ValueError,
         "num_directions=3"),
        (lambda: methods.forward_gradient(quad, "adam", 1e-3, 0), ValueError,
         "num_directions=0"),
        (lambda: zo.value_and_grad(quad, noise="uniform"), ValueError, "noise='uniform'"),
        (lambda: methods.gradient(quad, optax.adam(1e-3), 1e-2), ValueError,
         "learning_rate=0.01 was given beside an optax"),
        (lambda: methods.optimizer("adam", lambda: 1e-3), ValueError, "learning_rate="),
        (lambda: search.gld(quad, max_radius=0.1, min_radius=1.0), ValueError, "min_radius"),
        (lambda: search.rso(quad, num_candidates=0), ValueError, "num_candidates"),
        (lambda: search.gld(quad, acceptance="fixed"), ValueError, "acceptance='fixed'"),
        (lambda: search.one_plus_one(quad, acceptance=1), ValueError, "acceptance=1"),
        (lambda: search.rso(quad, confirmations=True), ValueError, "confirmations=True"),
        (lambda: search.gld(quad, acceptance="fixed_set", confirmations=1), ValueError,
         "confirmations=1 is only used by acceptance='reevaluate'"),
        (lambda: search.gld(quad, eval_batch=(X,)), ValueError,
         "eval_batch is only used by acceptance='fixed_set'"),
        (lambda: search.rso(quad, acceptance="fixed_set"), ValueError, "needs eval_batch"),
        (lambda: search.gld(quad, acceptance="fixed_set", eval_batch=X), TypeError,
         "eval_batch must be a tuple"),
        (lambda: jax.jit(lambda c: search.gld(quad, confirmations=c))(2), TypeError,
         "confirmations must be a concrete number"),
    ]
    for bad in (float("nan"), float("inf"), -1.0, 0.0, True, "0.1"):
        cases += [
            (lambda b=bad: methods.optimizer("adam", b), ValueError, "learning_rate="),
            (lambda b=bad: zo.value_and_grad(quad, sigma=b), ValueError, "sigma="),
            (lambda b=bad: search.gld(quad, max_radius=b), ValueError, "max_radius="),
            (lambda b=bad: search.one_plus_one(quad, sigma=b), ValueError, "sigma="),
        ]
    for bad in (math.nan, math.inf, -math.inf):
        cases.append((lambda b=bad: search.gld(quad, acceptance="fixed_set",
                                               eval_batch=(_with(X, 1, b),)),
                      ValueError, r"eval_batch\[0\] has non-finite"))
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


# -------------------------------------------------------- NaN / inf: steps are skipped

_STEPS: dict = {}


def _jitted(name):
    """One jitted step per method, reused by every hypothesis example and the tests
    below (no recompiles)."""
    if name not in _STEPS:
        m = METHODS[name](quad) if name in METHODS else binary.flip_search(
            lambda p, x: jnp.sum((p["w"] @ p["v"] - x) ** 2))
        _STEPS[name] = (m, jax.jit(m.step))
    return _STEPS[name]


@SETTINGS
@given(name=st.sampled_from([*METHODS, "flip_search"]), index=st.integers(0, 2),
       value=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_batches_leave_state_unchanged(name, index, value):
    m, step = _jitted(name)
    params = ({"w": np.ones((3, 2), np.float32), "v": np.ones(2, np.float32)}
              if name == "flip_search" else P)
    state = m.init(params)
    x = _with(X, index, value)
    new, info = step(state, KEY, x)
    assert _same(new.params, state.params)
    if hasattr(state, "opt_state"):  # descent: the whole state is kept, step counted skipped
        assert _same(new, state) and int(info["skipped"]) == 1
    else:  # search: nothing accepted
        assert int(info["accepted"]) == 0


@pytest.mark.parametrize("name", ["gld", "rso", "one_plus_one"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_confirmation_batch_drops_the_challenger(name, value):
    # acceptance="reevaluate": a clean batch nominates a candidate; the NaN/inf batch
    # that should confirm it rejects it (nothing moves, no confirmation pending after)
    m, step = _jitted(name)
    for seed in range(10):  # (1+1)-ES: one candidate, it beats x about every other key
        state, info = step(m.init(P), jax.random.key(seed), X + 0.5)
        if int(info["pending"]):
            break
    assert int(info["pending"]) == search.DEFAULT_CONFIRMATIONS
    new, info = step(state, jax.random.key(1), _with(X, 0, value))
    assert _same(new.params, state.params) and _same(new.params, P)
    assert (int(info["accepted"]), int(info["pending"]), int(info["evals"])) == (0, 0, 2)


def test_nan_params_and_zero_size_batches_are_skipped():
    m, step = _jitted("zeroth_order")
    nan_state = m.init({"w": np.full(3, np.nan, np.float32)})
    new, info = step(nan_state, KEY, X)
    assert _same(new, nan_state) and int(info["skipped"]) == 1
    mean_loss = lambda p, x: jnp.mean((p["w"] - x) ** 2)  # noqa: E731
    g = methods.gradient(mean_loss, "sgd", 0.1)
    state = g.init({"w": np.ones(3, np.float32)})
    new, info = jax.jit(g.step)(state, KEY, np.zeros((0, 3), np.float32))  # mean of nothing: NaN
    assert _same(new, state) and int(info["skipped"]) == 1


# ----------------------------------------------------------------------- nets / heads

NET = nets.mlp((4, 8, 2), "relu")


@pytest.fixture(scope="module")
def net_params():
    """NET's params, built once for the module by one jitted init (not at collection)."""
    return jax.jit(NET.init)(KEY)


@SETTINGS
@given(shape=st.lists(st.integers(0, 6), min_size=0, max_size=3).filter(
    lambda s: not s or s[-1] != 4))
def test_net_apply_names_a_wrong_input_shape(shape, net_params):
    with pytest.raises(ValueError, match="in_features=4"):
        NET.apply(net_params, np.zeros(shape, np.float32))


def test_net_apply_params_and_documented_shapes(net_params):
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="params do not fit this net"):
        NET.apply({}, x)
    with pytest.raises(ValueError, match="params do not fit this net"):
        NET.apply(jax.eval_shape(nets.mlp((5, 8, 2), "relu").init, KEY), x)  # shapes suffice
    with pytest.raises(ValueError, match="in_features"):
        NET.apply(net_params, "abcd")
    zero = jax.jit(NET.apply)(net_params, np.zeros((0, 4), np.float32))
    assert zero.shape == (0, 2)  # zero batch: (0, out)
    for bad in [(4,), (4, 0, 2), (4.0, 2), (True, 2)]:
        with pytest.raises(ValueError, match="widths"):
            nets.mlp(bad, "relu")
    with pytest.raises(TypeError, match="widths"):
        nets.mlp("42", "relu")
    with pytest.raises(ValueError, match="activation='swish2'"):
        nets.mlp((4, 2), "swish2")


@SETTINGS
@given(kind=st.sampled_from(heads.KINDS), n=st.integers(0, 4), outputs=st.integers(1, 4),
       label_shape=st.lists(st.integers(0, 5), max_size=3))
def test_head_names_bad_logits_and_labels(kind, n, outputs, label_shape):
    head = heads.Head(kind)
    logits = np.zeros((n, outputs), np.float32)
    want = (n, outputs) if kind == "multilabel" else (n,)
    ok_logits = n >= 1 and (kind != "binary" or outputs == 1)
    dtype = np.int32 if kind == "multiclass" else np.float32
    ok_labels = tuple(label_shape) == want
    if kind == "regression":  # (N, T) targets, or (N,) for one target, never broadcast
        ok_labels = tuple(label_shape) in ((n, outputs), (n,) if outputs == 1 else None)
    if ok_logits and ok_labels:
        assert np.isfinite(np.asarray(head.loss(logits, np.zeros(label_shape, dtype))))
        return
    with pytest.raises(ValueError, match="logits has shape" if not ok_logits else "labels"):
        head.loss(logits, np.zeros(label_shape, dtype))


def test_head_dtype_threshold_and_kind():
    with pytest.raises(TypeError, match="labels must be integer"):
        heads.Head("multiclass").loss(jnp.zeros((3, 4)), jnp.zeros(3))
    for bad in (0.0, 1.0, 2.0, math.nan, "0.5"):
        with pytest.raises(ValueError, match="threshold="):
            heads.Head("multilabel").predict(jnp.zeros((3, 4)), bad)
    with pytest.raises(ValueError, match="kind='softmax'"):
        heads.Head("softmax")


# ----------------------------------------------------------------------- tasks / train


def test_tasks_reject_bad_names_and_options():
    cases = [(lambda: tasks.get(3), ValueError, "name=3"),
             (lambda: tasks.get("mnist"), ValueError, "name='mnist'"),
             (lambda: tasks.get("digits", bogus=1), ValueError, "unknown options"),
             (lambda: tasks.get("digits", seed="a"), TypeError, "seed"),
             (lambda: tasks.get("spirals", noise=math.nan), ValueError, "noise="),
             (lambda: tasks.get("spirals", n_samples=1.5), ValueError, "n_samples="),
             (lambda: tasks.get("spirals", turns=0), ValueError, "turns=0"),
             (lambda: tasks.get("spirals", noise="0.2"), ValueError, "noise='0.2'"),
             (lambda: tasks.get("teacher", hidden=0), ValueError, "hidden=0"),
             (lambda: tasks.get("teacher", n_classes=1), ValueError, "n_classes=1"),
             (lambda: tasks.get("teacher", n_samples=2.5), ValueError, "n_samples=2.5"),
             (lambda: tasks.get("sphere", dim=0), ValueError, "dim=0")]
    cases += [(lambda b=b: tasks.get("digits", test_fraction=b), ValueError, "test_fraction=")
              for b in (0.0, 1.0, 1.5, math.nan)]
    cases += [(lambda b=b: tasks.get("digits", val_fraction=b), ValueError, "val_fraction=")
              for b in (-0.1, 1.0, math.nan, math.inf, True)]
    x, y = np.zeros((40, 2)), np.arange(40) % 2
    cases += [
        (lambda: tasks.from_arrays(x, y, kind="softmax"), ValueError, "kind='softmax'"),
        (lambda: tasks.from_arrays(x[:30], y, kind="binary"), ValueError, "x has 30 examples"),
        (lambda: tasks.from_arrays(np.full((40, 2), math.inf), y, kind="binary"), ValueError,
         "x has 80 non-finite"),
        (lambda: tasks.from_arrays(x, y * math.nan, kind="regression"), ValueError,
         "y has 40 non-finite"),
        (lambda: tasks.from_arrays(x, y + 1, kind="binary"), ValueError, "y has label 2"),
        (lambda: tasks.from_arrays(x, y, kind="multilabel"), ValueError, "y has shape"),
        (lambda: tasks.from_arrays(x, y, kind="binary", test_fraction=0.7, val_fraction=0.3),
         ValueError, "test_fraction=0.7 \\+ val_fraction=0.3"),
        (lambda: tasks.from_arrays(x, y, kind="binary", seed="0"), TypeError, "seed"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    sphere = tasks.get("sphere", dim=3)
    with pytest.raises(ValueError, match="dim=3"):
        sphere(jnp.zeros(4))
    assert jnp.isnan(sphere(jnp.full(3, jnp.nan)))  # documented: NaN propagates


@pytest.fixture(scope="module")
def fit_setup():
    task = tasks.get("breast_cancer")
    net = nets.mlp((task.n_features, 4, 1), "relu")
    return task, net, methods.gradient(task.loss_fn(net.apply), "adam", 1e-2)


@pytest.fixture(scope="module")
def fit_params(fit_setup):
    """The fit net's params (one jitted init); every fit below fails before using them."""
    return jax.jit(fit_setup[1].init)(KEY)


BAD_COUNTS = st.sampled_from([0, -1, 1.5, True, "10", None, math.nan])


@SETTINGS
@given(argument=st.sampled_from(["steps", "batch_size", "eval_every"]), bad=BAD_COUNTS)
def test_fit_names_bad_counts_before_compiling(fit_setup, fit_params, argument, bad):
    task, net, m = fit_setup
    options = {"steps": 5, "batch_size": 8, "eval_every": 5, argument: bad}
    if argument == "steps" and bad is None:  # documented: steps=None needs budget_s
        with pytest.raises(ValueError, match="budget"):
            train.fit(m, fit_params, task, apply=net.apply, **options)
        return
    with pytest.raises(ValueError, match=f"{argument}="):
        train.fit(m, fit_params, task, apply=net.apply, **options)


def test_fit_names_other_bad_arguments(fit_setup, fit_params):
    task, net, m = fit_setup
    params = fit_params
    before = jax.tree.map(np.array, params)
    cases = [
        (dict(budget_s=math.nan), ValueError, "budget_s="),
        (dict(budget_s=math.inf), ValueError, "budget_s="),
        (dict(budget_s=-1.0), ValueError, "budget_s="),
        (dict(seed="a"), TypeError, "seed="),
        (dict(seed=KEY), TypeError, "seed="),
        (dict(seed=1.0), TypeError, "seed="),
        (dict(target=math.nan), ValueError, "target="),
        (dict(target="x"), ValueError, "target="),
        (dict(threshold=2.0), ValueError, "threshold="),
        (dict(target_metric="f1"), ValueError, "target_metric="),
        (dict(progress="yes"), TypeError, "progress="),
        (dict(batch_size=10**6), ValueError, "batch_size="),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            train.fit(m, params, task, apply=net.apply, **{"steps": 5, **options})
    with pytest.raises(ValueError, match="params has no entries"):
        train.fit(m, {}, task, apply=net.apply, steps=5)
    with pytest.raises(TypeError, match="params leaves must be floating"):
        train.fit(m, jax.tree.map(lambda w: np.asarray(w).astype(np.int32), params), task,
                  apply=net.apply, steps=5)
    with pytest.raises(TypeError, match="task must be"):
        train.fit(m, params, "digits", apply=net.apply, steps=5)
    # an Objective has no data: an apply beside it is an error, and so are net params
    with pytest.raises(ValueError, match=r"apply .* was given with the Objective"):
        train.fit(m, params, tasks.get("sphere"), apply=net.apply, steps=5)
    with pytest.raises(ValueError, match="params must be one array"):
        train.fit(m, params, tasks.get("sphere"), steps=5)
    with pytest.raises(TypeError, match="method must"):
        train.fit(object(), params, task, apply=net.apply, steps=5)
    with pytest.raises(TypeError, match="apply is required"):
        train.fit(m, params, task, apply=None, steps=5)
    with pytest.raises(TypeError, match="apply must"):
        train.fit(m, params, task, apply="net", steps=5)
    assert _same(params, before)  # nothing touched the caller's params


@SETTINGS
@given(array=st.sampled_from(["x_train", "y_train", "x_test", "y_test", "params"]),
       value=st.sampled_from([math.nan, math.inf, -math.inf]), count=st.integers(1, 5))
def test_fit_names_non_finite_data_and_params(fit_setup, fit_params, array, value, count):
    task, net, m = fit_setup
    params = jax.tree.map(np.array, fit_params)  # a numpy copy (edited in place below)
    if array == "params":
        params["params"]["dense_0"]["kernel"].reshape(-1)[:count] = value
        where = r"params\['params'\]\['dense_0'\]\['kernel'\]"
    else:
        data = np.array(getattr(task, array), np.float32)
        data.reshape(-1)[:count] = value
        task = dataclasses.replace(task, **{array: data})
        where = rf"task\.{array}"
    with pytest.raises(ValueError, match=rf"{where} .*has {count} non-finite entries"):
        train.fit(m, params, task, apply=net.apply, steps=5)


# ---------------------------------------------------------------- probes / regions


def test_probes_and_regions_name_bad_inputs(net_params):
    cases = [
        (lambda: probes.tree_cosine({}, {}), ValueError, "non-empty"),
        (lambda: probes.layer_grad_norms(lambda p: 0.0, {}), ValueError, "params must be"),
        (lambda: probes.first_last_ratio(jnp.ones(1)), ValueError, "norms"),
        (lambda: probes.deep_mlp(4, 2, depth=0, width=4, activation="relu"), ValueError,
         "depth=0"),
        (lambda: probes.normalized_targets(jnp.zeros(3)), ValueError, "labels"),
        (lambda: probes.softmax_label_predictions(jnp.zeros((3, 4))), ValueError,
         "exactly one"),
        (lambda: probes.softmax_label_predictions(jnp.zeros((3, 4)), k=0), ValueError, "k=0"),
        (lambda: probes.softmax_label_predictions(jnp.zeros((3, 4)), k=5), ValueError, "k=5"),
        (lambda: probes.softmax_label_predictions(jnp.zeros((3, 4)), k=jnp.ones(3)),
         TypeError, "k must be"),
        (lambda: probes.label_metrics(jnp.zeros(3), jnp.zeros(3)), ValueError, "pred"),
        (lambda: regions.activation_patterns(net_params, jnp.zeros((3, 5)), "relu"),
         ValueError, "in_features=4"),
        (lambda: regions.activation_patterns(net_params, jnp.zeros((3, 4)), "sigmoid"),
         ValueError, "activation='sigmoid'"),
        (lambda: regions.activation_patterns({}, jnp.zeros((3, 4)), "relu"), ValueError,
         "params must be"),
        (lambda: regions.line_regions(net_params, jnp.zeros(3), jnp.ones(3),
                                      activation="relu"), ValueError, "in_features"),
        (lambda: regions.line_regions(net_params, jnp.full(4, jnp.nan), jnp.ones(4),
                                      activation="relu"), ValueError, "finite"),
        (lambda: regions.line_regions(net_params, jnp.ones(4), jnp.ones(4),
                                      activation="relu"), ValueError, "end equals start"),
        (lambda: regions.box_plane([1, 1], [0, 0]), ValueError, "hi > lo"),
        (lambda: regions.box_plane([math.nan, 0], [1, 1]), ValueError, "hi > lo"),
        (lambda: regions.tent_net(0), ValueError, "depth=0"),
        (lambda: regions.tent_net(2.5), ValueError, "depth=2.5"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


# ------------------------------------------------------------------ timing / parallel


def test_timing_and_parallel_name_bad_inputs():
    cases = [
        (lambda: timing.measure(3), TypeError, "fn must be callable"),
        (lambda: timing.aot(3), TypeError, "fn must be callable"),
        (lambda: parallel.mesh(0), ValueError, "devices=0"),
        (lambda: parallel.mesh(10**6), ValueError, "devices="),
        (lambda: parallel.mesh("cpu"), TypeError, "devices must be"),
        (lambda: parallel.mesh(1, axis=""), ValueError, "axis="),
        (lambda: parallel.population_map(lambda x: x, mesh=3), TypeError, "mesh must be"),
        (lambda: parallel.population_map(3), TypeError, "f must be callable"),
        (lambda: parallel.value_and_grad(quad, mesh="m"), TypeError, "mesh must be"),
        (lambda: parallel.population_map(lambda x: x, parallel.mesh(1), axis="nope"),
         ValueError, "axis='nope'"),
    ]
    for bad in (math.nan, 0.0, -1.0):
        cases.append((lambda b=bad: timing.measure(lambda: 1.0, min_round_s=b), ValueError,
                      "min_round_s="))
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


# --------------------------------------------------------------------------- results


def _row(i, **extra):
    return {"task": "t", "method": "m", "variant": "dense", "seed": i, "target_metric": "a",
            "target": 0.9, "reached": True, "steps_to_target": 1, "evals_to_target": 1,
            "time_to_target_s": 0.1, "compile_s": 0.1, "final_test_metric": 0.9,
            "budget_s": 1.0, "n_params": 10, **extra}


RKEY = ["task", "method", "variant", "seed"]


@SETTINGS
@given(bad=st.sampled_from(["rows-str", "rows-dict", "rows-lists", "no-key", "no-core",
                            "name-slash", "key-str", "key-empty"]))
def test_failed_appends_name_the_problem_and_leave_the_file_alone(tmp_path_factory, bad):
    d = tmp_path_factory.mktemp("r")
    assert results.append("races", [_row(0)], key=RKEY, results_dir=d) == 1
    path = results.run_dir(d, results.run_id()) / "races.csv.gz"
    before = path.read_bytes()
    rows, name, key = [_row(1)], "races", RKEY
    error, message = ValueError, "lacks columns"
    if bad == "rows-str":
        rows, error, message = "abc", TypeError, "rows must be"
    elif bad == "rows-dict":
        rows, error, message = _row(1), TypeError, "rows must be"
    elif bad == "rows-lists":
        rows, error, message = [_row(1), [1, 2]], TypeError, r"rows\[1\] must be a dict"
    elif bad == "no-key":
        rows = [{k: v for k, v in _row(1).items() if k != "seed"}]
    elif bad == "no-core":
        rows = [{k: v for k, v in _row(1).items() if k != "target"}]
    elif bad == "name-slash":
        name, error, message = "../races", ValueError, "name="
    elif bad == "key-str":
        key, error, message = "seed", TypeError, "key must be"
    elif bad == "key-empty":
        key, error, message = [], TypeError, "key must be"
    with pytest.raises(error, match=message):
        results.append(name, rows, key=key, results_dir=d)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [  # no temp files left
        "fingerprint.json.gz", "races.csv.gz", "run.json"]


def test_results_non_finite_values_and_lookups(tmp_path):
    row = _row(0, time_to_target_s=math.inf, final_test_metric=math.nan)
    results.append("races", [row], key=RKEY, results_dir=tmp_path)
    frame = results.load(tmp_path / "races.csv")
    assert math.isinf(frame["time_to_target_s"].iloc[0])
    assert math.isnan(frame["final_test_metric"].iloc[0])
    with pytest.raises(TypeError, match="key must be"):
        results.done("races", ["seed"], results_dir=tmp_path)
    with pytest.raises(TypeError, match="key must be"):
        results.done("races", {}, results_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no results file"):
        results.load(tmp_path / "missing.csv")
    assert not results.done("races", {"seed": 0}, results_dir=tmp_path / "nowhere")
    blocker = tmp_path / "blocked"
    blocker.write_text("")
    with pytest.raises(OSError, match="blocked"):
        results.append("races", [_row(1)], key=RKEY, results_dir=blocker / "sub")


# ------------------------------------------------- binary / prune / variants (not ours)


def test_variants_and_prune_validation_that_holds(net_params):
    cases = [
        (lambda: variants.make("x", (4, 8, 2), "relu", key=KEY), ValueError, "name='x'"),
        (lambda: variants.make("dense", (4, 8, 2), "relu", key=KEY, foo=1), ValueError,
         "unknown options"),
        (lambda: variants.make("pruned", (4, 8, 2), "relu", key=KEY, sparsity=2.0),
         ValueError, "sparsity="),
        (lambda: prune.magnitude_mask(net_params, 1.5), ValueError, "sparsity="),
        (lambda: prune.magnitude_mask(net_params, math.nan), ValueError, "sparsity="),
        (lambda: prune.magnitude_mask(net_params, 0.5, scope="x"), ValueError, "scope='x'"),
        (lambda: prune.nm_mask(net_params, 3, 2), ValueError, "n=3"),
        (lambda: prune.cubic_schedule(0.5, 0), ValueError, "total_steps=0"),
        (lambda: prune.gradual_prune(0.5, 10, schedule="x"), ValueError, "schedule='x'"),
        (lambda: prune.to_bcsr(jnp.ones(3)), ValueError, "kernel must be 2-D"),
        (lambda: prune.sparse_apply(prune.sparse_mlp(net_params), jnp.ones((3, 5))),
         ValueError, "x has shape"),
        (lambda: binary.pack(jnp.float32(1)), ValueError, "at least one axis"),
        (lambda: binary.pack(jnp.ones(8), word_bits=16), ValueError, "word_bits=16"),
        (lambda: binary.unpack(jnp.ones(2), 8), ValueError, "packed must be"),
        (lambda: binary.unpack(jnp.ones(1, jnp.uint32), 40), ValueError, "k=40"),
        (lambda: binary.xnor_matmul(jnp.ones((2, 1), jnp.uint32), jnp.ones((3, 2), jnp.uint32),
                                    32), ValueError, "packed shapes"),
        (lambda: binary.clip_latent(math.nan), ValueError, "limit="),
        (lambda: binary.flip_search(quad, flips=0), ValueError, "flips=0"),
        # any flax model (kernels by path): a mask that does not fit, no kernels at all
        (lambda: prune.sparse_inference(NET.apply, net_params, {"params": {}}), ValueError,
         "mask must have the structure of params"),
        (lambda: prune.sparse_params({"params": {"ln": {"scale": jnp.ones(3)}}}), ValueError,
         "no Dense kernels"),
        (lambda: binary.packed_inference(NET.apply, {"b": jnp.ones(3)}), ValueError,
         "no Dense kernels"),
        (lambda: binary.packed_params(net_params, binarize_inputs=[("params", "x")]),
         ValueError, "binarize_inputs has paths"),
        (lambda: prune.magnitude_mask({"b": jnp.ones(3)}, 0.5), ValueError, "no leaves to prune"),
        (lambda: variants.from_model("x", NET.apply, net_params), ValueError, "name='x'"),
        (lambda: variants.from_model("pruned", 3, net_params), TypeError, "apply must be"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


@pytest.mark.parametrize("bad", ["int", "typed batch (2,)"])
def test_flip_search_rejects_bad_keys(bad):
    m = binary.flip_search(quad)
    with pytest.raises(TypeError, match=KEY_MESSAGE):
        m.step(m.init(P), BAD_KEYS[bad], X)


@pytest.mark.parametrize("bad", ["int", "typed batch (2,)"])
def test_random_mask_rejects_bad_keys(bad, net_params):
    with pytest.raises(TypeError, match=KEY_MESSAGE):
        prune.random_mask(BAD_KEYS[bad], net_params, 0.5)


def test_flip_search_rejects_non_callable_loss():
    with pytest.raises(TypeError, match="loss must be callable"):
        binary.flip_search(3)


def test_flip_search_rejects_empty_params():
    with pytest.raises(ValueError, match="params"):
        binary.flip_search(quad).init({})


def test_empty_nets_are_rejected_by_packed_and_sparse_inference():
    for call in (lambda: binary.pack_mlp({}), lambda: prune.sparse_mlp({})):
        with pytest.raises(ValueError, match="params must be"):
            call()


def test_magnitude_mask_rejects_empty_params():
    with pytest.raises(ValueError, match="params"):
        prune.magnitude_mask({}, 0.5)


def test_packed_apply_names_bad_x(net_params):
    with pytest.raises(ValueError, match="x has shape"):
        binary.packed_apply(binary.pack_mlp(net_params), jnp.ones((3, 5)))


def test_apply_mask_names_a_mismatched_mask(net_params):
    with pytest.raises(ValueError, match="mask"):
        prune.apply_mask(net_params, {"a": 1})


def test_keep_masked_names_a_bad_tx(net_params):
    with pytest.raises(TypeError, match="tx"):
        prune.keep_masked("adam", net_params)


def test_schedule_rejects_negative_begin_step():
    with pytest.raises(ValueError, match="begin_step"):
        prune.cubic_schedule(0.5, 10, begin_step=-1)


# ------------------------------------------------- faults: results dir lost mid-run


def test_results_dir_lost_mid_run_stops_cleanly_then_resumes(tmp_path, capsys):
    """Between two jobs the results directory is replaced by a plain file (a disk
    unmounted, a dir swapped away; chmod does not stop root): the runner stops with a
    message naming the job, the saved rows stay whole, and a rerun finishes the rest."""
    import types

    from fold_jax.bench import run
    from fold_jax.bench.common import Job

    out, moved = tmp_path / "results", tmp_path / "moved"
    lost = []

    def job(i):
        def go():
            if i == 2 and not lost:
                lost.append(True)
                out.rename(moved)
                out.write_text("not a directory")
            return [{"i": i, "v": i * i}]
        return go

    suite = types.ModuleType("suite_fake")
    suite.FILE, suite.KEY = "fake", ["i"]
    suite.jobs = lambda profile: [Job({"i": i}, job(i), f"job{i}") for i in range(4)]
    argv = ["--results-dir", str(out), "--no-report"]
    assert run.main(argv, suites={"fake": suite}) == 1
    err = capsys.readouterr().err
    assert "stopping: cannot write the results of fake:job2" in err and str(out) in err
    assert "saved 2 jobs" in err and "rerun the same command" in err
    saved = results.load(moved / "fake.csv")
    assert sorted(saved["i"]) == [0, 1]
    left = sorted(p.name for d in (moved / "runs").iterdir() for p in d.iterdir()
                  if p.name not in ("run.json", "fingerprint.json.gz"))
    assert left == ["fake.csv.gz"]  # no temp files (run.json, .partial/: the run's record)
    out.unlink()
    moved.rename(out)
    assert run.main(argv, suites={"fake": suite}) == 0
    frame = results.load(out / "fake.csv")
    assert sorted(frame["i"]) == [0, 1, 2, 3] and list(frame["v"]) == [0, 1, 4, 9]
