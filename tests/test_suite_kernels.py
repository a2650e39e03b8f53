"""fold_jax.bench.suites.kernels: the kernel micro-benchmarks as an ordinary bench.run suite (same
rows, resume and run ids as every suite), their column meanings, and the pytest-benchmark
entry point over the same kernels."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest

from fold_jax import results
from fold_jax.bench import run
from fold_jax.bench.common import shared_compiles
from fold_jax.bench.suites import kernels as suite_kernels

ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["pytester"]  # the pytest-benchmark entry point runs in this process


@functools.cache
def quick() -> list:
    """The quick profile's kernels, listed on first use (listing compiles ~70 programs,
    a search step among them to count its evaluations: not at collection, where every
    worker would pay for it). The programs go into this process's on-disk XLA cache
    (bench.common.shared_compiles), which the pytest-benchmark child process reads."""
    with shared_compiles():
        return suite_kernels.kernels("quick")


def by_label(label: str):
    return {k.label: k for k in quick()}[label]


def test_quick_profile_lists_the_reference_benches_once_each():
    labels = [k.label for k in quick()]
    assert len(labels) == len(set(labels))
    configs = [results.normalize_key(k.config, suite_kernels.CONFIG) for k in quick()]
    assert len(configs) == len(set(configs))  # one row per key
    assert all(list(k.config) == suite_kernels.CONFIG for k in quick())
    assert suite_kernels.KEY == results.key("kernels")
    methods = {(k.config["bench"], k.config["method"]) for k in quick()}
    assert {("zo_fused_lowrank", "zo_gaussian_fused_default"),
            ("zo_fused_flax", "zo_gaussian_fused_linen"), ("xnor_matmul", "xnor_packed"),
            ("bcsr_matmul", "bcsr"), ("forward", "inference"), ("gradient_step", "adam"),
            ("search_step", "gld"), ("forward_gradient_step", "forward_gradient")} <= methods
    fused = {k.config["chunk_size"] for k in quick()
             if k.config["method"] == "zo_gaussian_fused" and k.config["rank"] == 4}
    assert fused == {128, 16}  # rank 4, K = 128: one chunk and 16 evaluations a chunk
    assert len(quick()) == 57 and 100 < sum(k.cost for k in quick()) < 250


def test_chunk_size_and_rank_mean_one_thing_each():
    for k in quick():
        c = k.config
        if c["bench"].startswith("zo_") and c["method"] != "inference":
            assert 0 < c["chunk_size"] <= c["num_directions"], k.label  # evaluations a chunk
            assert c["rank"] in (0, 4), k.label  # 0: full-rank noise
            assert (c["rank"] == 4) == ("_r4" in c["method"] or "fused" in c["method"])
        if c["bench"] in ("forward", "gradient_step", "xnor_matmul", "bcsr_matmul"):
            assert c["rank"] is None and c["chunk_size"] is None, k.label  # no perturbation
    assert suite_kernels.chunk_used(128, None) == 128
    assert suite_kernels.chunk_used(128, 16) == 16
    assert suite_kernels.mlp_params(128) == 26122


@pytest.mark.parametrize("label", ["forward/inference/w32/b32",
                                   "bcsr_matmul/bcsr/b256/s0.99/256x1024x1024/feature_major"])
def test_measured_rows_are_described_and_their_ratios_follow_the_schema(label):
    row = suite_kernels.measure(by_label(label))
    assert results.undescribed("kernels", row) == []
    assert set(results.SCHEMAS["kernels"]) <= set(row)
    assert row["step_median_s"] > 0 and row["compile_s"] > 0 and row["rounds"] >= 10
    if row["bench"] == "bcsr_matmul":  # against dense, not inference
        assert math.isnan(row["frac_of_inference"]) and math.isnan(row["inference_equiv_s"])
        assert row["speedup_vs_dense"] == pytest.approx(row["dense_median_s"]
                                                        / row["step_median_s"])
        assert row["n_params"] == by_label(label).config["n_params"]
    else:
        assert math.isnan(row["speedup_vs_dense"])
        assert row["frac_of_inference"] == pytest.approx(row["inference_equiv_s"]
                                                         / row["step_median_s"])
        assert row["flops"] > 0 and row["mem_bytes"] > 0


def test_a_key_that_differs_from_the_built_kernel_fails_loudly():
    kernel = by_label("forward/inference/w32/b32")
    wrong = kernel._replace(config={**kernel.config, "n_params": 1})
    with pytest.raises(RuntimeError, match="n_params"):
        suite_kernels.measure(wrong)


def test_kernels_run_under_bench_run_and_resume_within_the_run(tmp_path, capsys):
    argv = ["--results-dir", str(tmp_path), "--no-report", "--only", "kernels",
            "-k", "forward/inference/w32/b32"]
    suites = {"kernels": suite_kernels}
    assert run.main(argv, suites=suites) == 0
    assert "kernels: 1 jobs to run, 0 already written" in capsys.readouterr().out
    frame = results.load(tmp_path / "kernels.csv")
    assert len(frame) == 1 and frame["bench"].iloc[0] == "forward"
    assert frame["profile"].iloc[0] == "quick"
    (rid,) = set(frame["run_id"])
    assert results.runs(tmp_path).set_index("run_id").loc[rid, "status"] == "finished"
    assert run.main(argv, suites=suites) == 0  # a new run measures it again
    assert "1 jobs to run, 0 already written" in capsys.readouterr().out
    assert results.load(tmp_path / "kernels.csv")["run_id"].nunique() == 2
    todo, n_done = run.pending(suite_kernels, "quick", str(tmp_path), "forward/inference/w32/b32",
                               rid)
    assert (todo, n_done) == ([], 1)  # within its run the row counts as done


def test_discover_puts_kernels_first():
    names = run.discover()
    assert names[0] == "kernels" and {"probes", "races", "variants"} <= set(names)
    assert names[1:] == sorted(names[1:])


def test_pytest_benchmark_times_the_same_kernels(pytester):
    """``pytest bench`` (bench/conftest.py and bench/test_kernels.py under pytest-benchmark),
    run in this process by pytester: a child process paid the imports and plugin start-up
    again (measured back to back on a shared 2-core CPU: 7-15 s as a child, 1-3 s in
    process; the file's CPU time 27-29 s -> 20-22 s). It lists the same
    kernels as quick() did here (as many, one selected by label), inside the same on-disk
    XLA cache (bench.common.shared_compiles), so the programs the listing compiles are
    loaded instead of compiled again (the cache is keyed by the program, the backend and
    the compile options: a program that differs compiles as usual)."""
    quick()  # listed here first (a no-op when an earlier test did): the cache is filled
    with shared_compiles():
        out = pytester.runpytest_inprocess(
            str(ROOT / "bench"), "-q", "-p", "no:cacheprovider",
            "-k", "forward/inference/w32/b32", "--benchmark-disable")
    out.assert_outcomes(passed=1, deselected=len(quick()) - 1)
    assert not (pytester.path / "results").exists()  # pytest bench writes no rows
