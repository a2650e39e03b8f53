"""The shipped benchmark suites, one module per part of ``python -m fold_jax.bench``
(the contract a suite meets: :mod:`fold_jax.bench.common`)."""
