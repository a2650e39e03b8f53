"""Control tasks: any gymnax environment as an objective for training without backprop.

``fold_jax.learn.tasks.get("cartpole")`` (or any gymnax id: ``get("MountainCar-v0")``)
gives a :class:`ControlTask`. Its objective is the mean episodic return of a policy
(:mod:`fold_jax.learn.policies`: an MLP for vector observations, a conv net for image
observations, a GRU for memory tasks) over a batch of episodes, each rolled out for a
fixed horizon with ``jax.lax.scan``. The task is pure: nothing is jitted or vmapped
inside (gymnax's own ``step`` / ``reset`` carry gymnax's jit, which inlines when
traced); the caller (a method's population vmap, :func:`fold_jax.learn.train.fit`'s jit)
does that.

- ``loss(params, key)``: minus the mean return over ``num_episodes`` training
  episodes started from ``key`` (every population member of a method's step gets the
  same key, hence the same episodes: common random numbers). ``fit`` draws a fresh
  key per step, as it draws minibatches for a data task.
- ``evaluate(params)``: mean return and mean episode length over
  ``num_eval_episodes`` fixed held-out episodes (keys from ``eval_seed`` in a stream
  that training keys never use: training folds 0 into its key, evaluation folds 1).
- Environment steps: every loss evaluation steps each of its episodes for the full
  horizon, ``episode_length`` steps (a ``lax.scan`` cannot stop early; an episode
  that ends sooner is auto-reset by gymnax and its later rewards are masked out), so
  one evaluation costs ``env_steps_per_eval = num_episodes * episode_length`` steps,
  the same number for every method, known before the run. ``fit`` reports
  ``env_steps = evals * env_steps_per_eval``. The steps until done (the episode's real
  length) are reported by ``evaluate`` as ``episode_length``.

Actions: a discrete action space takes the argmax of the policy's scores (one per
action); a continuous (Box) one takes the scores squashed by tanh into the bounds
(unbounded entries as they are). Policies are deterministic.

Thresholds (``task.threshold``, the return a race calls solved): CartPole-v1 500 (the
most a 500-step episode can return; Gymnasium's registry says 475), Acrobot-v1 -100
and MountainCar-v0 -110 (Gymnasium's ``reward_threshold``), MountainCarContinuous-v0
90 (Gymnasium), Pendulum-v1 -200 (Gymnasium registers none; -200 is the usual
convention), MemoryChain-bsuite 1 (every query answered; a memoryless policy averages
0). Others: None (pass ``threshold=``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax.checks import check_choice, check_int, check_key
from fold_jax.learn import nets, policies
from fold_jax.learn.policies import Policy

__all__ = ["ALIASES", "FULL", "QUICK", "THRESHOLDS", "ControlTask", "Episodes", "env_ids",
           "make", "names"]

ALIASES: dict[str, str] = {  # fold_jax name -> gymnax id
    "cartpole": "CartPole-v1",
    "acrobot": "Acrobot-v1",
    "pendulum": "Pendulum-v1",
    "mountain_car": "MountainCar-v0",
    "breakout_minatar": "Breakout-MinAtar",
    "memory_chain": "MemoryChain-bsuite",
    "cartpole_po": "CartPole-v1",  # velocities hidden: a memory task for a GRU
}
# what an alias sets besides its gymnax id (explicit options win)
_ALIAS_OPTIONS: dict[str, dict[str, Any]] = {
    "cartpole_po": {"obs_indices": (0, 2), "policy": "gru"},
    # an episode is memory_length + 1 steps (then done): the horizon need not be 1000
    "memory_chain": {"policy": "gru",
                     "episode_length": lambda params: int(params.memory_length) + 1},
}
QUICK = ("cartpole", "acrobot", "pendulum")  # the quick profile's control tasks
FULL = (*QUICK, "breakout_minatar")  # the full profile's

THRESHOLDS: dict[str, float] = {  # gymnax id -> solved return (module docstring)
    "CartPole-v1": 500.0,
    "Acrobot-v1": -100.0,
    "Pendulum-v1": -200.0,
    "MountainCar-v0": -110.0,
    "MountainCarContinuous-v0": 90.0,
    "MemoryChain-bsuite": 1.0,
}
# gymnax environments that download data when built: refused (fold_jax runs offline)
DOWNLOADS: dict[str, str] = {"MNISTBandit-bsuite": "MNIST"}
TRAIN_STREAM, EVAL_STREAM = 0, 1  # folded into the keys: training and held-out episodes
METRICS = ("return", "episode_length")  # what ControlTask.evaluate reports


@functools.cache
def _gymnax():
    try:
        import gymnax
    except ImportError as error:  # pragma: no cover - gymnax is a dependency
        raise ImportError("fold_jax.control needs gymnax >= 1.0.1 (pip install gymnax)") \
            from error
    return gymnax


def env_ids() -> list[str]:
    """Every gymnax environment id :func:`make` accepts.

    Returns:
        gymnax's registry, less the environments that download data when built
        (``DOWNLOADS``).
    """
    return [e for e in _gymnax().registered_envs if e not in DOWNLOADS]


def names() -> list[str]:
    """fold_jax's short control names.

    Returns:
        The keys of ``ALIASES``, sorted.
    """
    return sorted(ALIASES)


class Episodes(NamedTuple):
    """Per-episode results of a batch of rollouts: ``returns`` (E,) float32 (rewards
    summed until done), ``lengths`` (E,) int32 (steps until done, at most the
    horizon)."""

    returns: Array
    lengths: Array


Act = Callable[[PyTree, Any, Array], tuple[Any, Array]]  # (params, carry, obs) -> (carry, a)


@dataclasses.dataclass(frozen=True, eq=False)
class ControlTask:
    """A gymnax environment, a policy and how episodes are run (build with :func:`make`).

    ``loss(params, key)`` is what methods minimize, ``evaluate(params)`` what ``fit``
    scores and targets (``return``, higher is better). ``threshold`` is the solved
    return (None when unknown).
    """

    name: str
    env_id: str
    env: Any
    env_params: Any
    policy: Policy
    episode_length: int
    num_episodes: int
    num_eval_episodes: int
    eval_seed: int
    threshold: float | None
    obs_indices: tuple[int, ...] | None
    num_actions: int | None  # discrete: actions; None for a continuous action space
    action_low: np.ndarray | None = None  # continuous: bounds, shaped like the action
    action_high: np.ndarray | None = None

    metric_names = METRICS

    @property
    def env_steps_per_eval(self) -> int:
        """Environment steps one loss evaluation costs: ``num_episodes * episode_length``."""
        return self.num_episodes * self.episode_length

    @property
    def n_params(self) -> int:
        """Parameters of the policy."""
        return nets.count_params(jax.eval_shape(self.policy.init, jax.random.key(0)))

    def init(self, key: PRNGKeyArray) -> PyTree:
        """The policy's initial params from ``key``."""
        return self.policy.init(key)

    def observe(self, obs: Array) -> Array:
        """What the policy sees of an environment observation (``obs_indices`` of the
        flattened observation, or all of it)."""
        if self.obs_indices is None:
            return obs
        return jnp.reshape(obs, (-1,))[jnp.asarray(self.obs_indices)]

    def act(self, params: PyTree, carry: Any, obs: Array) -> tuple[Any, Array]:
        """The policy's action for one observation (already ``observe``-d):
        ``(carry, action)``; argmax (int32) or squashed into the bounds (float32)."""
        carry, out = self.policy.apply(params, carry, obs)
        if self.num_actions is not None:
            return carry, jnp.argmax(out).astype(jnp.int32)
        low, high = self.action_low, self.action_high
        finite = np.isfinite(low) & np.isfinite(high)
        squashed = low + (jnp.tanh(out) + 1.0) * 0.5 * np.where(finite, high - low, 0.0)
        return carry, jnp.where(finite, squashed, out).astype(jnp.float32)

    def rollout(self, params: PyTree, key: PRNGKeyArray, act: Act | None = None,
                initial_carry: Any = None) -> tuple[Array, Array]:
        """One episode from ``key``: ``(return, length)`` (float32, int32 scalars).

        Runs ``episode_length`` steps under ``lax.scan``; rewards count while the
        episode is alive (until the first terminated or truncated step, included).

        Args:
            params: the policy params (anything ``act`` takes).
            key: the episode's key (reset, then the environment's step keys).
            act: ``act(params, carry, obs) -> (carry, action)``; default :meth:`act`.
            initial_carry: the carry at the first step (default: the policy's).
        """
        act = self.act if act is None else act
        carry = self.policy.initial_carry() if initial_carry is None else initial_carry
        reset_key, step_key = jax.random.split(key)
        obs, state = self.env.reset(reset_key, self.env_params)

        def step(loop, t):
            obs, state, carry, total, alive, length = loop
            carry, action = act(params, carry, self.observe(obs))
            obs, state, reward, terminated, truncated, _ = self.env.step(
                jax.random.fold_in(step_key, t), state, action, self.env_params)
            reward = jnp.reshape(jnp.asarray(reward, jnp.float32), ())
            total = total + jnp.where(alive, reward, 0.0)
            length = length + alive.astype(jnp.int32)
            alive = alive & ~jnp.logical_or(terminated, truncated)
            return (obs, state, carry, total, alive, length), None

        loop = (obs, state, carry, jnp.float32(0.0), jnp.bool_(True), jnp.int32(0))
        loop, _ = jax.lax.scan(step, loop, jnp.arange(self.episode_length))
        return loop[3], loop[5]

    def episodes(self, params: PyTree, keys: PRNGKeyArray, act: Act | None = None) -> Episodes:
        """One episode per key of ``keys`` (E,), vmapped: :class:`Episodes`."""
        returns, lengths = jax.vmap(lambda k: self.rollout(params, k, act))(keys)
        return Episodes(returns, lengths)

    def train_keys(self, key: PRNGKeyArray) -> PRNGKeyArray:
        """The ``num_episodes`` training episodes' keys for a step's ``key``."""
        check_key(key)
        return jax.random.split(jax.random.fold_in(key, TRAIN_STREAM), self.num_episodes)

    @property
    def eval_keys(self) -> PRNGKeyArray:
        """The ``num_eval_episodes`` held-out episodes' keys (fixed by ``eval_seed``)."""
        base = jax.random.fold_in(jax.random.key(self.eval_seed), EVAL_STREAM)
        return jax.random.split(base, self.num_eval_episodes)

    def loss(self, params: PyTree, key: PRNGKeyArray) -> Array:
        """Minus the mean return of the ``num_episodes`` training episodes of ``key``."""
        return -jnp.mean(self.episodes(params, self.train_keys(key)).returns)

    def evaluate(self, params: PyTree, act: Act | None = None) -> dict[str, Array]:
        """Held-out metrics: ``return`` (mean over the evaluation episodes) and
        ``episode_length`` (mean steps until done), float32 scalars.

        Args:
            params: the policy params (anything ``act`` takes).
            act: another policy's ``act(params, carry, obs) -> (carry, action)`` (e.g.
                PPO's, :mod:`fold_jax.learn.ppo`); default :meth:`act`.
        """
        out = self.episodes(params, self.eval_keys, act)
        return {"return": jnp.mean(out.returns),
                "episode_length": jnp.mean(out.lengths.astype(jnp.float32))}


# ------------------------------------------------------------------------------ make


def _resolve(name: str) -> tuple[str, dict[str, Any]]:
    """(gymnax id, alias options) of ``name``; ValueError listing the names otherwise."""
    if isinstance(name, str) and name in ALIASES:
        return ALIASES[name], dict(_ALIAS_OPTIONS.get(name, {}))
    ids = env_ids()
    if isinstance(name, str) and name in DOWNLOADS:
        raise ValueError(f"control task name={name!r}: gymnax downloads {DOWNLOADS[name]} when "
                         f"it builds this environment, and fold_jax's tasks run offline; "
                         f"allowed: {names()} or a gymnax id other than {sorted(DOWNLOADS)}")
    if isinstance(name, str) and name in ids:
        return name, {}
    raise ValueError(f"control task name={name!r} is not known; allowed: {names()} or a gymnax "
                     f"id: {ids}")


def _env_params(env: Any, overrides: Any, env_id: str) -> Any:
    defaults = env.default_params
    if overrides is None:
        return defaults
    if isinstance(overrides, type(defaults)):
        return overrides
    if not isinstance(overrides, Mapping):
        raise TypeError(f"env_params must be a mapping of {env_id}'s parameters (or a "
                        f"{type(defaults).__name__}), got {type(overrides).__name__}")
    fields = [f.name for f in dataclasses.fields(defaults)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"env_params has unknown fields {unknown} for {env_id}; allowed: "
                         f"{fields}")
    return defaults.replace(**overrides)


def _action_space(env: Any, params: Any, env_id: str) -> tuple[tuple[int, ...], int | None,
                                                              np.ndarray | None,
                                                              np.ndarray | None]:
    """(output shape, actions or None, low, high) of the environment's action space."""
    spaces = _gymnax().environments.spaces
    space = env.action_space(params)
    if isinstance(space, spaces.Discrete):
        return (int(space.n),), int(space.n), None, None
    if isinstance(space, spaces.Box):
        shape = tuple(int(s) for s in space.shape)
        low = np.broadcast_to(np.asarray(space.low, np.float32), shape)
        high = np.broadcast_to(np.asarray(space.high, np.float32), shape)
        return shape, None, low, high
    raise ValueError(f"{env_id} has action space {space!r}; control tasks support Discrete "
                     f"and Box action spaces")


def _obs_indices(indices: Any, size: int, env_id: str) -> tuple[int, ...] | None:
    if indices is None:
        return None
    if isinstance(indices, str) or not isinstance(indices, Sequence) or not indices:
        raise ValueError(f"obs_indices={indices!r} must be a non-empty sequence of ints in "
                         f"0..{size - 1} (entries of {env_id}'s flattened observation)")
    out = tuple(check_int(i, "obs_indices", 0) for i in indices)
    if max(out) >= size:
        raise ValueError(f"obs_indices={indices!r}: {env_id}'s observation has {size} entries; "
                         f"allowed: 0..{size - 1}")
    return out


def _policy(policy: Any, obs_shape: tuple[int, ...], out_shape: tuple[int, ...],
            hidden: Any, activation: str) -> Policy:
    outputs = math.prod(out_shape)
    if policy is None:  # shaped to the spaces: images get a conv net
        policy = "conv" if len(obs_shape) == 3 and min(obs_shape[:2]) >= 3 else "mlp"
    if isinstance(policy, str):
        check_choice(policy, "policy", policies.KINDS)
        return policies.default(policy, obs_shape, outputs, hidden=hidden, activation=activation)
    if isinstance(policy, nn.Module):
        return Policy(policy, obs_shape)
    if isinstance(policy, Policy):
        return policy
    raise TypeError(f"policy must be one of {list(policies.KINDS)}, a flax.linen Module "
                    f"(obs -> action scores) or a fold_jax.policies.Policy, got "
                    f"{type(policy).__name__}")


def _check_policy(policy: Policy, obs_shape: tuple[int, ...], out_shape: tuple[int, ...],
                  env_id: str, num_actions: int | None) -> None:
    """ValueError naming policy unless it maps one observation to ``out_shape`` scores."""
    if policy.obs_shape != obs_shape:
        raise ValueError(f"policy takes observations of shape {policy.obs_shape}; {env_id}'s "
                         f"are {obs_shape}")
    try:
        params = jax.eval_shape(policy.init, jax.random.key(0))
        obs = jax.ShapeDtypeStruct(obs_shape, jnp.float32)
        _, out = jax.eval_shape(policy.apply, params, policy.initial_carry(), obs)
    except Exception as error:
        raise ValueError(f"policy failed on one {env_id} observation of shape {obs_shape}: "
                         f"{type(error).__name__}: {error}") from error
    what = (f"one score per action of Discrete({num_actions})" if num_actions is not None
            else "one score per action entry of its Box action space")
    if getattr(out, "shape", None) != out_shape:
        raise ValueError(f"policy outputs shape {getattr(out, 'shape', out)}; {env_id} needs "
                         f"{out_shape} ({what})")


def make(
    name: str,
    *,
    policy: str | nn.Module | Policy | None = None,
    hidden: Sequence[int] | int | None = None,
    activation: str = "tanh",
    episode_length: int | None = None,
    num_episodes: int = 4,
    num_eval_episodes: int = 32,
    eval_seed: int = 0,
    env_params: Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    obs_indices: Sequence[int] | None = None,
    threshold: float | None = None,
) -> ControlTask:
    """A control task on the gymnax environment ``name``.

    Args:
        name: a short name (:func:`names`: "cartpole", "acrobot", "pendulum",
            "mountain_car", "breakout_minatar", "memory_chain", "cartpole_po") or any
            gymnax id (:func:`env_ids`, e.g. "MountainCar-v0").
        policy: "mlp", "conv" or "gru" (:func:`fold_jax.learn.policies.default`), a
            flax.linen Module mapping one observation to the action scores, or a
            :class:`~fold_jax.learn.policies.Policy`; None: conv for image observations
            (H, W, C), mlp otherwise (the aliases memory_chain and cartpole_po: gru).
        hidden: the default policy's hidden widths (gru: units).
        activation: the default policy's hidden activation.
        episode_length: steps per episode (the horizon); None: gymnax's
            ``max_steps_in_episode`` (memory_chain: ``memory_length + 1``, its
            episodes' length).
        num_episodes: episodes per loss evaluation.
        num_eval_episodes: held-out episodes of :meth:`ControlTask.evaluate`.
        eval_seed: fixes the held-out episodes.
        env_params: overrides of the environment's parameters (gymnax's defaults
            otherwise), by field name.
        env_kwargs: the environment constructor's arguments (``gymnax.make``).
        obs_indices: show the policy only these entries of the flattened observation
            (cartpole_po: (0, 2), position and angle, velocities hidden).
        threshold: the solved return; None: ``THRESHOLDS`` (None if not listed).

    Returns:
        The :class:`ControlTask`.

    Raises:
        ValueError / TypeError: an unknown name (listing the allowed ones), unknown
            env_params fields, bad counts, an unsupported action space, or a policy
            whose input or output does not match the environment's spaces.
    """
    env_id, alias = _resolve(name)
    policy = alias.get("policy") if policy is None else policy
    obs_indices = alias.get("obs_indices") if obs_indices is None else obs_indices
    if env_kwargs is not None and not isinstance(env_kwargs, Mapping):
        raise TypeError(f"env_kwargs must be a mapping, got {type(env_kwargs).__name__}")
    try:
        env, _ = _gymnax().make(env_id, **dict(env_kwargs or {}))
    except TypeError as error:
        raise ValueError(f"env_kwargs={env_kwargs!r} do not fit {env_id}'s constructor: "
                         f"{error}") from error
    params = _env_params(env, env_params, env_id)
    if episode_length is None and "episode_length" in alias:
        episode_length = alias["episode_length"](params)
    max_steps = int(getattr(params, "max_steps_in_episode", 0)) or None
    if episode_length is None:
        if max_steps is None:
            raise ValueError(f"{env_id} has no max_steps_in_episode: pass episode_length")
        episode_length = max_steps
    episode_length = check_int(episode_length, "episode_length")
    num_episodes = check_int(num_episodes, "num_episodes")
    num_eval_episodes = check_int(num_eval_episodes, "num_eval_episodes")
    eval_seed = check_int(eval_seed, "eval_seed", 0)
    raw = jax.eval_shape(env.reset, jax.random.key(0), params)[0]
    raw_shape = tuple(int(s) for s in raw.shape)
    indices = _obs_indices(obs_indices, math.prod(raw_shape), env_id)
    obs_shape = raw_shape if indices is None else (len(indices),)
    out_shape, num_actions, low, high = _action_space(env, params, env_id)
    pol = _policy(policy, obs_shape, out_shape, hidden, activation)
    _check_policy(pol, obs_shape, out_shape, env_id, num_actions)
    if threshold is None:
        threshold = THRESHOLDS.get(env_id)
    elif not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise ValueError(f"threshold={threshold!r} must be a finite number or None")
    return ControlTask(name, env_id, env, params, pol, episode_length, num_episodes,
                       num_eval_episodes, eval_seed,
                       None if threshold is None else float(threshold), indices, num_actions,
                       low, high)
