"""Shared fixtures: small real tasks and nets, built once per session."""

from typing import ClassVar

import jax
import pytest

from fold_jax import nets, tasks
from fold_jax.perturb import LowRank


@pytest.fixture(scope="session")
def digits():
    return tasks.get("digits")


@pytest.fixture(scope="session")
def digits_net():
    return nets.mlp((64, 128, 128, 10), "relu")


@pytest.fixture(scope="session")
def digits_params(digits_net):
    return digits_net.init(jax.random.key(0))


class Recorder(LowRank):
    """A LowRank that logs each pick's answer and each read of ``a`` (which
    association a layer took, and whether it consumed the factors)."""

    __slots__ = ()
    picks: ClassVar[list[str]] = []  # shared logs, cleared by the recorder fixture
    a_reads: ClassVar[list[int]] = []

    def __getattribute__(self, name):
        if name == "a":
            Recorder.a_reads.append(1)
        return object.__getattribute__(self, name)

    def pick(self, x_shape):
        how = super().pick(x_shape)
        Recorder.picks.append(how)
        return how


jax.tree_util.register_pytree_node_class(Recorder)


@pytest.fixture
def recorder():
    Recorder.picks.clear()
    Recorder.a_reads.clear()
    yield Recorder
    Recorder.picks.clear()
    Recorder.a_reads.clear()
