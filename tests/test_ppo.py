"""PPO baseline (rejax through fold_jax.learn.ppo): the environment adapter's step contract,
errors, and a short run that improves CartPole on the task's held-out episodes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.learn import control, ppo, tasks


def test_adapter_steps_as_rejax_unpacks_with_done_terminated_or_truncated():
    task = control.make("cartpole", env_params={"max_steps_in_episode": 3})
    env = ppo.adapter(task)
    params = task.env_params
    obs, state = env.reset(jax.random.key(0), params)
    ref_obs, ref_state = task.env.reset(jax.random.key(0), params)
    np.testing.assert_array_equal(obs, ref_obs)
    dones = []
    for t in range(3):
        key = jax.random.key(t + 1)
        out = env.step(key, state, jnp.int32(t % 2), params)
        assert len(out) == 5  # obs, state, reward, done, info: what rejax 0.1.3 unpacks
        ref = task.env.step(key, ref_state, jnp.int32(t % 2), params)
        np.testing.assert_array_equal(out[0], ref[0])
        assert float(out[2]) == float(ref[2])
        assert bool(out[3]) == bool(ref[3] | ref[4])  # done = terminated | truncated
        dones.append(bool(out[3]))
        state, ref_state = out[1], ref[1]
    assert dones[-1]  # the 3-step limit truncates (CartPole cannot fall in 3 steps)
    assert not bool(ref[3]) and bool(ref[4])


def test_adapter_shows_the_task_observations():
    task = control.make("cartpole_po")
    env = ppo.adapter(task)
    obs, state = env.reset(jax.random.key(0), task.env_params)
    full, _ = task.env.reset(jax.random.key(0), task.env_params)
    np.testing.assert_array_equal(obs, full[jnp.array([0, 2])])  # position and angle
    assert env.observation_space(task.env_params).shape == (2,)
    assert env.step(jax.random.key(1), state, 0, task.env_params)[0].shape == (2,)
    assert env.num_actions == task.env.num_actions  # everything else passes through


def test_bad_arguments():
    with pytest.raises(TypeError, match="ControlTask"):
        ppo.train(tasks.get("sphere"), env_steps=10)
    task = control.make("cartpole")
    with pytest.raises(ValueError, match="total_timesteps is set by"):
        ppo.train(task, env_steps=10, total_timesteps=5)
    with pytest.raises(ValueError, match=r"PPO options.*colour"):
        ppo.train(task, env_steps=10, colour=1)
    with pytest.raises(ValueError, match="env_steps"):
        ppo.train(task, env_steps=0)


def test_short_ppo_run_improves_cartpole_on_held_out_episodes():
    task = control.make("cartpole", num_eval_episodes=8)
    result = ppo.train(task, env_steps=8192, eval_every=8192, seed=0)
    curve = result.curve
    assert list(curve.columns) == ["env_steps", "elapsed_s", "return", "episode_length"]
    assert list(curve["env_steps"]) == [0, 8192]  # 2 iterations of 64 envs x 64 steps
    assert curve["elapsed_s"].iloc[-1] > 0 and result.compile_s > 0
    assert result.reached is False  # no target: the budget ran out
    # the same evaluation as the ES methods: task.evaluate with PPO's greedy act
    again = task.evaluate(result.train_state, result.act)
    assert float(again["return"]) == curve["return"].iloc[-1]
    # PPO's initial policy keeps the pole up ~10-50 steps; two iterations (8,192 steps)
    # of PPO at least double that: measured (2-core CPU, evaluated every iteration) 48
    # -> 348 on seed 0 (7x, a 3.6x margin over the bar), 9 -> 159 and 18 -> 119 on seeds
    # 1 and 2; one iteration is too few (48 -> 79 on seed 0, under 2x)
    assert curve["return"].iloc[-1] > 2 * curve["return"].iloc[0]
