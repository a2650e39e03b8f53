"""fold_jax: training without backpropagation, in JAX, measured against it."""

from fold_jax import heads, methods, nets, perturb, search, tasks, train, zo

__version__ = "0.1.0"

__all__ = ["heads", "methods", "nets", "perturb", "search", "tasks", "train", "zo"]
from fold_jax import binary as binary
from fold_jax import probes as probes
from fold_jax import prune as prune
from fold_jax import regions as regions
from fold_jax import variants as variants
