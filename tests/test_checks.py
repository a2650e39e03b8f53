import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax import checks


def test_check_int_bounds_bools_numpy_and_none():
    checks.check_int(3, "n")
    checks.check_int(0, "n", 0)
    checks.check_int(None, "n", allow_none=True)
    checks.check_int(np.int64(2), "n", allow_numpy=True)
    for bad, kw in [(0, {}), (True, {}), (2.0, {}), (np.int64(2), {}), (None, {}), (-1, {})]:
        with pytest.raises(ValueError, match="n="):
            checks.check_int(bad, "n", **kw)


def test_check_positive_and_callable():
    checks.check_positive(0.5, "sigma")
    for bad in (0, -1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="sigma="):
            checks.check_positive(bad, "sigma")
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
