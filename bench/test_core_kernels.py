"""Core kernels on the digits MLP: a forward pass and a backprop (Adam) gradient step.

Each gradient-step row also times plain inference on the same batch in the same test
(frac_of_inference = inference time / step time: how many forward passes a step costs).
"""

from __future__ import annotations

import jax
import optax
import pytest

from fold_jax import methods, nets, tasks

WIDTHS = {"quick": [32, 128], "full": [32, 128, 512]}
BATCHES = {"quick": [32, 256], "full": [8, 32, 128, 512]}


def pytest_generate_tests(metafunc):
    if {"width", "batch_size"} <= set(metafunc.fixturenames):
        profile = metafunc.config.getoption("--profile")
        configs = [(w, b) for w in WIDTHS[profile] for b in BATCHES[profile]]
        metafunc.parametrize(("width", "batch_size"), configs)


@pytest.fixture(scope="module")
def digits():
    return tasks.get("digits")


def _setup(task, width, batch_size):
    net = nets.mlp((task.n_features, width, width, task.n_outputs), "relu")
    params = net.init(jax.random.key(0))
    idx = jax.numpy.arange(batch_size) % task.n_train
    return net, params, task.x_train[idx], task.y_train[idx]


def test_forward(kernel_row, digits, width, batch_size):
    net, params, x, _ = _setup(digits, width, batch_size)
    kernel_row(bench="forward", fn=net.apply, args=(params, x), method="inference",
               n_params=nets.count_params(params), batch_size=batch_size, width=width,
               inference=(net.apply, (params, x)))


def test_backprop_step(kernel_row, digits, width, batch_size):
    net, params, x, y = _setup(digits, width, batch_size)
    method = methods.gradient(digits.loss_fn(net.apply), optax.adam(1e-3))
    state = method.init(params)
    key = jax.random.key(1)
    kernel_row(bench="gradient_step", fn=method.step, args=(state, key, x, y), method="adam",
               n_params=nets.count_params(params), batch_size=batch_size, width=width,
               inference=(net.apply, (params, x)))
