"""fold_jax's benchmark harness, shipped with the package (``pip install
'fold_jax[bench]'``): ``python -m fold_jax.bench`` runs the suites of
:mod:`fold_jax.bench.suites` (kernel micro-benchmarks, time-to-target races, variants,
probes, scaling, hypotheses, bbob) and rebuilds the report; ``nox -s bench`` calls the
same entry. A researcher's own method enters the races through
:func:`fold_jax.learn.recipes.register` and ``--imports`` (docs/adding-a-method.md).
``pytest bench`` (a checkout's root ``bench/``) times the same kernels with
pytest-benchmark."""
