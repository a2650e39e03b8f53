"""Shared fixtures: small real tasks and nets, built once per session."""

import jax
import pytest

from fold_jax import nets, tasks


@pytest.fixture(scope="session")
def digits():
    return tasks.get("digits")


@pytest.fixture(scope="session")
def digits_net():
    return nets.mlp((64, 128, 128, 10), "relu")


@pytest.fixture(scope="session")
def digits_params(digits_net):
    return digits_net.init(jax.random.key(0))
