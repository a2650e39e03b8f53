"""Sharding the directions / population axis over devices (and a data-parallel baseline).

The forward-only methods evaluate a population of perturbed losses per step. Here
that population axis is laid over the devices of a ``jax.sharding.Mesh``: each
device regenerates its own directions from ``fold_in(key, k)`` and evaluates them;
only the per-direction losses (scalars) cross devices, and every device then
assembles the same update from the keys (the OpenAI-ES seed trick). Any population
size works: the axis is padded to a multiple of the device count with copies of
its last element and the padding is sliced off (pad and mask).

The same code runs on one CPU, several GPUs and several hosts: for multi-host runs
call ``jax.distributed.initialize()`` on every host first (docs/scaling.md);
``mesh()`` then spans ``jax.devices()``, all hosts' devices.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, PyTree

from fold_jax.estimators import methods, search, zo

__all__ = [
    "AXIS",
    "data_parallel_gradient",
    "forward_value_and_grad",
    "gld",
    "initialize",
    "mesh",
    "population_map",
    "population_map_factory",
    "rso",
    "shard_batch",
    "value_and_grad",
]

AXIS = "population"


ENV = ("FOLD_JAX_COORDINATOR", "FOLD_JAX_NUM_PROCESSES", "FOLD_JAX_PROCESS_ID")


def initialize(environ: dict[str, str] | None = None) -> bool:
    """Join a multi-host run through ``jax.distributed.initialize`` when asked to.

    Reads ``FOLD_JAX_COORDINATOR`` (host:port of process 0), ``FOLD_JAX_NUM_PROCESSES``
    and ``FOLD_JAX_PROCESS_ID``; ``FOLD_JAX_AUTO=1`` instead lets JAX detect the cluster
    (Slurm, Open MPI, Cloud TPU). Returns True when it initialized, False when none of
    these is set (a single-host run). Call it before any other JAX work.

    Args:
        environ: the environment to read (None: ``os.environ``).

    Returns:
        True when ``jax.distributed.initialize`` was called, else False.
    """
    env = dict(os.environ if environ is None else environ)
    if env.get("FOLD_JAX_AUTO") == "1":
        jax.distributed.initialize()
        return True
    given = [name for name in ENV if env.get(name)]
    if not given:
        return False
    if len(given) != len(ENV):
        missing = sorted(set(ENV) - set(given))
        raise ValueError(f"multi-host run: set all of {list(ENV)}; missing {missing}")
    try:
        n, rank = int(env["FOLD_JAX_NUM_PROCESSES"]), int(env["FOLD_JAX_PROCESS_ID"])
    except ValueError as e:
        raise ValueError("FOLD_JAX_NUM_PROCESSES and FOLD_JAX_PROCESS_ID must be integers") from e
    if n < 1 or not 0 <= rank < n:
        raise ValueError(f"FOLD_JAX_PROCESS_ID={rank} must be in 0..FOLD_JAX_NUM_PROCESSES-1 "
                         f"(= {n - 1})")
    jax.distributed.initialize(env["FOLD_JAX_COORDINATOR"], num_processes=n, process_id=rank)
    return True


def mesh(devices: Sequence[jax.Device] | int | None = None, axis: str = AXIS) -> Mesh:
    """A 1-D mesh named ``axis`` over ``devices`` (all by default; an int takes the first n).

    Args:
        devices: the devices, an int n (the first n of ``jax.devices()``) or None (all).
        axis: the mesh axis's name.

    Returns:
        The ``jax.sharding.Mesh``.
    """
    all_devices = jax.devices()
    if devices is None:
        devices = all_devices
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(all_devices):
            raise ValueError(f"devices={devices} must be in 1..{len(all_devices)} "
                             f"(the devices JAX sees)")
        devices = all_devices[:devices]
    elif (isinstance(devices, str) or not isinstance(devices, Sequence) or not devices
          or not all(isinstance(d, jax.Device) for d in devices)):
        raise TypeError("devices must be None, an int or a non-empty sequence of jax devices")
    if not isinstance(axis, str) or not axis:
        raise ValueError(f"axis={axis!r} must be a non-empty string")
    return Mesh(np.asarray(devices), (axis,))


def _check_mesh(m: Mesh | None, axis: str) -> Mesh:
    m = mesh(axis=axis) if m is None else m
    if not isinstance(m, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(m).__name__}")
    if axis not in m.axis_names:
        raise ValueError(f"axis={axis!r} is not an axis of the mesh; allowed: "
                         f"{list(m.axis_names)}")
    return m


def population_map(
    f: Callable[..., PyTree], mesh: Mesh | None = None, axis: str = AXIS
) -> Callable[..., PyTree]:
    """Like ``jax.vmap(f)`` over the leading axis of every argument, but with that axis
    sharded over ``mesh[axis]``. Inputs (n, ...) are padded to a multiple of the device
    count with copies of the last element; outputs come back (n, ...). ``f`` may close
    over arrays (they are replicated).

    Args:
        f: the function of one element.
        mesh: the device mesh (None: a mesh over every device).
        axis: the mesh axis the leading axis is sharded over.

    Returns:
        The mapped function: arguments (n, ...) -> outputs (n, ...).
    """
    if not callable(f):
        raise TypeError(f"f must be callable (the function mapped over the population), got "
                        f"{type(f).__name__}")
    m = _check_mesh(mesh, axis)
    n_dev = m.shape[axis]
    spec = PartitionSpec(axis)

    def mapped(*xs):
        sizes = {jnp.shape(x)[0] for x in jax.tree.leaves(xs)}
        if len(sizes) != 1:
            raise ValueError(f"population_map: arguments disagree on the leading axis {sizes}")
        (n,) = sizes
        pad = (-n) % n_dev
        padded = jax.tree.map(
            lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x, xs)
        out = jax.shard_map(jax.vmap(f), mesh=m, in_specs=spec, out_specs=spec,
                            check_vma=False)(*padded)
        return jax.tree.map(lambda o: o[:n], out)

    return mapped


def value_and_grad(fun, *, mesh: Mesh | None = None, axis: str = AXIS, **zo_options):
    """:func:`fold_jax.estimators.zo.value_and_grad` with its directions sharded over ``mesh``.

    Each device evaluates its share of the directions (regenerated from keys); the
    (directions x signs) loss matrix is all that crosses devices; the estimate is
    then assembled on every device. Same keys -> the single-device estimate (up to
    float summation order).

    Args:
        fun: the loss, as :func:`fold_jax.estimators.zo.value_and_grad` takes it.
        mesh: the device mesh (None: a mesh over every device).
        axis: the mesh axis the directions are sharded over.
        **zo_options: further options of :func:`fold_jax.estimators.zo.value_and_grad`.

    Returns:
        What :func:`fold_jax.estimators.zo.value_and_grad` returns.
    """
    return zo.value_and_grad(fun, population_map=population_map_factory(mesh, axis),
                             **zo_options)


def forward_value_and_grad(fun, *, mesh: Mesh | None = None, axis: str = AXIS, **options):
    """:func:`fold_jax.estimators.zo.forward_value_and_grad` with tangents sharded over ``mesh``.

    Args:
        fun: the loss, as :func:`fold_jax.estimators.zo.forward_value_and_grad` takes it.
        mesh: the device mesh (None: a mesh over every device).
        axis: the mesh axis the tangents are sharded over.
        **options: further options of :func:`fold_jax.estimators.zo.forward_value_and_grad`.

    Returns:
        What :func:`fold_jax.estimators.zo.forward_value_and_grad` returns.
    """
    return zo.forward_value_and_grad(fun, population_map=population_map_factory(mesh, axis),
                                     **options)


def gld(fun, *, mesh: Mesh | None = None, axis: str = AXIS, **options) -> methods.Method:
    """:func:`fold_jax.estimators.search.gld` with the candidate ladder evaluated across devices.

    Args:
        fun: the loss, as :func:`fold_jax.estimators.search.gld` takes it.
        mesh: the device mesh (None: a mesh over every device).
        axis: the mesh axis the candidates are sharded over.
        **options: further options of :func:`fold_jax.estimators.search.gld`.

    Returns:
        The :class:`fold_jax.estimators.methods.Method`.
    """
    return search.gld(fun, population_map=population_map_factory(mesh, axis), **options)


def rso(fun, *, mesh: Mesh | None = None, axis: str = AXIS, **options) -> methods.Method:
    """:func:`fold_jax.estimators.search.rso` with the candidate blocks evaluated across devices.

    Args:
        fun: the loss, as :func:`fold_jax.estimators.search.rso` takes it.
        mesh: the device mesh (None: a mesh over every device).
        axis: the mesh axis the candidates are sharded over.
        **options: further options of :func:`fold_jax.estimators.search.rso`.

    Returns:
        The :class:`fold_jax.estimators.methods.Method`.
    """
    return search.rso(fun, population_map=population_map_factory(mesh, axis), **options)


def population_map_factory(mesh: Mesh | None = None, axis: str = AXIS) -> zo.PopulationMap:
    """``f -> population_map(f, mesh, axis)`` as a :class:`fold_jax.estimators.zo.PopulationMap`
    whose ``shards`` (the device count along ``axis``) gives each device one row of
    directions: pass ``population_map=population_map_factory(mesh)`` to
    :func:`fold_jax.estimators.zo.value_and_grad` or to the search methods.

    Args:
        mesh: the device mesh (None: a mesh over every device).
        axis: the mesh axis the directions are sharded over.

    Returns:
        The :class:`fold_jax.estimators.zo.PopulationMap`.
    """
    m = _check_mesh(mesh, axis)
    return zo.PopulationMap(lambda f: population_map(f, m, axis), m.shape[axis])


def shard_batch(batch: PyTree, mesh: Mesh | None = None, axis: str = AXIS) -> PyTree:
    """Place a batch with its leading axis split over ``mesh[axis]`` (data parallelism).

    The batch size must divide evenly (JAX's data-parallel contract); a clear
    ValueError says so otherwise.

    Args:
        batch: a pytree of arrays sharing a leading batch axis.
        mesh: the device mesh (None: a mesh over every device).
        axis: the mesh axis the batch is split over.

    Returns:
        The batch placed with a ``NamedSharding`` over ``mesh[axis]``.
    """
    m = _check_mesh(mesh, axis)
    n_dev = m.shape[axis]
    for x in jax.tree.leaves(batch):
        if jnp.shape(x)[0] % n_dev:
            raise ValueError(f"batch leading size {jnp.shape(x)[0]} must be a multiple of the "
                             f"{n_dev} devices on axis {axis!r}")
    sharding = NamedSharding(m, PartitionSpec(axis))
    return jax.device_put(batch, sharding)


def data_parallel_gradient(
    loss: Callable[..., Array], tx: optax.GradientTransformation | str, learning_rate=None
) -> methods.Method:
    """Backprop baseline for the scaling benchmark: :func:`fold_jax.estimators.methods.gradient`.

    Under ``jax.jit`` with the batch placed by :func:`shard_batch` and params
    replicated, XLA computes per-device gradients and all-reduces them (GSPMD); the
    method itself is unchanged, so it goes through :func:`fold_jax.learn.train.fit` too.

    Args:
        loss: ``loss(params, *args) -> scalar``.
        tx: an optax optimizer or an optimizer name.
        learning_rate: the learning rate (only with an optimizer name).

    Returns:
        The :class:`fold_jax.estimators.methods.Method` of
        :func:`fold_jax.estimators.methods.gradient`.
    """
    return methods.gradient(loss, tx, learning_rate)
