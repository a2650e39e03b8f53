"""The suite's compile settings (tests/conftest.py): unoptimized XLA by default, full
optimization inside tests marked ``optimized``, and the setting handed to subprocesses."""

import os

import jax
import pytest

UNOPTIMIZED = os.environ.get("FOLD_JAX_TEST_OPTIMIZE", "0") != "1"


def test_an_unmarked_test_compiles_unoptimized():
    assert jax.config.values["jax_disable_most_optimizations"] is UNOPTIMIZED
    assert (os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS") == "1") is UNOPTIMIZED


@pytest.mark.optimized
def test_a_marked_test_compiles_optimized():
    assert jax.config.values["jax_disable_most_optimizations"] is False
