"""fold_jax.estimators.info: typed diagnostics that read like the dicts they replaced."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from fold_jax.estimators import info, zo


def loss(p, x):
    return jnp.mean((x @ p["w"]) ** 2)


@pytest.mark.parametrize("builder", [
    lambda: zo.value_and_grad(loss, num_directions=6, sigma=1e-2),
    lambda: zo.forward_value_and_grad(loss, num_directions=6)])
def test_estimates_report_a_typed_info_that_reads_like_a_dict(builder):
    params, x = {"w": jnp.ones((4, 2))}, jnp.ones((3, 4))
    _, _, got = jax.jit(builder().with_info)(params, jax.random.key(0), x)
    assert isinstance(got, info.EstimateInfo)  # a NamedTuple: a pytree through jit
    assert int(got.valid_directions) == 6 and int(got.dropped_directions) == 0
    assert got["valid_directions"] is got.valid_directions and "dropped_directions" in got
    assert dict(got) == {"valid_directions": got.valid_directions,
                         "dropped_directions": got.dropped_directions}
    assert got.get("missing", 7) == 7
    with pytest.raises(KeyError, match="valid_directions"):  # names what it has
        got["missing"]
