"""fold_jax: training without backpropagation, in JAX, measured against it.

The package by layer; each folder imports only from the folders above it here:

- ``checks``: argument checks shared by every layer (and ``data/``, the shipped
  corpora).
- ``estimators`` (directions, flax_hooks, flax_layers, flax_linen, flax_nnx, fusion,
  info, methods, noise, peers, perturb, search, search_gld, search_one_plus_one,
  search_relative_loss, search_rso, search_rule, shaping, snes, zo, zo_estimator,
  zo_forward, zo_optax, zo_schedule): the estimator core: noise, directions and low-rank
  perturbations, their fused flax layers, zeroth-order gradients (zo), shaping, SNES,
  direct search, evosax peers and the Method init/step pair.
- ``learn`` (control, gutenberg, heads, nets, nets_lm, nets_mlp, nets_rnn, parallel,
  policies, ppo, pretrain, programs, recipes, recipes_shipped, recipes_space,
  suite_recipes, tasks, tasks_arrays, tasks_builtin, tasks_types, text, train): tasks
  and training: datasets, control and text tasks, heads, nets, the one training loop,
  compiled programs, the device-parallel population, LM pretraining, PPO, and the
  recipes (named methods with their search spaces) that train and report read.
- ``analysis`` (probes, regions): probes of trained networks: representation probes and
  linear regions.
- ``compress`` (bcsr, binary, binary_kernels, binary_packed, binary_train, prune,
  variants, walker, walker_paths): network variants: the flax layer walker, sparse
  (BCSR) kernels, pruning, binarized networks and the variants built from them.
- ``results`` (the results store), ``report`` (the report; needs matplotlib, imported on
  demand) and ``bench`` (the harness, ``python -m fold_jax.bench``; holds timing).

Every module keeps its old flat name: ``fj.zo``, ``import fold_jax.zo`` and ``from
fold_jax.zo import x`` name ``fold_jax.estimators.zo`` (:data:`FLAT_NAMES`).
"""

from fold_jax import checks, results
from fold_jax.analysis import probes, regions
from fold_jax.bench import timing
from fold_jax.compress import (
    bcsr,
    binary,
    binary_kernels,
    binary_packed,
    binary_train,
    prune,
    variants,
    walker,
    walker_paths,
)
from fold_jax.estimators import (
    directions,
    flax_hooks,
    flax_layers,
    flax_linen,
    flax_nnx,
    fusion,
    info,
    methods,
    noise,
    peers,
    perturb,
    search,
    search_gld,
    search_one_plus_one,
    search_relative_loss,
    search_rso,
    search_rule,
    shaping,
    snes,
    zo,
    zo_estimator,
    zo_forward,
    zo_optax,
    zo_schedule,
)
from fold_jax.learn import (
    control,
    gutenberg,
    heads,
    nets,
    nets_lm,
    nets_mlp,
    nets_rnn,
    parallel,
    policies,
    ppo,
    pretrain,
    programs,
    recipes,
    recipes_shipped,
    recipes_space,
    suite_recipes,
    tasks,
    tasks_arrays,
    tasks_builtin,
    tasks_types,
    text,
    train,
)


def _alias_flat_names(namespace: dict) -> tuple[str, ...]:
    """Register each module imported here from a folder under its old flat name.

    The flat name (``zo`` of this package) becomes another name of the module in its
    folder (``estimators.zo``) in ``sys.modules``: one module object, so importing the
    flat name, importing from it, ``monkeypatch.setattr`` on it and pickles naming it
    keep working. The package's own code imports the new homes.

    Args:
        namespace: this module's globals.

    Returns:
        The flat names registered, sorted.
    """
    import sys
    from types import ModuleType

    flat = {f"{__name__}.{name}": module for name, module in namespace.items()
            if isinstance(module, ModuleType) and module.__name__.startswith(__name__ + ".")
            and module.__name__ != f"{__name__}.{name}"}
    sys.modules.update(flat)
    return tuple(sorted(flat))


FLAT_NAMES = _alias_flat_names(globals())

__version__ = "0.1.0"

__all__ = [
    "FLAT_NAMES",
    "analysis",
    "bench",
    "checks",
    "compress",
    "estimators",
    "learn",
    "results",
]
