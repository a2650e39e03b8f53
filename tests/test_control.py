"""Control tasks: rollouts, evaluation seeds, env-step counts, policies, errors, and ES
training through the one loop (fold_jax.learn.train.fit)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.estimators import methods, peers, zo
from fold_jax.learn import control, policies, tasks, train


@pytest.fixture(scope="module")
def cartpole():
    return control.make("cartpole", episode_length=200, num_episodes=3, num_eval_episodes=8)


@pytest.fixture(scope="module")
def cartpole_params(cartpole):
    """The policy's initial params (one jitted init shared by the cartpole tests)."""
    return jax.jit(cartpole.init)(jax.random.key(0))


def _python_rollout(task, params, key):
    """One episode stepped in plain Python, one env.step call at a time: (return,
    steps until done)."""
    reset_key, step_key = jax.random.split(key)
    obs, state = jax.jit(task.env.reset)(reset_key, task.env_params)
    carry = task.policy.initial_carry()
    total, length = 0.0, 0
    # each call jitted (one program each, reused every step), still one call at a time
    act, env_step = jax.jit(task.act), jax.jit(task.env.step)
    for t in range(task.episode_length):
        carry, action = act(params, carry, task.observe(obs))
        obs, state, reward, terminated, truncated, _ = env_step(
            jax.random.fold_in(step_key, t), state, action, task.env_params)
        total += float(reward)
        length += 1
        if bool(terminated) or bool(truncated):
            break
    return total, length


def test_get_dispatches_names_and_gymnax_ids():
    task = tasks.get("cartpole")
    assert isinstance(task, control.ControlTask) and task.env_id == "CartPole-v1"
    assert task.episode_length == 500 == task.env_params.max_steps_in_episode  # gymnax's
    assert task.threshold == 500.0
    assert tasks.get("acrobot").threshold == -100.0
    pendulum = tasks.get("pendulum")
    assert pendulum.threshold == -200.0 and pendulum.num_actions is None
    other = tasks.get("MountainCar-v0", num_episodes=2)
    assert other.env_id == "MountainCar-v0" and other.num_episodes == 2
    assert sorted(tasks.CONTROL_NAMES) == control.names()
    assert set(control.QUICK) | set(control.FULL) <= set(control.names())


def test_default_policies_follow_the_spaces():
    breakout = control.make("breakout_minatar")
    assert isinstance(breakout.policy.module, policies.ConvPolicy)  # image observations
    assert breakout.policy.obs_shape == (10, 10, 4) and breakout.num_actions == 3
    pendulum = control.make("pendulum")
    assert isinstance(pendulum.policy.module, policies.MLPPolicy)
    np.testing.assert_array_equal(pendulum.action_low, [-2.0])
    memory = control.make("memory_chain")
    assert memory.policy.recurrent and memory.episode_length == 6  # memory_length + 1
    hidden = control.make("cartpole_po")
    assert hidden.policy.obs_shape == (2,) and hidden.policy.recurrent


def test_every_gymnax_env_builds_with_a_default_policy():
    built = {env_id: control.make(env_id, episode_length=3, num_episodes=2)
             for env_id in control.env_ids()}  # make checks the policy against the spaces
    assert len(built) >= 25
    # one rollout traced per kind of spaces: vector / 2-D / scalar / image observations,
    # discrete actions (tracing all 25 takes ~17 s on a 2-core CPU)
    # (Pendulum's and MinAtar's are traced by other tests)
    for env_id in ("Catch-bsuite", "FrozenLake-misc"):
        task = built[env_id]
        params = jax.eval_shape(task.init, jax.random.key(0))
        loss = jax.eval_shape(task.loss, params, jax.random.key(1))
        assert loss.shape == () and loss.dtype == jnp.float32, env_id
    with pytest.raises(ValueError, match="downloads MNIST"):
        tasks.get("MNISTBandit-bsuite")


def test_rollout_matches_a_python_loop_and_counts_steps_until_done(cartpole, cartpole_params):
    params = cartpole_params
    rollout = jax.jit(cartpole.rollout)
    for seed in range(2):
        key = jax.random.key(seed)
        total, length = rollout(params, key)
        ref_total, ref_length = _python_rollout(cartpole, params, key)
        assert int(length) == ref_length and float(total) == ref_total  # sums of 1.0 rewards
        assert 1 <= ref_length <= cartpole.episode_length


def test_continuous_actions_stay_in_bounds():
    task = control.make("pendulum", episode_length=20, num_episodes=2)
    params = jax.jit(task.init)(jax.random.key(0))
    big = jax.tree.map(lambda x: 100.0 * np.asarray(x), params)  # saturates tanh
    act = jax.jit(task.act)  # one program for both parameter sets
    for p in (params, big):
        _, action = act(p, (), np.ones((3,), np.float32))
        assert action.shape == (1,) and action.dtype == jnp.float32
        assert -2.0 <= float(action[0]) <= 2.0


def test_returns_are_deterministic_per_seed_and_vary_with_it():
    task = control.make("pendulum", episode_length=50, num_episodes=2)
    params = jax.jit(task.init)(jax.random.key(0))
    loss = jax.jit(task.loss)
    a, b = loss(params, jax.random.key(7)), loss(params, jax.random.key(7))
    assert float(a) == float(b)
    assert float(loss(params, jax.random.key(8))) != float(a)  # other starting angles
    # the held-out episodes are fixed by eval_seed alone
    same = control.make("pendulum", episode_length=50, num_episodes=2)
    np.testing.assert_array_equal(jax.random.key_data(task.eval_keys),
                                  jax.random.key_data(same.eval_keys))


def test_eval_episodes_are_not_training_episodes(cartpole):
    reset = jax.jit(jax.vmap(lambda k: cartpole.env.reset(jax.random.split(k)[0],
                                                          cartpole.env_params)[0]))
    held_out = np.asarray(reset(cartpole.eval_keys))
    # training keys of many steps, the evaluation seed's own key among them
    keys = [jax.random.key(cartpole.eval_seed), *(jax.random.key(s) for s in range(50))]
    train_starts = np.concatenate([np.asarray(reset(cartpole.train_keys(k))) for k in keys])
    # CartPole starts uniformly in [-0.05, 0.05]^4: equal float32 starts mean equal keys
    same = (held_out[:, None, :] == train_starts[None, :, :]).all(-1)
    assert not same.any()
    assert len(np.unique(held_out, axis=0)) == cartpole.num_eval_episodes


def test_population_vmap_equals_per_member_rollouts(cartpole):
    keys = jax.random.split(jax.random.key(0), 6)
    population = jax.jit(jax.vmap(cartpole.init))(keys)
    key = jax.random.key(11)

    @jax.jit
    def both(population, key):
        batched = jax.vmap(cartpole.loss, in_axes=(0, None))(population, key)
        one_by_one = jax.lax.map(lambda p: cartpole.loss(p, key), population)  # unbatched
        return batched, one_by_one

    batched, members = both(population, key)
    # the returns are means of sums of 1.0 rewards over 3 episodes: equal actions give
    # bit-equal losses
    np.testing.assert_array_equal(np.asarray(batched), np.asarray(members))
    assert len(np.unique(np.asarray(batched))) > 1  # the members do differ


def test_gru_policy_carries_state_through_the_episode():
    task = control.make("memory_chain")
    params = task.init(jax.random.key(0))  # eager: its ops' programs serve the later inits

    @jax.jit  # one program for both episodes
    def outputs(first):
        obs = jnp.zeros((task.episode_length, 3)).at[0].set(first)

        def step(carry, o):
            carry, out = task.policy.apply(params, carry, o)
            return carry, out

        return jax.lax.scan(step, task.policy.initial_carry(), obs)[1]

    a, b = (np.asarray(outputs(np.array(o, np.float32))) for o in ([1, 0, 1], [1, 0, -1]))
    # only the first observation differs: the last scores differ through the carry
    assert float(np.max(np.abs(a[-1] - b[-1]))) > 1e-4
    np.testing.assert_array_equal(a[0] != b[0], [True, True])
    mlp = control.make("memory_chain", policy="mlp")
    assert not mlp.policy.recurrent


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [("cartpol", {}, r"name='cartpol'.*cartpole.*CartPole-v1"),
     ("cartpole", {"policy": nn.Dense(3)}, r"policy outputs shape \(3,\).*\(2,\)"),
     ("pendulum", {"policy": nn.Dense(2)}, r"policy outputs shape \(2,\).*\(1,\)"),
     ("cartpole", {"policy": "lstm"}, r"policy='lstm'.*gru"),
     ("cartpole", {"policy": "conv"}, r"policy='conv' needs image observations"),
     ("cartpole", {"env_params": {"gravity": 9.8, "wind": 1}}, r"unknown fields \['wind'\]"),
     ("cartpole", {"episode_length": 0}, "episode_length"),
     ("cartpole", {"num_episodes": 1.5}, "num_episodes"),
     ("cartpole", {"obs_indices": (0, 4)}, r"obs_indices.*0\.\.3"),
     ("cartpole", {"threshold": float("nan")}, "threshold")],
)
def test_bad_input_names_the_argument(name, options, match):
    with pytest.raises(ValueError, match=match):
        control.make(name, **options)


def test_bad_types_and_fit_arguments(cartpole, cartpole_params):
    with pytest.raises(TypeError, match="policy must be"):
        control.make("cartpole", policy=lambda obs: obs)
    with pytest.raises(ValueError, match="unknown options"):
        tasks.get("cartpole", colour=1)
    method = methods.zeroth_order(cartpole.loss, "adam", 0.01, num_directions=4)
    params = cartpole_params
    with pytest.raises(ValueError, match=r"apply .* ControlTask"):
        train.fit(method, params, cartpole, apply=lambda p, x: x, steps=1)
    with pytest.raises(ValueError, match=r"target_metric='accuracy'.*\['return'\]"):
        train.fit(method, params, cartpole, steps=1, target_metric="accuracy")


def test_env_params_override_gymnax_defaults():
    task = control.make("cartpole", env_params={"max_steps_in_episode": 50})
    assert task.episode_length == 50 and task.env_params.gravity == 9.8


def test_es_improves_cartpole_through_fit(cartpole, cartpole_params):
    """fold_jax's antithetic ES with centered ranks through the one loop; env steps
    are evals x episodes x horizon."""
    params = cartpole_params
    method = methods.zeroth_order(cartpole.loss, "adam", 0.05, num_directions=16, sigma=0.1,
                                  shaping="centered_ranks", chunk_size=None)
    result = train.fit(method, params, cartpole, steps=12, eval_every=12, seed=0)
    h = result.history
    assert list(h["env_steps"]) == [e * 3 * 200 for e in h["evals"]]
    assert list(h["evals"]) == [0, 12 * 16]
    assert (h["episode_length"] == h["return"]).all()  # CartPole pays 1 per step alive
    # a random MLP keeps the pole up for ~10-20 steps; ES finds a balancing direction
    assert h["return"].iloc[-1] > 2 * h["return"].iloc[0]


def test_evosax_trains_on_control_through_fit():
    task = control.make("cartpole", episode_length=50, num_episodes=2, num_eval_episodes=4)
    params = task.init(jax.random.key(1))
    method = peers.evosax_method("Open_ES", task.loss, population_size=8, sigma=0.1)
    result = train.fit(method, params, task, steps=2, eval_every=2, target=1e9)
    last = result.history.iloc[-1]
    assert last["evals"] == 2 * (8 + 1)  # the population and the mean, each step
    assert last["env_steps"] == last["evals"] * 2 * 50 and not result.reached
    assert np.isfinite(last["return"])


def test_lowrank_es_runs_the_policies_fused():
    """rank=r perturbations reach the conv and GRU policies' layers as factors."""
    for name in ("breakout_minatar", "memory_chain"):  # the MLP's layers are nets.Dense
        task = control.make(name, episode_length=2, num_episodes=1)
        vg = zo.value_and_grad(task.loss, num_directions=4, rank=2)
        params = task.init(jax.random.key(0))
        assert vg.describe(params, jax.random.key(1))["path"] == "fused", name


def test_es_trains_a_gru_through_whole_episodes_on_memory_chain():
    """MemoryChain shows the context bit at the start and rewards recalling it 5 steps
    later (+1 right, -1 wrong). At the query the observation is the same whatever the
    context, so a memoryless policy's held-out return is a mean of 64 fair +-1 coins
    (mean 0, std 1/8): 0.75 is 6 standard deviations away. ES reaches it with a GRU
    carrying its state through the episode (1.0 after 25 steps in a manual run)."""
    task = control.make("memory_chain", num_episodes=16, num_eval_episodes=64)
    params = task.init(jax.random.key(0))
    method = methods.zeroth_order(task.loss, "adam", 0.03, num_directions=32, sigma=0.1,
                                  shaping="centered_ranks", chunk_size=None)
    result = train.fit(method, params, task, steps=30, eval_every=30, seed=0)
    assert result.history["return"].iloc[-1] >= 0.75
