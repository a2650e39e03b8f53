"""The BBOB problems of the bbob suite (:mod:`fold_jax.bench.suites.bbob`): COCO's reference
functions (``cocoex``), each run's evaluation record (:class:`Tracker`: the budget, the
precision targets hit, the improvements COCO's observer needs), the JAX loss that evaluates
a bound problem on the host (:func:`bbob_loss`), and the replay of a finished run through
COCO's observer into ``$FOLD_JAX_BBOB_COCO_DIR`` (:func:`replay`); and where each run starts
(:class:`Problem`, :func:`seed_of`, :func:`start_point`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fold_jax import results
from fold_jax.report.bbob import TARGETS

__all__ = ["COCO_DIR_DEFAULT", "COCO_DIR_ENV", "START_HIGH", "START_LOW", "TRIGGERS_PER_DECADE",
           "Problem", "Tracker", "bare_problem", "bbob_loss", "bound", "coco_dir", "coco_observer",
           "f_opt", "new_slot", "new_tracker", "replay", "seed_of", "start_point"]

TRIGGERS_PER_DECADE = 100  # COCO's bbob observer default (number_target_triggers)
COCO_DIR_ENV = "FOLD_JAX_BBOB_COCO_DIR"
COCO_DIR_DEFAULT = "results/bbob_coco"
START_LOW, START_HIGH = -4.0, 4.0  # start points: uniform in COCO's region of interest


def _level(precision: float) -> float:
    """COCO's target-trigger index of a precision (100 per decade; -inf at 0)."""
    if precision <= 0:
        return -math.inf
    return math.floor(TRIGGERS_PER_DECADE * math.log10(precision))


@dataclasses.dataclass


class Tracker:
    """One run's evaluation record: every evaluation goes through :meth:`evaluate`.

    Attributes:
        problem: ``problem(x) -> f`` (a cocoex ``BareProblem``).
        f_opt: the function's optimal value.
        budget: evaluations allowed; later ones are refused.
        count: evaluations made so far.
        best: best precision ``f - f_opt`` so far (float64).
        hits: per target of ``TARGETS``, the evaluation that first reached it (inf: not yet).
        improvements: ``(count, x, precision)`` of each new best at a new COCO trigger
            level (what the COCO replay needs).
        kept_x, kept: the point a comparison-based method keeps (the first evaluated
            point of lowest float32 precision, as JAX sees it) and its precision: its
            exact re-evaluation is answered from memory, uncounted.
    """

    problem: Callable[[np.ndarray], float]
    f_opt: float
    budget: int
    count: int = 0
    best: float = math.inf
    hits: list[float] = dataclasses.field(default_factory=lambda: [math.inf] * len(TARGETS))
    improvements: list[tuple[int, np.ndarray, float]] = dataclasses.field(default_factory=list)
    kept_x: np.ndarray | None = None
    kept: float = math.inf

    @property
    def solved(self) -> bool:
        """Whether the final target (1e-8) was reached."""
        return self.hits[-1] < math.inf

    @property
    def closed(self) -> bool:
        """Whether the run is over: budget spent or final target reached."""
        return self.count >= self.budget or self.solved

    def evaluate(self, x: np.ndarray) -> float:
        """The precision ``f(x) - f_opt`` of ``x``, recorded; inf (not counted) once the
        run is closed; the kept point re-evaluated bit for bit comes from memory."""
        x = np.asarray(x)
        if self.kept_x is not None and x.dtype == self.kept_x.dtype and np.array_equal(
                x, self.kept_x):
            return self.kept
        if self.closed:
            return math.inf
        precision = float(self.problem(x.astype(np.float64))) - self.f_opt
        self.count += 1
        if np.float32(precision) < np.float32(self.kept):  # strict, first of ties: as JAX
            self.kept_x, self.kept = x.copy(), precision
        if precision < self.best:
            if not self.improvements or _level(precision) < _level(self.improvements[-1][2]):
                self.improvements.append((self.count, x.copy(), precision))
            self.best = precision
            for j, target in enumerate(TARGETS):
                if self.hits[j] == math.inf and precision <= target:
                    self.hits[j] = float(self.count)
        return precision


_TRACKERS: dict[int, Tracker] = {}  # problem slot (the int32 loss argument) -> tracker
_SLOTS = [0]


def new_slot() -> int:
    """A fresh problem slot (an id :func:`bbob_loss` takes).

    Returns:
        The slot, never used before in this process.
    """
    _SLOTS[0] += 1
    return _SLOTS[0]


@contextlib.contextmanager


def bound(slot: int, tracker: Tracker) -> Iterator[int]:
    """Bind ``tracker`` to problem ``slot`` while the context lasts.

    Args:
        slot: an id from :func:`new_slot`.
        tracker: the run's tracker; :func:`bbob_loss` with this slot evaluates through it.

    Returns:
        A context manager yielding ``slot`` (RuntimeError when it is already bound).
    """
    if slot in _TRACKERS:
        raise RuntimeError(f"problem slot {slot} is already bound to another run")
    _TRACKERS[slot] = tracker
    try:
        yield slot
    finally:
        _TRACKERS.pop(slot, None)


def _evaluate_batch(x: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """Host side of :func:`bbob_loss`: the precision of each row of ``x`` (float32)."""
    x, slot = np.asarray(x), np.asarray(slot)
    rows, ids = x.reshape(-1, x.shape[-1]), slot.reshape(-1)
    out = np.array([_TRACKERS[int(k)].evaluate(r) for r, k in zip(rows, ids, strict=True)],
                   np.float32)
    return out.reshape(slot.shape)


def bbob_loss(params: dict, slot) -> Any:
    """The JAX loss of the problem bound to ``slot``: ``f(params["x"]) - f_opt``.

    Args:
        params: ``{"x": (d,) array}``.
        slot: int32 scalar, bound to a :class:`Tracker` (:func:`bound`) when it runs.

    Returns:
        The float32 precision, computed in float64 on the host by the tracker
        (``jax.pure_callback``; under ``vmap`` one call evaluates every row).
    """
    import jax
    import jax.numpy as jnp

    x = params["x"]
    slot = jnp.asarray(slot, jnp.int32)
    return jax.pure_callback(_evaluate_batch, jax.ShapeDtypeStruct(x.shape[:-1], jnp.float32),
                             x, slot, vmap_method="broadcast_all")


def _cocoex():
    try:
        import cocoex
    except ImportError as error:
        raise ImportError("the bbob suite needs cocoex: pip install 'coco-experiment>=2.8.2' "
                          "(COCO's reference BBOB functions)") from error
    cocoex.log_level("warning")
    return cocoex


def bare_problem(function: int, dim: int, instance: int):
    """COCO's bbob problem (unobserved ``cocoex.BareProblem``): ``problem(x) -> f``,
    ``best_value()`` = f_opt.

    Args:
        function: bbob function 1-24.
        dim: dimension.
        instance: COCO instance.

    Returns:
        The problem.
    """
    return _cocoex().BareProblem("bbob", int(function), int(dim), int(instance))


def f_opt(function: int, dim: int, instance: int) -> float:
    """COCO's optimal value ``f_opt`` of a bbob problem.

    Args:
        function: bbob function 1-24.
        dim: dimension.
        instance: COCO instance.

    Returns:
        f_opt.
    """
    return float(bare_problem(function, dim, instance).best_value())


def new_tracker(function: int, dim: int, instance: int, budget: int) -> Tracker:
    """A fresh :class:`Tracker` of a bbob problem and budget.

    Args:
        function: bbob function 1-24.
        dim: dimension.
        instance: COCO instance.
        budget: evaluations allowed.

    Returns:
        The tracker.
    """
    problem = bare_problem(function, dim, instance)
    return Tracker(problem, float(problem.best_value()), int(budget))


# ------------------------------------------------------------------- COCO's data


def coco_dir() -> Path | None:
    """Where COCO's observer writes (``$FOLD_JAX_BBOB_COCO_DIR``, default
    ``results/bbob_coco``).

    Returns:
        The absolute folder; None when the variable is ``off``/``none``/``0`` or empty.
    """
    value = os.environ.get(COCO_DIR_ENV, COCO_DIR_DEFAULT).strip()
    if value.lower() in ("", "off", "none", "0", "false"):
        return None
    return Path(value).resolve()


_OBSERVERS: dict[tuple[str, str], Any] = {}


def coco_observer(method: str):
    """This process's COCO observer for ``method`` in the current run.

    Args:
        method: the method (its result folder).

    Returns:
        The ``cocoex.Observer`` (one per run and method), or None when COCO data is off.
    """
    root = coco_dir()
    if root is None:
        return None
    outer = root / results.run_id()
    key = (str(outer), method)
    if key not in _OBSERVERS:
        outer.mkdir(parents=True, exist_ok=True)
        _OBSERVERS[key] = _cocoex().Observer(
            "bbob", f"outer_folder: {outer} result_folder: {method} algorithm_name: {method} "
                    f"algorithm_info: fold_jax_bench_suite_bbob")
    return _OBSERVERS[key]


def replay(tracker: Tracker, function: int, dim: int, instance: int, observer) -> int:
    """Replay a finished run through COCO's observer (module docstring of
    :mod:`fold_jax.bench.suites.bbob`): the point of each recorded improvement, repeated
    until the next one, for as many evaluations as the run made.

    Args:
        tracker: the finished run.
        function: bbob function 1-24.
        dim: dimension.
        instance: COCO instance.
        observer: a :func:`coco_observer`.

    Returns:
        The evaluations the observer saw.
    """
    cocoex = _cocoex()
    suite = cocoex.Suite("bbob", f"instances: {instance}",
                         f"function_indices: {function} dimensions: {dim}")
    problem = suite.get_problem_by_function_dimension_instance(function, dim, instance,
                                                               observer)
    try:
        marks = {count: x.astype(np.float64) for count, x, _ in tracker.improvements}
        current = None
        for count in range(1, tracker.count + 1):
            current = marks.get(count, current)
            problem(current)
        return int(problem.evaluations)
    finally:
        problem.free()


# ---------------------------------------------------------------- a run's start


class Problem(NamedTuple):
    """One run to make: bbob function, instance and repetition."""

    function: int
    instance: int
    run: int = 0


def seed_of(function: int, dim: int, instance: int, run: int) -> int:
    """The run's seed (start point, method keys), the same for every method.

    Args:
        function: bbob function 1-24.
        dim: dimension.
        instance: COCO instance.
        run: the run's index.

    Returns:
        The seed.
    """
    return int(np.random.SeedSequence([function, dim, instance, run]).generate_state(1)[0]
               & 0x7FFFFFFF)


def start_point(seed: int, dim: int) -> np.ndarray:
    """Uniform in [-4, 4]^dim from ``seed`` (float64).

    Args:
        seed: :func:`seed_of`.
        dim: dimension.

    Returns:
        The (dim,) start point.
    """
    return np.random.default_rng(seed).uniform(START_LOW, START_HIGH, dim)
