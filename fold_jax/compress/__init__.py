"""Network variants: the flax layer walker, sparse (BCSR) kernels, pruning, binarized networks and
the variants built from them.

Modules: bcsr, binary, binary_kernels, binary_packed, binary_train, prune, variants, walker,
walker_paths. Floor 3: imports only checks, data, estimators, learn and itself
(tests/test_layout.py).
"""
