"""pytest-benchmark entry point over :func:`fold_jax.bench.suites.kernels.kernels`: one test per
kernel of ``--profile``, timed with ``benchmark.pedantic`` on the AOT-compiled callable
(warm-up rounds, rounds of >= 1 ms). Rows for kernels.csv come from ``python -m
fold_jax.bench --only kernels``, which measures the same kernels."""

from __future__ import annotations

import contextlib

import jax
import numpy as np

from fold_jax.bench import timing
from fold_jax.bench.suites import kernels as suite_kernels


def pytest_generate_tests(metafunc):
    if "kernel" in metafunc.fixturenames:
        profile = metafunc.config.getoption("--profile")
        kernels = suite_kernels.kernels(profile)
        metafunc.parametrize("kernel", kernels, ids=[k.label for k in kernels])


def test_kernel(benchmark, kernel, request):
    budget = suite_kernels.BUDGET[request.config.getoption("--profile")]
    context = jax.enable_x64(True) if kernel.x64 else contextlib.nullcontext()
    with context:
        case = kernel.build()
        compiled, compile_s = timing.aot(case.fn, *case.args)
        iterations, per_call = timing.calibrate(compiled, case.args)
        rounds = int(np.clip(budget["max_time_s"] / max(per_call * iterations, 1e-9),
                             budget["min_rounds"], budget["max_rounds"]))
        benchmark.group = kernel.config["bench"]
        benchmark.extra_info.update({k: v for k, v in kernel.config.items() if v is not None})
        benchmark.extra_info.update(compile_s=compile_s, flops=timing.flops(compiled),
                                    mem_bytes=timing.mem_bytes(compiled))
        benchmark.pedantic(lambda: jax.block_until_ready(compiled(*case.args)), rounds=rounds,
                           iterations=iterations, warmup_rounds=2)
