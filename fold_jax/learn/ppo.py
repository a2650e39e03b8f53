"""A backprop RL baseline: PPO from rejax on a fold_jax control task.

:func:`train` trains rejax's PPO (Schulman et al. 2017; rejax 0.1.3's defaults unless
options say otherwise) on a :class:`fold_jax.learn.control.ControlTask` for a budget of
environment steps and returns a curve of (env steps, seconds, held-out return), the
return measured by the task's own :meth:`~fold_jax.learn.control.ControlTask.evaluate` on
its held-out evaluation episodes, exactly as the forward-only methods are scored in
:func:`fold_jax.learn.train.fit`. PPO acts greedily there (the mode of its action
distribution: argmax for discrete actions, the Gaussian's mean clipped into the
bounds for continuous ones), as the ES policies do.

rejax 0.1.3 with gymnax >= 1.0 fails as installed: gymnax's ``step`` returns ``(obs,
state, reward, terminated, truncated, info)`` and rejax unpacks five values.
:func:`adapter` wraps the task's environment so that ``step`` returns ``(obs, state,
reward, done, info)`` with ``done = terminated | truncated`` (and the observations
the task's policy sees, e.g. CartPole without velocities for ``cartpole_po``).

Environment steps are PPO's own count (``global_step``: ``num_envs`` per vectorized
step, every step a real transition, episodes auto-reset), training runs in chunks of
about ``eval_every`` steps (whole PPO iterations of ``num_envs * num_steps``), and
the clock counts training chunks only: compilation, a warm-up run of the first chunk
(result discarded, as ``fit`` does) and evaluations are off it.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, PyTree

from fold_jax.checks import check_int
from fold_jax.learn.control import ControlTask

__all__ = ["PPOResult", "adapter", "train"]


@functools.cache
def _rejax():
    try:
        import rejax
    except ImportError as error:  # pragma: no cover - rejax is a dependency
        raise ImportError("fold_jax.ppo needs rejax >= 0.1.3 (pip install rejax)") from error
    return rejax


@functools.cache
def _adapter_class() -> type:
    from gymnax.environments import spaces
    from gymnax.wrappers.purerl import GymnaxWrapper

    class DoneStep(GymnaxWrapper):
        """A gymnax >= 1.0 environment with the four-value-plus-info ``step`` rejax
        0.1.3 unpacks: ``(obs, state, reward, terminated | truncated, info)``;
        observations pass through ``observe`` (shape ``obs_shape``)."""

        def __init__(self, env: Any, observe: Any, obs_shape: tuple[int, ...]):
            super().__init__(env)
            self._observe = observe
            self._obs_shape = obs_shape

        def reset(self, key: Array, params: Any = None) -> tuple[Array, Any]:
            obs, state = self._env.reset(key, params)
            return self._observe(obs), state

        def step(self, key: Array, state: Any, action: Any, params: Any = None):
            obs, state, reward, terminated, truncated, info = self._env.step(
                key, state, action, params)
            return self._observe(obs), state, reward, jnp.logical_or(terminated, truncated), info

        def observation_space(self, params: Any) -> Any:
            space = self._env.observation_space(params)
            if tuple(space.shape) == self._obs_shape:
                return space
            return spaces.Box(-jnp.inf, jnp.inf, self._obs_shape, jnp.float32)

        def __deepcopy__(self, memo: dict) -> DoneStep:  # rejax deep-copies its config
            return self

    return DoneStep


def adapter(task: ControlTask) -> Any:
    """``task``'s environment as rejax 0.1.3 steps it: ``step(key, state, action,
    params) -> (obs, state, reward, done, info)`` with ``done = terminated |
    truncated``; ``reset`` and ``observation_space`` show the task's observations.

    Args:
        task: the control task.

    Returns:
        A gymnax wrapper around ``task.env`` (other attributes pass through).
    """
    if not isinstance(task, ControlTask):
        raise TypeError(f"task must be a fold_jax.control.ControlTask, got "
                        f"{type(task).__name__}")
    return _adapter_class()(task.env, task.observe, task.policy.obs_shape)


class PPOResult(NamedTuple):
    """What :func:`train` returns: ``curve`` (one row per evaluation, step 0 included:
    ``env_steps``, ``elapsed_s`` (training seconds), ``return`` and ``episode_length`` on
    the task's held-out episodes), the final rejax train state, PPO's greedy ``act``
    (``act(train_state, carry, obs) -> (carry, action)``, for ``task.evaluate(ts,
    act)``), seconds spent compiling and warming up, and whether ``target`` was met."""

    curve: pd.DataFrame
    train_state: Any
    act: Any
    compile_s: float
    reached: bool


def _greedy_act(algo: Any, task: ControlTask):
    low, high = task.action_low, task.action_high

    def act(ts: PyTree, carry: Any, obs: Array) -> tuple[Any, Array]:
        if getattr(algo, "normalize_observations", False):
            obs = algo.normalize_obs(ts.obs_rms_state, obs)
        dist = algo.actor.apply(ts.actor_ts.params, jnp.expand_dims(obs, 0),
                                method="_action_dist")
        action = dist.mode()[0]
        if task.num_actions is not None:
            return carry, action.astype(jnp.int32)
        return carry, jnp.clip(action, low, high).astype(jnp.float32)

    return act


def train(
    task: ControlTask,
    *,
    env_steps: int,
    eval_every: int = 16_384,
    target: float | None = None,
    seed: int = 0,
    **ppo_options: Any,
) -> PPOResult:
    """Train rejax's PPO on ``task`` for ``env_steps`` environment steps.

    Args:
        task: the control task (its environment, parameters, observations and
            held-out episodes; PPO uses its own actor-critic MLPs, not ``task.policy``).
        env_steps: the budget: training stops at the first evaluation at or past it.
        eval_every: environment steps between evaluations (rounded up to whole PPO
            iterations of ``num_envs * num_steps``, 4,096 by default).
        target: stop once the held-out return reaches it (None: run the budget).
        seed: fixes PPO's initialization and its environment keys.
        **ppo_options: rejax PPO options (``num_envs``, ``num_steps``,
            ``learning_rate``, ``num_epochs``, ``agent_kwargs``, ...).

    Returns:
        A :class:`PPOResult`.

    Raises:
        TypeError / ValueError: a task that is not a ControlTask, bad counts, or an
            option rejax does not know (named, before anything compiles).
    """
    env = adapter(task)
    env_steps = check_int(env_steps, "env_steps")
    eval_every = check_int(eval_every, "eval_every")
    seed = check_int(seed, "seed", 0)
    if target is not None and not (isinstance(target, int | float) and math.isfinite(target)):
        raise ValueError(f"target={target!r} must be a finite number or None")
    for reserved in ("env", "env_params", "total_timesteps", "eval_freq"):
        if reserved in ppo_options:
            raise ValueError(f"{reserved} is set by fold_jax.ppo.train (the task, env_steps "
                             f"and eval_every): leave it out of the PPO options")
    ppo_cls = _rejax().PPO
    try:
        probe = ppo_cls.create(env=env, env_params=task.env_params, **ppo_options)
    except TypeError as error:
        raise ValueError(f"PPO options {sorted(ppo_options)}: {error}") from error
    per_iteration = probe.num_envs * probe.num_steps
    chunk = math.ceil(eval_every / per_iteration) * per_iteration
    algo = ppo_cls.create(env=env, env_params=task.env_params, total_timesteps=chunk,
                          eval_freq=chunk, skip_initial_evaluation=True, **ppo_options)
    # evaluation is ours, on the task's held-out episodes: rejax's callback does nothing
    algo = algo.replace(eval_callback=lambda algo, ts, rng: jnp.zeros((), jnp.float32))
    act = _greedy_act(algo, task)

    t0 = time.perf_counter()
    ts = algo.init_state(jax.random.key(seed))
    run = jax.jit(lambda ts: algo.train(train_state=ts)[0]).lower(ts).compile()
    evaluate = jax.jit(lambda ts: task.evaluate(ts, act)).lower(ts).compile()
    if chunk < env_steps:  # one warm-up run, result discarded (first-run costs)
        jax.block_until_ready(run(ts))
    compile_s = time.perf_counter() - t0

    rows: list[dict[str, float]] = []

    def record(ts: Any, elapsed: float) -> bool:
        metrics = {k: float(v) for k, v in evaluate(ts).items()}
        rows.append({"env_steps": int(np.asarray(ts.global_step)), "elapsed_s": elapsed,
                     "return": metrics["return"], "episode_length": metrics["episode_length"]})
        return target is not None and metrics["return"] >= target

    elapsed = 0.0
    reached = record(ts, elapsed)
    while not reached and rows[-1]["env_steps"] < env_steps:
        t0 = time.perf_counter()
        ts = jax.block_until_ready(run(ts))
        elapsed += time.perf_counter() - t0
        reached = record(ts, elapsed)
    return PPOResult(pd.DataFrame(rows), ts, act, compile_s, reached)
