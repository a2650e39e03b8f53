import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fold_jax import checks

SETTINGS = settings(derandomize=True, max_examples=40, deadline=None, database=None)
INT_KINDS = [int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32,
             lambda v: np.array(v, np.int64), lambda v: jnp.asarray(v, jnp.int32)]
REAL_KINDS = [float, np.float32, np.float64, lambda v: np.array(v, np.float32),
              lambda v: jnp.asarray(v, jnp.float32), lambda v: jnp.asarray(v, jnp.bfloat16)]


@SETTINGS
@given(value=st.integers(0, 100), kind=st.sampled_from(INT_KINDS), minimum=st.integers(0, 100))
def test_check_int_takes_python_numpy_and_jax_ints_and_returns_a_python_int(value, kind,
                                                                            minimum):
    given_value = kind(value)
    if value >= minimum:
        out = checks.check_int(given_value, "n", minimum)
        assert type(out) is int and out == value
    else:
        with pytest.raises(ValueError, match=rf"n=.* must be an int >= {minimum}"):
            checks.check_int(given_value, "n", minimum)


@pytest.mark.parametrize("bad", [True, False, np.bool_(True), jnp.asarray(True), 2.0,
                                 np.float32(2), jnp.float32(2), np.ones(1, np.int64),
                                 jnp.ones((1,), jnp.int32), "3", None, 1 + 0j,
                                 jax.random.key(0)])
def test_check_int_rejects_bools_floats_arrays_and_others(bad):
    with pytest.raises(ValueError, match=r"(?s)n=.* must be an int >= 1"):
        checks.check_int(bad, "n")


def test_check_int_none_minimum_and_legacy_keyword():
    assert checks.check_int(None, "n", allow_none=True) is None
    assert checks.check_int(0, "n", 0) == 0
    assert checks.check_int(np.int64(2), "n", allow_numpy=True) == 2  # kept, now a no-op
    assert checks.check_int(np.int64(2), "n", allow_numpy=False) == 2
    with pytest.raises(ValueError, match="n=-1 must be an int >= 0 or None"):
        checks.check_int(-1, "n", 0, allow_none=True)


@SETTINGS
@given(value=st.floats(1e-30, 1e30), kind=st.sampled_from(REAL_KINDS + INT_KINDS[:5]))
def test_check_positive_takes_python_numpy_and_jax_numbers_and_returns_a_float(value, kind):
    if kind in INT_KINDS:
        value = float(max(1, min(int(value), 100)))
    given_value = kind(value)
    out = checks.check_positive(given_value, "sigma")
    assert type(out) is float and out > 0
    np.testing.assert_allclose(out, float(np.asarray(given_value, np.float64)))
    assert checks.check_finite(-out, "x") == -out


@SETTINGS
@given(value=st.sampled_from([0.0, -1.0, -1e-8, math.nan, math.inf, -math.inf]),
       kind=st.sampled_from(REAL_KINDS))
def test_check_positive_rejects_zero_negative_nan_and_inf_of_every_kind(value, kind):
    with pytest.raises(ValueError, match=r"sigma=.* must be a positive finite number"):
        checks.check_positive(kind(value), "sigma")
    if not math.isfinite(value):
        with pytest.raises(ValueError, match=r"x=.* must be a finite number"):
            checks.check_finite(kind(value), "x")


@pytest.mark.parametrize("bad", [True, np.bool_(True), "1", None, 1j, np.ones(2),
                                 jnp.ones((1,)), jax.random.key(0)])
def test_check_positive_rejects_non_numbers(bad):
    with pytest.raises(ValueError, match="sigma="):
        checks.check_positive(bad, "sigma")
    with pytest.raises(ValueError, match="sigma="):
        checks.check_finite(bad, "sigma")


@pytest.mark.parametrize("check", [lambda v: checks.check_int(v, "num_directions"),
                                   lambda v: checks.check_positive(v, "num_directions"),
                                   lambda v: checks.check_finite(v, "num_directions")])
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.float32])
def test_traced_numbers_are_a_type_error_naming_the_argument(check, dtype):
    with pytest.raises(TypeError, match="num_directions must be a concrete number, not traced"):
        jax.jit(check)(jnp.asarray(3, dtype))


def test_check_callable():
    checks.check_callable(len, "fun")
    with pytest.raises(TypeError, match=r"fun must be callable \(f\(x\)\), got int"):
        checks.check_callable(3, "fun", "f(x)")


def test_check_key_and_params():
    checks.check_key(jax.random.key(0))
    checks.check_key(jax.random.PRNGKey(0))
    for bad in (0, jax.random.split(jax.random.key(0), 2), jnp.zeros(2, jnp.int32)):
        with pytest.raises(TypeError, match="key must be"):
            checks.check_key(bad)
    checks.check_params({"w": jnp.ones(2)}, "why")
    with pytest.raises(ValueError, match="params has no entries: why"):
        checks.check_params({"w": jnp.ones(0)}, "why")
    with pytest.raises(TypeError, match="floating point"):
        checks.check_params({"w": jnp.ones(2, jnp.int32)}, "why")


def test_check_mask_returns_leaves_and_names_a_mask_unlike_params():
    params = {"a": jnp.ones((2, 3)), "b": jnp.ones(4)}
    assert checks.check_mask(None, params) is None
    leaves = checks.check_mask({"a": jnp.zeros((2, 3)), "b": jnp.ones(4)}, params)
    assert [x.shape for x in leaves] == [(2, 3), (4,)]
    with pytest.raises(ValueError, match="structure of params"):
        checks.check_mask({"a": jnp.zeros((2, 3))}, params)
    with pytest.raises(ValueError, match=r"mask leaf shape \(3,\) != param shape \(4,\)"):
        checks.check_mask({"a": jnp.zeros((2, 3)), "b": jnp.ones(3)}, params)


def test_check_scalar_loss_names_the_argument():
    params = {"x": jnp.ones(3)}
    checks.check_scalar_loss(lambda p, y: jnp.sum(p["x"] * y), params, (jnp.ones(3),))
    with pytest.raises(ValueError, match=r"loss must return a scalar loss; it returned \(3,\)"):
        checks.check_scalar_loss(lambda p: p["x"], params, (), "loss")
    with pytest.raises(ValueError, match=r"fun\(params, \*args\) fails"):
        checks.check_scalar_loss(lambda p, y: p["x"] @ y, params, (jnp.ones(4),))


def test_leaf_paths_follow_leaf_order():
    assert checks.leaf_paths({"b": jnp.ones(1), "a": {"k": jnp.ones(2)}}) == ["['a']['k']", "['b']"]


def test_check_bool_takes_python_and_numpy_bools_only():
    assert checks.check_bool(True, "scale") is True
    assert checks.check_bool(np.bool_(False), "scale") is False
    for bad in (0, 1, 1.0, "yes", None, jnp.array(True)):
        with pytest.raises(TypeError, match=r"scale=.* must be True or False"):
            checks.check_bool(bad, "scale")


def test_check_fraction_is_closed_at_0_and_open_at_1():
    # the extremes: 0 and the largest float32 and float64 below 1 pass, 1 does not
    below_one = (np.nextafter(np.float32(1), np.float32(0)), np.nextafter(1.0, 0.0))
    for ok in (0, 0.0, np.float32(0), *below_one, 0.5):
        assert checks.check_fraction(ok, "sparsity") == float(ok)
    for bad in (1, 1.0, -1e-12, math.nan, math.inf, -math.inf, True, "0.5", None):
        with pytest.raises(ValueError, match=r"sparsity=.* must be a number in \[0, 1\)"):
            checks.check_fraction(bad, "sparsity")


def test_check_choice_names_the_allowed_values():
    assert checks.check_choice("layer", "scope", ("layer", "global")) == "layer"
    with pytest.raises(ValueError, match=r"scope='model' is not known; allowed: \['layer', "
                                         r"'global'\]"):
        checks.check_choice("model", "scope", ("layer", "global"))


@pytest.mark.parametrize("value", [np.array(["layer"]), jnp.array(1), ["layer"], {"a": 1},
                                   None, 1.5])
def test_check_choice_refuses_arrays_and_other_types(value):
    # an array equal to an allowed value compares True in `in`, but is not one
    with pytest.raises(ValueError, match=r"scope=.* is not known; allowed"):
        checks.check_choice(value, "scope", ("layer", "global", 1))


def test_check_bool_or_takes_its_names_and_bools_only():
    assert checks.check_bool_or("auto", "fused", ["auto"]) == "auto"
    assert checks.check_bool_or(np.True_, "fused", ["auto"]) is True
    assert checks.check_bool_or(False, "fused", ["auto"], bools=(False,)) is False
    # 1 == True in Python, so `1 in ["auto", True, False]` holds; here it does not
    for bad, bools in [(1, (True, False)), (0, (True, False)), ("yes", (True, False)),
                       (True, (False,)), (None, (True, False)), (np.ones(1), (True, False))]:
        with pytest.raises(ValueError, match=r"fused=.* is not known; allowed: \['auto'"):
            checks.check_bool_or(bad, "fused", ["auto"], bools=bools)
