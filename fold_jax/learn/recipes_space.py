"""Recipe types and search spaces: a :class:`Recipe` (one benchmarked method: its library,
fixed settings, tunable ``space`` and ``defaults``), the space entries
(:class:`LogUniform`, :class:`Choice`) and the quasi-random draws of the tuning
protocol (:func:`sample`: a scrambled Halton sequence, the same draws for every task).
Re-exported by :mod:`fold_jax.learn.recipes`, the registry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from fold_jax.estimators import methods

__all__ = ["LIBRARIES", "SUITES", "USER", "Choice", "LogUniform", "Param", "Recipe",
           "check_space", "hparams_json", "midpoint", "sample"]


LIBRARIES = ("optax", "fold_jax", "evosax", "cma", "rejax")  # the shipped recipes' libraries
# Suites with recipes of their own: "races" (the default: every race task; a
# registered method's suite), "hypotheses" (the essays' workloads: their methods are
# built by each workload, the recipe holds the search space), "bbob" (COCO's
# functions: one setting per method, built on the problem's dimension and budget) and
# "control" (gymnax control tasks: ES on the policy's return, and rejax's PPO) and
# "lm_finetune" (the LM fine-tuning arms: pretrained on Shakespeare, tuned on Milton).
# A suite's recipes are named "<suite>/<method>" but for the races'.
SUITES = ("races", "hypotheses", "bbob", "control", "lm_finetune")
USER = "user"  # the library of a registered method unless it names its own


class LogUniform(NamedTuple):
    """A positive hyperparameter drawn log-uniformly in [low, high]."""

    low: float
    high: float


class Choice(NamedTuple):
    """A hyperparameter drawn from a finite set of values (equal shares)."""

    values: tuple[Any, ...]


Param = LogUniform | Choice


class Recipe(NamedTuple):
    """One benchmarked method (see :mod:`fold_jax.learn.recipes`).

    ``make(loss, options, tx_wrap, mask) -> Method`` receives ``fixed`` merged with the
    hyperparameters; ``handles_mask``: whether it can train a pruned net (keep its
    mask); ``max_params``: the largest parameter count it runs on (None: any), with
    ``why_limited`` saying why.
    """

    name: str
    library: str
    make: Callable[..., methods.Method]
    space: Mapping[str, Param]
    defaults: Mapping[str, Any]
    fixed: Mapping[str, Any] = {}
    handles_mask: bool = True
    max_params: int | None = None
    why_limited: str = ""
    description: str = ""
    suite: str = "races"  # the suite whose problems it is defined for (SUITES)


def _scale(param: Param, u: float) -> Any:
    """The value of ``param`` at the unit-interval point ``u``."""
    if isinstance(param, LogUniform):
        lo, hi = math.log(param.low), math.log(param.high)
        return float(f"{math.exp(lo + u * (hi - lo)):.4g}")  # 4 digits: readable JSON
    return param.values[min(int(u * len(param.values)), len(param.values) - 1)]


def midpoint(param: Param) -> Any:
    """A space entry's default when none is given.

    Args:
        param: a LogUniform or Choice.

    Returns:
        The log-midpoint ``sqrt(low * high)`` (4 significant digits) or the first value.
    """
    return _scale(param, 0.5) if isinstance(param, LogUniform) else param.values[0]


def check_space(space: Mapping[str, Param], name: str) -> dict[str, Param]:
    """A registered recipe's ``space``, checked.

    Args:
        space: ``{hyperparameter: LogUniform | Choice}``.
        name: the recipe's name (for the messages).

    Returns:
        The space as a dict.

    Raises:
        TypeError / ValueError: not a mapping, an entry neither LogUniform nor Choice,
            a LogUniform without 0 < low <= high, or an empty Choice.
    """
    if not isinstance(space, Mapping):
        raise TypeError(f"space of {name!r} must be a mapping {{hyperparameter: LogUniform | "
                        f"Choice}}, got {type(space).__name__}")
    bad = sorted(k for k, v in space.items() if not isinstance(v, LogUniform | Choice))
    if bad:
        raise ValueError(f"space entries {bad} of {name!r} must be recipes.LogUniform(low, "
                         f"high) or recipes.Choice(values)")
    for k, v in space.items():
        if isinstance(v, LogUniform) and not 0 < v.low <= v.high:
            raise ValueError(f"space[{k!r}] = {v} of {name!r}: needs 0 < low <= high")
        if isinstance(v, Choice) and not len(v.values):
            raise ValueError(f"space[{k!r}] of {name!r} is an empty Choice")
    return dict(space)


def sample(space: Mapping[str, Param], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` settings drawn quasi-randomly from ``space``.

    A scrambled Halton sequence (``scipy.stats.qmc.Halton``, one dimension per
    hyperparameter, in sorted name order) mapped onto each range (log-uniform, rounded
    to 4 significant digits) or set; the same ``(space, n, seed)`` gives the same
    settings on any machine.

    Args:
        space: ``{hyperparameter: LogUniform | Choice}`` (not empty).
        n: number of settings (>= 1).
        seed: the sequence's scrambling seed.

    Returns:
        ``n`` dicts ``{hyperparameter: value}`` (Python numbers or the Choice's values).

    Raises:
        ValueError: ``n`` not an integer >= 1, an empty space, or a value that is
            neither LogUniform nor Choice.
    """
    from scipy.stats import qmc

    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n={n!r} must be an integer >= 1 (number of trials)")
    if not space:
        raise ValueError("space is empty: nothing to draw")
    bad = sorted(k for k, v in space.items() if not isinstance(v, LogUniform | Choice))
    if bad:
        raise ValueError(f"space entries {bad} must be LogUniform or Choice")
    keys = sorted(space)
    points = qmc.Halton(d=len(keys), scramble=True, seed=seed).random(int(n))
    return [{k: _scale(space[k], float(u)) for k, u in zip(keys, p, strict=True)}
            for p in points]


def hparams_json(hparams: Mapping[str, Any]) -> str:
    """``hparams`` as compact JSON with sorted keys (the results files' ``hparams``).

    Args:
        hparams: the hyperparameters.

    Returns:
        The JSON text.
    """
    return json.dumps(dict(hparams), sort_keys=True, separators=(",", ":"))
