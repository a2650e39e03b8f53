"""fold_jax benchmarks: pytest-benchmark kernels (``pytest bench``) and suites run by
``python -m bench.run`` (time-to-target races, variants, probes, scaling)."""
