"""Flax nets with a pure ``apply(params, x)``: MLPs and CNNs with an activation chosen by
name, recurrent nets (:func:`rnn`: flax.linen cells under ``lax.scan``) in the same
style, and language models (:func:`gru_lm`, :func:`transformer_lm`).

Layers multiply through :func:`fold_jax.estimators.perturb.matmul`, so a kernel may be a plain
array or a lazy low-rank perturbation (fused zeroth-order evaluation). Layer ``i`` is
named ``dense_i``; other modules (pruning, probes) rely on that order.

Where each piece lives (every public name is importable from here):
:mod:`fold_jax.learn.nets_mlp` (MLP, CNN, the :class:`Net` type, activations),
:mod:`fold_jax.learn.nets_rnn` (recurrent nets) and :mod:`fold_jax.learn.nets_lm` (language models).
"""

from fold_jax.learn.nets_lm import (
    GRULM,
    TRANSFORMER_PRESETS,
    DecoderBlock,
    LanguageModel,
    TransformerLM,
    gru_lm,
    lm_param_count,
    transformer_lm,
)
from fold_jax.learn.nets_mlp import (
    ACTIVATIONS,
    CNN,
    INITIALIZERS,
    MLP,
    Dense,
    Net,
    activation,
    cnn,
    count_params,
    dense_layers,
    mlp,
)
from fold_jax.learn.nets_rnn import CELLS, RNN, RecurrentNet, rnn

__all__ = [
    "ACTIVATIONS",
    "CELLS",
    "CNN",
    "GRULM",
    "INITIALIZERS",
    "MLP",
    "RNN",
    "TRANSFORMER_PRESETS",
    "DecoderBlock",
    "Dense",
    "LanguageModel",
    "Net",
    "RecurrentNet",
    "TransformerLM",
    "activation",
    "cnn",
    "count_params",
    "dense_layers",
    "gru_lm",
    "lm_param_count",
    "mlp",
    "rnn",
    "transformer_lm",
]
