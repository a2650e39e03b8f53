"""bench/common.py: the profile check, the compile cache and the job-list builder the suites
share."""

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


def test_config_jobs_makes_one_job_per_item_that_measures_that_item():
    configs = [{"model": "tiny", "seq_len": 64}, {"model": "small", "seq_len": 128}]
    seen = []
    jobs = list(common.config_jobs(configs, run=lambda c: seen.append(c) or [dict(c)],
                                   label=lambda c: c["model"], cost=lambda c: c["seq_len"] / 64))
    assert [j.key for j in jobs] == configs and [j.label for j in jobs] == ["tiny", "small"]
    assert [j.cost for j in jobs] == [1.0, 2.0]
    assert jobs[0].key is not configs[0]  # a copy: a suite changing its config later is safe
    assert jobs[1].run() == [configs[1]] and seen == [configs[1]]  # nothing runs until asked
    keyed = list(common.config_jobs([("a", {"x": 1})], key=lambda t: t[1], run=lambda t: [],
                                    label=lambda t: t[0], cost=lambda t: 0.5))
    assert keyed[0].key == {"x": 1} and keyed[0].label == "a"


def test_config_label_skips_unset_columns_and_keeps_their_order():
    columns = (("bench", ""), ("width", "w"), ("chunk_size", "chunk"), ("sparsity", "s"))
    config = {"bench": "zo", "width": 32, "chunk_size": None, "sparsity": 0.0}
    assert common.config_label(config, columns) == "zo/w32/s0.0"  # 0.0 is set, None is not
    assert common.config_label({"width": 8}, columns, sep=" ") == "w8"


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
