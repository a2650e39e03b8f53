"""Tasks: your own arrays, real data shipped offline, synthetic sets and optimizer test
functions.

Every data task knows its kind and hence its head (:class:`fold_jax.learn.heads.Head`):
binary, multiclass, multilabel or regression. :func:`from_arrays` turns any ``(x, y)``
into a :class:`Task`, and every built-in data task is built by it: the data is checked
(shapes, NaN/inf, label ranges), split by ``seed`` into train / validation / test
(stratified by class where labels allow), and features are standardized with
statistics of the training split only. The validation split is for tuning (score trials
on it); the test split is for final numbers. Nothing is downloaded: ``digits`` and
``breast_cancer`` are the copies bundled inside scikit-learn.

The test split is drawn first, exactly as versions without a validation split drew it
(``sklearn.model_selection.train_test_split(..., test_size=test_fraction,
random_state=seed, stratify=...)``), so a seed's test examples are unchanged; the
validation split is then carved out of the rest.

Control tasks (:mod:`fold_jax.learn.control`): :func:`get` also takes the control names
(``CONTROL_NAMES``: "cartpole", "acrobot", "pendulum", ...) and any gymnax environment
id ("MountainCar-v0", :func:`fold_jax.learn.control.env_ids`), giving a
:class:`~fold_jax.learn.control.ControlTask` (options: those of
:func:`fold_jax.learn.control.make`).

Typing: :func:`get` is overloaded on the literal name (a data-task name gives a
``Task``, an objective's name an ``Objective``, a control name a ``ControlTask``);
:func:`dataset` and :func:`objective` take any string and always return one type.

Where each piece lives (every public name is importable from here): the task types in
:mod:`fold_jax.learn.tasks_types`, :func:`from_arrays` in :mod:`fold_jax.learn.tasks_arrays`, the
built-in data tasks and objectives in :mod:`fold_jax.learn.tasks_builtin`; this module is the
registry (:func:`get`, :func:`register`, :func:`names`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Literal, get_args, overload

from fold_jax.checks import check_choice
from fold_jax.learn import control
from fold_jax.learn.control import ControlTask
from fold_jax.learn.tasks_arrays import from_arrays
from fold_jax.learn.tasks_builtin import (
    DIGIT_ATTRIBUTES,
    breast_cancer,
    digit_attributes,
    digits,
    objective_builder,
    rastrigin,
    rosenbrock,
    sphere,
    spirals,
    teacher,
)
from fold_jax.learn.tasks_types import Objective, Task

__all__ = [
    "CONTROL_NAMES",
    "DIGIT_ATTRIBUTES",
    "OBJECTIVE_NAMES",
    "TASK_NAMES",
    "ControlName",
    "Objective",
    "ObjectiveName",
    "Task",
    "TaskName",
    "breast_cancer",
    "dataset",
    "digit_attributes",
    "digits",
    "from_arrays",
    "get",
    "names",
    "objective",
    "register",
    "spirals",
    "teacher",
]

TaskName = Literal["digits", "breast_cancer", "digit_attributes", "spirals", "teacher",
                   "shakespeare", "milton"]
ObjectiveName = Literal["sphere", "rosenbrock", "rastrigin"]
ControlName = Literal["acrobot", "breakout_minatar", "cartpole", "cartpole_po",
                      "memory_chain", "mountain_car", "pendulum"]
TASK_NAMES: tuple[str, ...] = get_args(TaskName)
CONTROL_NAMES: tuple[str, ...] = get_args(ControlName)  # fold_jax.learn.control.ALIASES
OBJECTIVE_NAMES: tuple[str, ...] = get_args(ObjectiveName)

_REGISTRY: dict[str, Callable[..., Task | Objective]] = {
    "digits": digits,
    "breast_cancer": breast_cancer,
    "digit_attributes": digit_attributes,
    "spirals": spirals,
    "teacher": teacher,
    "sphere": objective_builder("sphere", sphere, 1.0, 0.0),
    "rosenbrock": objective_builder("rosenbrock", rosenbrock, -1.0, 1.0),
    "rastrigin": objective_builder("rastrigin", rastrigin, 2.5, 0.0),
}


def register(name: str, builder: Callable[..., Task | Objective]) -> None:
    """Make :func:`get` build task ``name`` with ``builder(**options)``: how a module
    that builds on this one adds its tasks without an import circle (fold_jax.learn.text
    registers ``shakespeare`` and ``milton`` when it is imported, which ``import
    fold_jax`` does).

    Args:
        name: the task name (a name already registered is refused).
        builder: called with ``get``'s options; returns a Task or an Objective.

    Raises:
        ValueError: ``name`` is taken, or is not a non-empty string.
        TypeError: ``builder`` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in _REGISTRY or name in CONTROL_NAMES:
        raise ValueError(f"task name {name!r} is already registered")
    if not callable(builder):
        raise TypeError(f"builder must be callable, got {type(builder).__name__}")
    _REGISTRY[name] = builder


def names() -> list[str]:
    """The sorted names of every registered task, objective and control task (what
    :func:`get` accepts, besides any gymnax environment id).

    Returns:
        The names, sorted.
    """
    return sorted([*_REGISTRY, *CONTROL_NAMES])


@overload
def get(name: TaskName, **options: Any) -> Task: ...
@overload
def get(name: ObjectiveName, **options: Any) -> Objective: ...
@overload
def get(name: ControlName, **options: Any) -> ControlTask: ...
@overload
def get(name: str, **options: Any) -> Task | Objective | ControlTask: ...


def get(name: str, **options: Any) -> Task | Objective | ControlTask:
    """The task called ``name`` built with ``options`` (seed, test_fraction,
    val_fraction, dim, ...).

    Typed by name: a literal data-task name (``TaskName``) gives a :class:`Task`, an
    objective's (``ObjectiveName``) an :class:`Objective`, a control name
    (``ControlName``) a :class:`~fold_jax.learn.control.ControlTask`; for a name held in a
    ``str`` variable use :func:`dataset` or :func:`objective` to get one type.

    Args:
        name: a task, objective or control name (one of :func:`names`), or a gymnax
            environment id (:func:`fold_jax.learn.control.env_ids`, e.g. "MountainCar-v0").
        **options: options of that task's builder (unknown ones are a ValueError).

    Returns:
        A :class:`Task` for a data-task name, an :class:`Objective` for an objective's,
        a :class:`~fold_jax.learn.control.ControlTask` for a control name or gymnax id.

    Raises:
        ValueError: an unknown name (listing the known ones) or unknown options.
    """
    if isinstance(name, str) and name not in _REGISTRY and (
            name in CONTROL_NAMES or name in control.DOWNLOADS or name in control.env_ids()):
        make: Callable[..., Any] = functools.partial(control.make, name)
    else:
        try:
            check_choice(name, "task name", names())
        except ValueError as error:
            raise ValueError(f"{error} (or a gymnax environment id, "
                             f"fold_jax.control.env_ids())") from None
        make = _REGISTRY[name]
    allowed = set(inspect.signature(make).parameters)
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"task {name!r} got unknown options {sorted(unknown)}; "
                         f"allowed: {sorted(allowed)}")
    return make(**options)


def dataset(name: str, **options: Any) -> Task:
    """The built-in data task ``name`` (one of ``TASK_NAMES``), always a :class:`Task`.

    Args:
        name: a data-task name (one of ``TASK_NAMES``).
        **options: the task's build options (as in :func:`get`).

    Returns:
        The :class:`Task`.

    Raises:
        ValueError: ``name`` is not a data task (an objective's name included).
    """
    if not isinstance(name, str) or name not in TASK_NAMES:
        raise ValueError(f"dataset name={name!r} is not a data task; allowed: "
                         f"{sorted(TASK_NAMES)}")
    task = get(name, **options)
    assert isinstance(task, Task)
    return task


def objective(name: str, dim: int = 10) -> Objective:
    """The test function ``name`` (one of ``OBJECTIVE_NAMES``) in ``dim`` dimensions.

    Args:
        name: an objective name (one of ``OBJECTIVE_NAMES``).
        dim: the number of dimensions.

    Returns:
        The :class:`Objective`.

    Raises:
        ValueError: ``name`` is not an objective (a data task's name included), or a
            bad ``dim``.
    """
    check_choice(name, "objective name", sorted(OBJECTIVE_NAMES))
    f = get(name, dim=dim)
    assert isinstance(f, Objective)
    return f
