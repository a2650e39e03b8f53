"""Tasks and training: datasets, control and text tasks, heads, nets, the one training loop,
compiled programs, the device-parallel population, LM pretraining, PPO, and the recipes (named
methods with their search spaces) that train and report read.

Modules: control, gutenberg, heads, nets, nets_lm, nets_mlp, nets_rnn, parallel, policies, ppo,
pretrain, programs, recipes, recipes_shipped, recipes_space, suite_recipes, tasks, tasks_arrays,
tasks_builtin, tasks_types, text, train. Floor 2: imports only checks, data, estimators and
itself (tests/test_layout.py).
"""
