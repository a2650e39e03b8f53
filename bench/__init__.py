"""fold_jax benchmarks: suites run by ``python -m bench.run`` (kernel micro-benchmarks,
time-to-target races, variants, probes, scaling, bbob); ``pytest bench`` times the same
kernels with pytest-benchmark."""
