import sys

from fold_jax.report import main

sys.exit(main())
