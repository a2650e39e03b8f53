"""``python -m fold_jax.bench ...``: the benchmark runner (:func:`fold_jax.bench.run.main`)."""

import sys

from fold_jax.bench.run import main

sys.exit(main())
