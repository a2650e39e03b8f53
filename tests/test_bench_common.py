"""bench/common.py: the profile check and the compile cache the suites share."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import pytest

from fold_jax.bench import common


def test_check_profile_names_the_allowed_values():
    assert common.check_profile("quick") == "quick"
    with pytest.raises(ValueError, match=r"profile='fast'.*\['quick', 'full'\]"):
        common.check_profile("fast")


def test_shared_compiles_caches_only_inside_the_block():
    before = jax.config.jax_compilation_cache_dir
    with common.shared_compiles():
        jax.jit(lambda x: x * 3 + 0.25)(jnp.ones(3))
        inside = len(os.listdir(common._CACHE_DIR))
    assert inside >= 1
    assert jax.config.jax_compilation_cache_dir == before  # other code is untouched
    jax.jit(lambda x: x * 7 - 0.5)(jnp.ones(5))
    assert len(os.listdir(common._CACHE_DIR)) == inside


def test_a_program_compiled_inside_is_loaded_the_second_time():
    def f(x):
        return jnp.sin(x) * 5.0 + 1.0

    with common.shared_compiles():
        jax.jit(f).lower(jnp.ones(7)).compile()
        n = len(os.listdir(common._CACHE_DIR))
        jax.jit(f).lower(jnp.ones(7)).compile()  # a fresh jit of the same program
        assert len(os.listdir(common._CACHE_DIR)) == n  # a hit: nothing new written
