"""``python -m fold_jax.bench ...``: the benchmark runner (:func:`fold_jax.bench.run.main`)."""

import sys

from fold_jax.bench.run import main

if __name__ == "__main__":
    sys.exit(main())
