"""fold_jax: training without backpropagation, in JAX, measured against it."""

from fold_jax import heads, methods, nets, perturb, tasks, train

__version__ = "0.1.0"

__all__ = ["heads", "methods", "nets", "perturb", "tasks", "train"]
