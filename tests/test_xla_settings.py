"""The suite's compile settings (tests/conftest.py): legacy CPU fusion emitters where
jaxlib takes the flag, unoptimized XLA by default, full optimization inside tests marked
``optimized``, and the settings handed to subprocesses."""

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


def test_the_fast_compile_flag_is_set_when_this_jaxlib_takes_it():
    from conftest import FAST_COMPILE_FLAG

    taken = os.environ["FOLD_JAX_TEST_FAST_COMPILE"] == "1"
    assert (FAST_COMPILE_FLAG in os.environ.get("XLA_FLAGS", "")) is taken
