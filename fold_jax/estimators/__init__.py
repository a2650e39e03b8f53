"""The estimator core: noise, directions and low-rank perturbations, their fused flax layers,
zeroth-order gradients (zo), shaping, SNES, direct search, evosax peers and the Method init/step
pair.

Modules: directions, flax_hooks, flax_layers, flax_linen, flax_nnx, fusion, info, methods,
noise, peers, perturb, search, search_gld, search_one_plus_one, search_relative_loss,
search_rso, search_rule, shaping, snes, zo, zo_estimator, zo_forward, zo_optax, zo_schedule.
Floor 1: imports only checks, data and itself (tests/test_layout.py).
"""
