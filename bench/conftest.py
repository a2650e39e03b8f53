"""pytest-benchmark micro-benchmarks of fold_jax kernels: ``pytest bench``.

Options: ``--profile {quick,full}`` (quick by default) and ``--results-dir`` (default
``results``). Each benchmark that uses the ``kernel_row`` fixture appends one row to
``<results-dir>/kernels.csv`` and is skipped when that row is already there, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import pytest

from fold_jax import results, timing

KERNELS_KEY = ["bench", "method", "variant", "n_params", "batch_size", "num_directions",
               "rank", "sparsity", "dtype", *results.MACHINE_KEY]

# rounds / time budget per benchmark by profile
_BUDGET = {"quick": dict(min_rounds=5, max_rounds=50, max_time_s=0.25),
           "full": dict(min_rounds=10, max_rounds=500, max_time_s=2.0)}


def pytest_addoption(parser):
    group = parser.getgroup("fold_jax")
    group.addoption("--profile", choices=("quick", "full"), default="quick",
                    help="benchmark profile: quick (default) or full")
    group.addoption("--results-dir", default="results",
                    help="directory of the results CSVs (default: results)")


def pytest_benchmark_update_machine_info(config, machine_info):
    import jaxlib

    machine_info["jax_backend"] = jax.default_backend()
    machine_info["jax_device_kind"] = jax.devices()[0].device_kind
    machine_info["jax_device_count"] = jax.device_count()
    machine_info["jax_version"] = jax.__version__
    machine_info["jaxlib_version"] = getattr(jaxlib, "__version__", "unknown")


@pytest.fixture(scope="session")
def profile(request) -> str:
    """The benchmark profile, "quick" or "full"."""
    return request.config.getoption("--profile")


@pytest.fixture(scope="session")
def results_dir(request) -> str:
    return request.config.getoption("--results-dir")


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


@pytest.fixture
def kernel_row(benchmark, profile, results_dir) -> Callable[..., dict | None]:
    """``kernel_row(bench=, fn=, args=, method=, variant="dense", n_params=None,
    batch_size=None, num_directions=None, rank=None, sparsity=None, dtype="float32",
    inference=(g, g_args) or None, evals=None, baseline=None, **extra) -> row``

    Skips the test when the row (bench, config, extra config, backend) is in
    kernels.csv. Otherwise AOT-compiles ``fn`` (compile_s), times the compiled callable
    with ``benchmark.pedantic`` (warm-up rounds, rounds of >= 1 ms), reads FLOPs and
    memory from the compiled object and appends the row. With ``inference`` the step
    and the inference are then timed again in alternating rounds (same machine state)
    and the row's step_median_s / step_iqr_s / rounds and inference_equiv_s come from
    those rounds: frac_of_inference = inference_equiv_s / step_median_s is a paired,
    same-time ratio (pytest-benchmark's own stats keep the first timing). ``extra`` is
    configuration (part of the key and extra_info). ``baseline=(name, fn, args)``
    joins those alternating rounds: speedup_vs_baseline = baseline_median_s /
    step_median_s. inference_mem_bytes is the inference's compiled memory (same
    measure as mem_bytes). ``evals`` is examples evaluated
    per call (default num_directions * batch_size, or batch_size): evals_per_s =
    evals / step_median_s.
    """
    used = []

    def row(*, bench: str, fn: Callable, args: tuple = (), method: str,
            variant: str = "dense", n_params: int | None = None,
            batch_size: int | None = None, num_directions: int | None = None,
            rank: int | None = None, sparsity: float | None = None, dtype: str = "float32",
            inference: tuple[Callable, tuple] | None = None, evals: float | None = None,
            baseline: tuple[str, Callable, tuple] | None = None, **extra) -> dict:
        if used:
            raise RuntimeError("kernel_row may be called once per test (one benchmark each)")
        used.append(True)
        config = {"bench": bench, "method": method, "variant": variant, "n_params": n_params,
                  "batch_size": batch_size, "num_directions": num_directions, "rank": rank,
                  "sparsity": sparsity, "dtype": dtype,
                  **{k: _scalar(v) for k, v in sorted(extra.items())}}
        meta = results.metadata()
        key = {**config, **{k: meta[k] for k in results.MACHINE_KEY}}
        if results.done("kernels", key, results_dir):
            pytest.skip(f"already in {results_dir}/kernels.csv: {bench}")
        benchmark.extra_info.update({k: v for k, v in config.items() if v is not None})
        benchmark.group = bench

        compiled, compile_s = timing.aot(fn, *args)
        iterations, per_call = timing.calibrate(compiled, args)
        budget = _BUDGET[profile]

        def call():
            return jax.block_until_ready(compiled(*args))

        per_round = max(per_call * iterations, 1e-9)
        rounds = int(np.clip(budget["max_time_s"] / per_round, budget["min_rounds"],
                             budget["max_rounds"]))
        benchmark.pedantic(call, rounds=rounds, iterations=iterations, warmup_rounds=2)
        stats = getattr(getattr(benchmark, "stats", None), "stats", None)
        if stats is not None:
            median, iqr, n_rounds = float(stats.median), float(stats.iqr), int(stats.rounds)
        else:  # --benchmark-disable: time it ourselves
            times = timing.time_rounds(compiled, args, iterations=iterations, rounds=rounds,
                                       block_each=True)
            q1, median, q3 = np.percentile(times, [25, 50, 75])
            median, iqr, n_rounds = float(median), float(q3 - q1), rounds

        inference_s = inference_compile_s = inference_mem = baseline_s = math.nan
        if inference is not None:  # the ratios: all timed in alternating rounds
            calls = [(compiled, args), inference] + ([baseline[1:]] if baseline else [])
            t_step, t_inf, *t_base = timing.interleaved(
                calls, block_each=True, min_rounds=max(10, budget["min_rounds"]),
                max_rounds=budget["max_rounds"], max_time_s=2 * len(calls) * budget["max_time_s"])
            median, iqr, n_rounds = t_step.median_s, t_step.iqr_s, t_step.rounds
            inference_s, inference_compile_s = t_inf.median_s, t_inf.compile_s
            inference_mem = t_inf.mem_bytes
            baseline_s = t_base[0].median_s if t_base else math.nan
        elif baseline is not None:
            raise ValueError("baseline= needs inference= (they are timed together)")
        if evals is None and batch_size is not None:
            evals = (num_directions or 1) * batch_size
        out = {
            **config,
            "compile_s": compile_s,
            "step_median_s": median,
            "step_iqr_s": iqr,
            "rounds": n_rounds,
            "iterations": iterations,
            "evals_per_s": evals / median if evals else math.nan,
            "flops": timing.flops(compiled),
            "mem_bytes": timing.mem_bytes(compiled),
            "inference_equiv_s": inference_s,
            "inference_compile_s": inference_compile_s,
            "frac_of_inference": inference_s / median,
            "inference_mem_bytes": inference_mem,
            "baseline": baseline[0] if baseline else "",
            "baseline_median_s": baseline_s,
            "speedup_vs_baseline": baseline_s / median,
            "profile": profile,
        }
        benchmark.extra_info.update({k: out[k] for k in ("compile_s", "flops", "mem_bytes",
                                                          "inference_equiv_s",
                                                          "frac_of_inference")})
        results.append("kernels", [out], key=KERNELS_KEY + sorted(extra), results_dir=results_dir)
        return out

    return row
