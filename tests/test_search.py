"""Direct search: monotone invariance, never accepting a higher loss, the 1/5 rule,
NaN safety, validation, a run through train.fit, and the acceptance rules: the
"batch" rule drifts upward on minibatches of a realistic task, the default
("reevaluate") and "fixed_set" do not."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.estimators import search
from fold_jax.learn import nets, tasks, train

D = 10


def sphere(p, shift):
    return jnp.sum((p["w"] - shift) ** 2) + jnp.sum(p["b"] ** 2)


# module constants from NumPy through device_put: nothing compiles at collection
P0 = {"w": jax.device_put(np.ones((2, D // 2), np.float32)),
      "b": jax.device_put(np.full((3,), 0.5, np.float32))}
SHIFT = jax.device_put(np.zeros((2, D // 2), np.float32))

BUILDERS = {
    "gld": lambda f, **kw: search.gld(f, max_radius=1.0, min_radius=1e-3, **kw),
    "rso": lambda f, **kw: search.rso(f, num_candidates=4, **kw),
    "one_plus_one": lambda f, **kw: search.one_plus_one(f, sigma=0.3, **kw),
}
RULES = {"reevaluate": {}, "batch": {"acceptance": "batch"},
         "fixed_set": {"acceptance": "fixed_set", "eval_batch": (SHIFT,)}}


@functools.cache
def sphere_method(name, rule):
    """BUILDERS[name] on sphere under RULES[rule] and its jitted step, built once per
    module: the tests that drive the same method share one compiled program."""
    method = BUILDERS[name](sphere, **RULES[rule])
    return method, jax.jit(method.step)


def run(method, steps, fun_args=(SHIFT,), params=P0, seed=0, step=None):
    """``steps`` steps of ``method`` (``step``: its jitted step, if already built)."""
    step = jax.jit(method.step) if step is None else step
    state = method.init(params)
    states, infos = [state], []
    for i in range(steps):
        state, info = step(state, jax.random.key(seed + i), *fun_args)
        states.append(state)
        infos.append(info)
    return states, infos


@pytest.mark.parametrize("rule", ["reevaluate", "batch"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_never_accepts_higher_loss_and_decreases(name, rule):
    # a different shift per step plays the minibatch: compare on the same args
    method, step = sphere_method(name, rule)
    f = jax.jit(sphere)
    state = method.init(P0)
    start = float(f(P0, SHIFT))
    for i in range(60):
        shift = 0.1 * jax.random.normal(jax.random.key(100 + i), SHIFT.shape)
        before = float(f(state.params, shift))
        state, info = step(state, jax.random.key(i), shift)
        after = float(f(state.params, shift))
        assert after <= before
        np.testing.assert_allclose(float(info["loss"]), after, rtol=1e-5)
        assert int(info["accepted"]) == int(after < before)
    assert float(f(state.params, SHIFT)) < 0.8 * start


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fixed_set_decides_on_eval_batch_and_never_rises(name):
    # the step's own args are ignored: a wild shift per step changes nothing
    method, step = sphere_method(name, "fixed_set")
    state, losses = method.init(P0), []
    for i in range(40):
        noise = 10.0 * jax.random.normal(jax.random.key(100 + i), SHIFT.shape)
        state, info = step(state, jax.random.key(i), noise)
        np.testing.assert_allclose(float(info["loss"]), float(sphere(state.params, SHIFT)),
                                   rtol=1e-6)
        losses.append(float(info["loss"]))
    assert np.all(np.diff(losses) <= 0) and losses[-1] < float(sphere(P0, SHIFT))
    same = method.init(P0)
    for i in range(40):
        same, _ = step(same, jax.random.key(i), jnp.full(SHIFT.shape, 3.0))
    for x, y in zip(jax.tree.leaves(same.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(x, y)


# every rule compares losses only; each method under the default, every rule under gld
SOME_RULES = [(name, "reevaluate") for name in sorted(BUILDERS)] + [("gld", "batch"),
                                                                    ("gld", "fixed_set")]


@pytest.mark.parametrize(("name", "rule"), SOME_RULES)
def test_same_trajectory_under_monotone_transform(name, rule):
    method, step = sphere_method(name, rule)
    a, _ = run(method, 10, step=step)
    b, _ = run(BUILDERS[name](lambda p, s: jnp.exp(sphere(p, s)), **RULES[rule]), 10)
    for sa, sb in zip(a, b, strict=True):
        for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params), strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(("name", "rule"), [*SOME_RULES, ("one_plus_one", "fixed_set")])
def test_nan_candidates_never_accepted(name, rule):
    def holes(p, s):  # NaN on a random half of the space
        v = sphere(p, s)
        return jnp.where(jnp.sin(37.0 * jnp.sum(p["w"])) > 0, jnp.nan, v)

    p0 = {"w": np.full((2, D // 2), 0.1, np.float32), "b": P0["b"]}  # sin(37) < 0: finite
    loss = jax.jit(holes)  # one program for every check, not op by op
    assert np.isfinite(float(loss(p0, SHIFT)))
    states, infos = run(BUILDERS[name](holes, **RULES[rule]), 30, params=p0)
    for s in states:
        assert np.isfinite(float(loss(s.params, SHIFT)))
    assert sum(int(i["accepted"]) for i in infos) > 0  # it did move, around the holes


def test_reevaluate_moves_only_after_winning_fresh_batches():
    # loss -sign * |w|^2 from w = 0: the sign plays the batch; under +1 every move wins,
    # under -1 every move loses, so a confirmation can be lost at will
    def signed(p, sign):
        return -sign * jnp.sum(p["w"] ** 2)

    m = search.gld(signed, max_radius=0.5, min_radius=0.5, confirmations=2)
    step = jax.jit(m.step)
    p = {"w": jnp.zeros(4)}
    s = m.init(p)
    plan = [(1.0, 0, 2), (-1.0, 0, 0),  # nominated, then loses its first confirmation
            (1.0, 0, 2), (1.0, 0, 1), (1.0, 1, 0)]  # nominated, wins twice: moves
    for i, (sign, accepted, pending) in enumerate(plan):
        before = s
        s, info = step(s, jax.random.key(i), jnp.float32(sign))
        assert (int(info["accepted"]), int(info["pending"])) == (accepted, pending), i
        assert int(info["evals"]) == (2 if int(before.needed) else 1 + 1)  # K = 1 radius
        if not accepted:
            np.testing.assert_array_equal(s.params["w"], before.params["w"])
    assert float(jnp.sum(s.params["w"] ** 2)) > 0  # the challenger won every fresh batch
    np.testing.assert_array_equal(s.params["w"], before.challenger)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_gld_ladder_and_evals(rule):
    m = search.gld(sphere, max_radius=1.0, min_radius=1 / 8, num_per_radius=2, **RULES[rule])
    states, infos = run(m, 6)
    k = 4 * 2  # radii 1, 1/2, 1/4, 1/8, two each
    for i, (state, info) in enumerate(zip(states, infos, strict=False)):
        if rule == "fixed_set":  # x's loss is kept in the state after the first step
            want = k + 1 if i == 0 else k
        elif rule == "reevaluate" and int(state.needed):  # a confirmation: x and challenger
            want = 2
        else:
            want = k + 1
        assert int(info["evals"]) == want, (rule, i)


@pytest.mark.parametrize("rule", ["reevaluate", "batch"])
def test_one_plus_one_follows_one_fifth_rule(rule):
    damping = 2.0
    m = search.one_plus_one(sphere, sigma=0.3, damping=damping, **RULES[rule])
    shifts = [0.1 * jax.random.normal(jax.random.key(100 + i), SHIFT.shape) for i in range(60)]
    step, state, sig, wins, ended = jax.jit(m.step), m.init(P0), [0.3], [], []
    for i, shift in enumerate(shifts):
        state, info = step(state, jax.random.key(i), shift)
        sig.append(float(state.sigma))
        wins.append(int(info["accepted"]))
        ended.append(int(info["pending"]) == 0)  # a trial ends unless one awaits confirmation
    wins, ended = np.array(wins), np.array(ended)
    assert 0 < wins.sum() < len(wins)
    if rule == "batch":
        assert ended.all()
    else:
        assert not ended.all()
    # each trial's end: log sigma += (success - 1/5) / (4/5 damping); no change meanwhile
    np.testing.assert_allclose(np.diff(np.log(sig)), ended * (wins - 0.2) / (0.8 * damping),
                               rtol=1e-4, atol=1e-6)


def test_rso_moves_one_coordinate_and_respects_mask():
    mask = {"w": np.zeros((2, D // 2), np.float32), "b": np.zeros(3, np.float32)}
    mask["w"][0, 1] = 1.0
    m = search.rso(sphere, num_candidates=4, mask=mask)
    states, infos = run(m, 10)
    assert sum(int(i["accepted"]) for i in infos) > 0
    moved = jax.tree.map(lambda a, b: np.asarray(a) != np.asarray(b), states[0].params,
                         states[-1].params)  # NumPy: no compile
    np.testing.assert_array_equal(moved["w"], mask["w"] != 0)
    assert not np.any(moved["b"])
    # without a mask a step changes at most block_size coordinates
    s2, _ = run(search.rso(sphere, num_candidates=4, block_size=2, acceptance="batch"), 1)
    before, after = (jax.device_get(jax.tree.leaves(s.params)) for s in s2[:2])
    changed = sum(int(np.sum(a != b)) for a, b in zip(before, after, strict=True))
    assert 0 < changed <= 2


@pytest.mark.parametrize(
    ("builder", "options", "argument"),
    [
        (search.gld, {"max_radius": 0.0}, "max_radius"),
        (search.gld, {"min_radius": -1.0}, "min_radius"),
        (search.gld, {"max_radius": 0.1, "min_radius": 1.0}, "min_radius"),
        (search.gld, {"num_per_radius": 0}, "num_per_radius"),
        (search.rso, {"num_candidates": 0}, "num_candidates"),
        (search.rso, {"block_size": 0}, "block_size"),
        (search.rso, {"sigma": 0}, "sigma"),
        (search.one_plus_one, {"sigma": -0.1}, "sigma"),
        (search.one_plus_one, {"damping": 0}, "damping"),
        (search.one_plus_one, {"mask": {"w": jax.device_put(np.zeros(3, np.float32))}}, "mask"),
        (search.gld, {"acceptance": "noisy"}, r"acceptance='noisy'.*allowed"),
        (search.rso, {"acceptance": None}, "acceptance=None"),
        (search.one_plus_one, {"confirmations": 0}, "confirmations=0"),
        (search.gld, {"confirmations": 1.5}, "confirmations=1.5"),
        (search.gld, {"acceptance": "batch", "confirmations": 2}, "confirmations=2"),
        (search.rso, {"eval_batch": (SHIFT,)}, "eval_batch"),
        (search.gld, {"acceptance": "fixed_set"}, "eval_batch"),
        (search.gld, {"acceptance": "fixed_set", "eval_batch": ()}, "eval_batch"),
        (search.one_plus_one, {"acceptance": "fixed_set",
                               "eval_batch": (jax.device_put(np.full(SHIFT.shape, np.nan,
                                                                     np.float32)),)},
         r"eval_batch\[0\] has non-finite"),
    ],
)
def test_bad_options(builder, options, argument):
    with pytest.raises(ValueError, match=argument):
        builder(sphere, **options)


def test_eval_batch_must_be_a_tuple():
    with pytest.raises(TypeError, match="eval_batch must be a tuple"):
        search.gld(sphere, acceptance="fixed_set", eval_batch=SHIFT)
    with pytest.raises(TypeError, match="eval_batch must hold arrays"):
        search.gld(sphere, acceptance="fixed_set", eval_batch=("x", object()))


@pytest.mark.parametrize("rule", sorted(RULES))
def test_sharded_wrappers_take_every_rule(rule):
    # parallel.gld / rso pass the options on; their shard_map runs inside the step's
    # lax.cond (a one-device mesh is enough to trace it) and gives the same steps
    from fold_jax.learn import parallel

    mesh = parallel.mesh(1)
    for name, sharded in [
        ("gld", parallel.gld(sphere, mesh=mesh, max_radius=1.0, min_radius=1e-3, **RULES[rule])),
        ("rso", parallel.rso(sphere, mesh=mesh, num_candidates=4, **RULES[rule])),
    ]:
        single, step = sphere_method(name, rule)
        a, infos = run(single, 4, step=step)
        b, _ = run(sharded, 4)
        assert sum(int(i["accepted"]) for i in infos) > 0
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)  # same devices' arithmetic: exact


def test_search_runs_through_fit():
    task = tasks.get("digits")
    net = nets.mlp((64, 16, 10), "relu")
    loss = task.loss_fn(net.apply)
    params = jax.jit(net.init)(jax.random.key(0))  # one program, not op by op
    for m in (search.gld(loss, max_radius=0.5, min_radius=1e-2),
              search.rso(loss, num_candidates=8),
              search.one_plus_one(loss, sigma=0.01)):
        r = train.fit(m, params, task, apply=net.apply, steps=60,
                      batch_size=256, eval_every=60)
        h = r.history
        assert h.train_loss.iloc[-1] < h.train_loss.iloc[0]
        assert h.evals.iloc[-1] > 60
        # history says how many moves were taken: at most one a step, none at step 0
        assert h.accepted.tolist()[0] == 0 and 0 < h.accepted.sum() <= 60
        assert h.skipped.sum() == 0 == r.skipped  # search rejects, it never skips


# ------------------------------------------- minibatch drift on a realistic task
# Issue "A benchmark a researcher can cite", item 5: GLD with batch 256 raised the
# full-training-set loss of a 40-feature, 10-class, 4000-example task. Gaussian blobs
# with close class means (N(0, 0.15^2 I), unit noise) make a noisy task: the linear
# softmax model (410 parameters) learns slowly, so each minibatch's noise is large
# beside the signal, as late in any long run. 1000 steps (not the 16k) show
# the drift here: under "batch", GLD's and (1+1)-ES's losses rise past the bar
# (measured at 1000 steps, bar 2.78: GLD 2.66 -> 3.01, (1+1)-ES 2.66 -> 3.38, i.e.
# 0.23 and 0.60 above it, 4 and 10 standard errors of a batch-256 loss; at 2000 steps
# 3.26 and 4.5), while "reevaluate" ends at 2.34 (GLD), 2.52 ((1+1)-ES), 2.52 (RSO)
# and "fixed_set" at 2.04, all below the start 2.66 and never above the bar.

FEATURES, CLASSES, N_TRAIN, BATCH, STEPS = 40, 10, 4000, 256, 1000


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    means = rng.normal(0.0, 0.15, (CLASSES, FEATURES))

    def draw(n):
        y = rng.integers(0, CLASSES, n)
        x = means[y] + rng.normal(size=(n, FEATURES))
        return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)

    (x, y), (x_test, y_test) = draw(N_TRAIN), draw(1000)
    task = tasks.Task("blobs", "multiclass", x, y, x_test, y_test,
                      tuple(str(c) for c in range(CLASSES)))
    net = nets.mlp((FEATURES, CLASSES), "relu")  # one Dense layer: linear softmax
    params = jax.jit(net.init)(jax.random.key(0))  # one program, not op by op
    loss = task.loss_fn(net.apply)
    start = float(jax.jit(loss)(params, x, y))
    # the bar: initial full-set loss + 2 standard errors of one batch-256 estimate of it
    # (std of the per-example losses at init / sqrt(256)); a rule without drift ends
    # below it, a rise beyond it is more than the noise of the batch a step decided on
    per_example = jax.jit(jax.vmap(lambda a, b: loss(params, a[None], b[None])))(x, y)
    bar = start + 2 * float(np.std(np.asarray(per_example))) / math.sqrt(BATCH)
    return task, net, params, loss, start, bar


def _fit(method, blobs):
    task, net, params, *_ = blobs
    return train.fit(method, params, task, apply=net.apply, steps=STEPS, batch_size=BATCH,
                     eval_every=STEPS // 4).history


@pytest.mark.parametrize("name", ["gld", "one_plus_one"])
def test_batch_acceptance_drifts_upward_on_minibatches(blobs, name):
    *_, loss, start, bar = blobs
    h = _fit(getattr(search, name)(loss, acceptance="batch"), blobs)
    assert h.train_loss.iloc[-1] > bar, (start, bar, h.train_loss.tolist())
    assert h.accepted.sum() > 0.1 * STEPS  # every one of these moves lowered its own batch


@pytest.mark.parametrize("name", ["gld", "rso", "one_plus_one"])
def test_default_acceptance_does_not_raise_the_training_loss(blobs, name):
    *_, loss, start, bar = blobs
    method = getattr(search, name)(loss)
    h = _fit(method, blobs)
    assert (h.train_loss <= bar).all(), (start, bar, h.train_loss.tolist())
    assert h.train_loss.iloc[-1] < start  # and it learned
    assert h.accepted.sum() > 0


@pytest.mark.optimized  # runs one program many times: compile it optimized
def test_fixed_set_descends_on_its_set(blobs):
    task, _, _, loss, start, bar = blobs
    subset = (task.x_train[:1024], task.y_train[:1024])
    h = _fit(search.gld(loss, acceptance="fixed_set", eval_batch=subset), blobs)
    # batch_loss: the mean, per chunk, of each step's loss on the fixed subset; every
    # step's is <= the one before, so the chunk means are too
    assert np.all(np.diff(h.batch_loss.iloc[1:]) <= 0)
    assert (h.train_loss <= bar).all() and h.train_loss.iloc[-1] < start
    assert h.evals.iloc[-1] == STEPS * 11 + 1  # x's loss kept after the first step


# a mask unlike P0: one entry short on w (rso's flat indices would then point at the
# wrong weights), and a missing leaf
BAD_MASKS = [{"w": jax.device_put(np.ones((2, D // 2 - 1), np.float32)),
              "b": jax.device_put(np.ones(3, np.float32))},
             {"w": jax.device_put(np.ones((2, D // 2), np.float32))}]


@pytest.mark.parametrize("mask", BAD_MASKS)
@pytest.mark.parametrize("builder", [search.gld, search.rso, search.one_plus_one,
                                     search.relative_loss])
def test_a_mask_unlike_params_is_named_at_init(builder, mask):
    method = builder(sphere, mask=mask)
    with pytest.raises(ValueError, match="mask"):
        method.init(P0)


@pytest.mark.parametrize("builder", [search.gld, search.rso, search.relative_loss])
def test_a_non_callable_population_map_is_named(builder):
    with pytest.raises(TypeError, match="population_map must be callable"):
        builder(sphere, population_map=None)


def test_rso_relative_must_be_a_bool():
    with pytest.raises(TypeError, match="relative='False' must be True or False"):
        search.rso(sphere, relative="False")
    assert search.rso(sphere, relative=np.False_).init(P0) is not None
