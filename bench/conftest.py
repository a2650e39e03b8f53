"""pytest-benchmark view of the kernel micro-benchmarks: ``pytest bench [--profile full]``.

The kernels are those of :mod:`fold_jax.bench.suites.kernels` (the ``kernels`` part of
``python -m fold_jax.bench``, which writes ``results/kernels.csv``); here pytest-benchmark
times the same compiled callables and prints its own tables (``--benchmark-json`` to
keep them). Nothing is written to ``results/``.
"""

from __future__ import annotations

import jax


def pytest_addoption(parser):
    group = parser.getgroup("fold_jax")
    group.addoption("--profile", choices=("quick", "full"), default="quick",
                    help="benchmark profile: quick (default) or full")


def pytest_benchmark_update_machine_info(config, machine_info):
    import jaxlib

    machine_info["jax_backend"] = jax.default_backend()
    machine_info["jax_device_kind"] = jax.devices()[0].device_kind
    machine_info["jax_device_count"] = jax.device_count()
    machine_info["jax_version"] = jax.__version__
    machine_info["jaxlib_version"] = getattr(jaxlib, "__version__", "unknown")
