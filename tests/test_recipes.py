"""fold_jax.learn.recipes: the registry, quasi-random trials and building every recipe."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.learn import recipes


def _loss(params, x, y):
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def test_every_recipe_has_a_known_library_and_defaults_inside_its_space():
    assert len(recipes.names()) >= 15
    assert sum(len(recipes.names(suite=s)) for s in recipes.SUITES) == len(recipes.RECIPES)
    for name, r in recipes.RECIPES.items():
        assert r.name == name and r.library in recipes.LIBRARIES and r.description
        assert set(r.defaults) == set(r.space), name  # every tunable value has a default
        for k, p in r.space.items():
            v = r.defaults[k]
            if isinstance(p, recipes.LogUniform):
                assert 0 < p.low <= v <= p.high, (name, k)
            else:
                assert v in p.values
    assert {"evosax_open_es", "evosax_snes", "evosax_pgpe", "evosax_ars"} <= set(
        recipes.names("evosax"))
    # every population fold_jax races at is open to evosax as well
    assert recipes.SMALL_POPULATIONS == (16, 8)
    for k in recipes.SMALL_POPULATIONS:
        for name in (f"snes_lowrank{k}", f"snes{k}"):
            assert recipes.get(name).fixed["num_directions"] == k
        for name in (f"evosax_open_es{k}", f"evosax_snes{k}"):
            assert recipes.get(name).fixed["population_size"] == k
    assert recipes.names("optax") == ("adam", "sgd")


def test_trials_are_deterministic_inside_the_space_and_stratified():
    n = 16
    a = recipes.trials("zo_gaussian", n)
    assert a == recipes.trials("zo_gaussian", n)  # same on every call and machine
    assert a != recipes.trials("zo_gaussian", n, seed=1)
    space = recipes.get("zo_gaussian").space
    for k, p in space.items():
        values = np.array([t[k] for t in a])
        # 4 significant digits: a relative rounding of at most 5e-4 beyond the bounds
        assert (values >= p.low * (1 - 5e-4)).all() and (values <= p.high * (1 + 5e-4)).all()
    # the first 2^4 points of a (scrambled) Halton sequence put one point in each of
    # 16 equal bins of its base-2 coordinate (the first key in sorted order)
    first = sorted(space)[0]
    lo, hi = math.log(space[first].low), math.log(space[first].high)
    u = (np.log([t[first] for t in a]) - lo) / (hi - lo)
    bins = np.clip(np.floor(u * n).astype(int), 0, n - 1)
    assert sorted(bins) == list(range(n))


def test_trials_reject_a_bad_count():
    for n in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n="):
            recipes.trials("adam", n)


def test_get_and_build_name_the_allowed_values():
    with pytest.raises(ValueError, match="recipe='nope' is not known; allowed"):
        recipes.get("nope")
    with pytest.raises(ValueError, match=r"hparams \['rank'\] are not tunable"):
        recipes.build("zo_gaussian", _loss, {"rank": 2})
    with pytest.raises(ValueError, match="cannot keep a mask"):
        recipes.build("evosax_snes", _loss, mask={"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="library='torch'"):
        recipes.names("torch")


@pytest.fixture(scope="module")
def regression():
    """A 32 x 8 least-squares batch (numpy: nothing compiled at collection)."""
    x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    return x, x @ np.arange(8, dtype=np.float32) / 8


def _three_steps(m, state, key, x, y):
    """3 steps under one lax.scan: the last state and the per-step infos (stacked)."""
    return jax.lax.scan(lambda s, k: m.step(s, k, x, y), state, jax.random.split(key, 3))


@pytest.mark.parametrize("name", recipes.names())
def test_every_recipe_builds_a_method_that_takes_finite_steps(name, regression):
    x, y = regression
    params = {"w": np.zeros(8, np.float32), "b": np.zeros((), np.float32)}
    hp = recipes.trials(name, 1)[0]
    m = recipes.build(name, _loss, hp)
    run = jax.jit(lambda s, k, x, y: _three_steps(m, s, k, x, y))  # one program per recipe
    state, info = run(m.init(params), jax.random.key(0), x, y)
    assert math.isfinite(float(info["loss"][-1])) and int(info["evals"][-1]) >= 1
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(state.params))


def test_hparams_json_is_compact_and_sorted():
    text = recipes.hparams_json({"sigma": 0.01, "learning_rate": 3e-3})
    assert text == '{"learning_rate":0.003,"sigma":0.01}'
    assert json.loads(text) == {"learning_rate": 3e-3, "sigma": 0.01}


def test_sample_draws_inside_any_space_and_refuses_bad_ones():
    space = {"lr": recipes.LogUniform(1e-4, 1e-1), "mode": recipes.Choice(("a", "b", "c"))}
    drawn = recipes.sample(space, 64, seed=3)
    assert drawn == recipes.sample(space, 64, seed=3)  # same seed, same draws
    # 4 significant digits of rounding can move a bound by at most 5e-4 relative
    assert all(1e-4 * (1 - 5e-4) <= d["lr"] <= 1e-1 * (1 + 5e-4) for d in drawn)
    assert {d["mode"] for d in drawn} == {"a", "b", "c"}
    with pytest.raises(ValueError, match="empty"):
        recipes.sample({}, 2)
    with pytest.raises(ValueError, match="LogUniform or Choice"):
        recipes.sample({"lr": (1e-3, 1e-2)}, 2)
    with pytest.raises(ValueError, match="n="):
        recipes.sample(space, 0)


@pytest.fixture
def registry_snapshot():
    """Restore the registry after a test that registers recipes."""
    before = dict(recipes.RECIPES)
    yield
    recipes.RECIPES.clear()
    recipes.RECIPES.update(before)


def test_register_a_method_factory_tunes_and_builds_like_a_shipped_recipe(registry_snapshot):
    import optax

    from fold_jax.estimators import methods

    space = {"learning_rate": recipes.LogUniform(1e-3, 1e-1)}

    @recipes.register("my_sgd", space=space, library="lab", description="SGD")
    def my_sgd(loss, learning_rate):
        return methods.gradient(loss, optax.sgd(learning_rate))

    r = recipes.get("my_sgd")
    assert my_sgd.__name__ == "my_sgd"  # the decorator returns the factory
    assert r.library == "lab" and "lab" in recipes.libraries()
    assert recipes.names("lab") == ("my_sgd",) and "my_sgd" in recipes.names()
    # log-midpoint default: sqrt(1e-3 * 1e-1) = 1e-2 (rounded to 4 digits)
    assert r.defaults == {"learning_rate": 0.01}
    # the same quasi-random trials as any recipe with this space
    assert recipes.trials("my_sgd", 4) == recipes.sample(space, 4)
    m = recipes.build("my_sgd", _loss, {"learning_rate": 0.1})
    x, y = np.ones((4, 3), np.float32), np.zeros(4, np.float32)
    state = m.init({"w": np.ones(3, np.float32), "b": np.zeros((), np.float32)})
    state, _ = jax.jit(m.step)(state, jax.random.key(0), x, y)  # one program, not op by op
    # one SGD step on the mean squared error of x @ w (= 3) against 0: grad w = 2 * 3 * 1
    # per entry, so w = 1 - 0.1 * 6 = 0.4 (exact in float32 up to one rounding, 1e-6)
    np.testing.assert_allclose(state.params["w"], 0.4, rtol=1e-6)
    assert recipes.unregister("my_sgd").name == "my_sgd" and "my_sgd" not in recipes.RECIPES


def test_register_an_evosax_style_strategy_class_matches_the_named_adapter(registry_snapshot,
                                                                          regression):
    from evosax.algorithms import Open_ES

    class MyES(Open_ES):  # a researcher's strategy class with evosax's ask/tell API
        pass

    recipes.register("my_es", MyES, space={"sigma": recipes.LogUniform(1e-3, 1e-1)},
                     fixed={"population_size": 8})
    x, y = regression
    params = {"w": np.zeros(8, np.float32), "b": np.zeros((), np.float32)}
    from fold_jax.estimators import peers

    mine = recipes.build("my_es", _loss, {"sigma": 0.05})
    ref = peers.evosax_method("Open_ES", _loss, population_size=8, sigma=0.05)
    # same class code, same keys: the same points bit for bit (3 steps, one program each)
    key = jax.random.key(1)
    a, infos = jax.jit(lambda s, k, x, y: _three_steps(mine, s, k, x, y))(
        mine.init(params), key, x, y)
    b, _ = jax.jit(lambda s, k, x, y: _three_steps(ref, s, k, x, y))(ref.init(params), key, x, y)
    np.testing.assert_array_equal(a.params["w"], b.params["w"])
    ia = {k: v[-1] for k, v in infos.items()}
    assert int(ia["evals"]) == 9 and mine.name == "evosax_MyES"


def test_register_refuses_bad_input_naming_it(registry_snapshot):
    def f(loss):
        return None

    with pytest.raises(ValueError, match="already registered"):
        recipes.register("adam", f)
    with pytest.raises(ValueError, match="without commas"):
        recipes.register("a,b", f)
    with pytest.raises(ValueError, match="LogUniform"):
        recipes.register("x1", f, space={"lr": (1e-3, 1e-1)})
    with pytest.raises(ValueError, match="low <= high"):
        recipes.register("x2", f, space={"lr": recipes.LogUniform(1e-1, 1e-3)})
    with pytest.raises(ValueError, match="not in its space"):
        recipes.register("x3", f, defaults={"lr": 0.1})
    with pytest.raises(TypeError, match="callable"):
        recipes.register("x4", 3)
    with pytest.raises(ValueError, match="population_size"):
        from evosax.algorithms import SNES

        recipes.register("x5", SNES)
    recipes.register("x6", f)
    with pytest.raises(TypeError, match=r"not a fold_jax\.methods\.Method"):
        recipes.build("x6", _loss)
    with pytest.raises(ValueError, match="ships with fold_jax"):
        recipes.unregister("adam")


def test_suite_recipes_are_shipped_through_add_shipped():
    """fold_jax.learn.suite_recipes adds the hypotheses', BBOB's and control's recipes on import
    (recipes never imports it: no circle); they count as shipped, and a name already
    registered is refused."""
    for suite in ("hypotheses", "bbob", "control"):
        names = recipes.names(suite=suite)
        assert names and all(n.startswith(f"{suite}/") for n in names)
    with pytest.raises(ValueError, match="cannot be unregistered"):
        recipes.unregister("bbob/" + recipes.names(suite="bbob")[0].split("/", 1)[1])
    taken = recipes.names(suite="bbob")[0]
    with pytest.raises(ValueError, match="already registered"):
        recipes.add_shipped({taken: recipes.get(taken)})
