"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_parallel.py).

For meshes of 1, 2, 3 and 8 CPU devices, every sharded estimator / search step is
compared with its single-device twin on the same keys; prints one JSON line of
max abs differences (and device counts) per case.

Compiling is this check's whole cost (each sharded program compiles for its mesh), so
its programs are kept small and few: the net is linear (64 -> 10: two leaves, a 2-D one
for the low-rank cases; a hidden layer only made every program larger), its params are
built by one jitted init, the single-device references are one program (measured: one
program of the 11 references compiles faster than 11 programs), while each sharded case
keeps a program of its own (a program of all 11 sharded cases compiled slower than the
11 apart: sharding propagation grows faster than the program).
"""

import json
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fold_jax.estimators import search, zo
from fold_jax.learn import nets, parallel, tasks

ESTIMATORS = {
    "gaussian": dict(num_directions=10),
    "rademacher": dict(num_directions=10, noise="rademacher"),
    "sphere": dict(num_directions=10, noise="sphere"),
    "forward_differences": dict(num_directions=7, antithetic=False),
    "lowrank": dict(num_directions=14, rank=2),
    "lowrank_chunked": dict(num_directions=14, rank=2, chunk_size=4),
    "centered_ranks": dict(num_directions=10, shaping="centered_ranks"),
    "sign": dict(num_directions=10, sign=True),
}
SIGMA = 1e-2
FORWARD = dict(num_directions=5)  # the forward gradient's tangents
SEARCHES = {"gld": dict(min_radius=0.01), "rso": dict(num_candidates=5)}

# the cases of each mesh: every estimator on 3 devices (no population here divides 3);
# on 8, the cases with another padding (7 forward differences on 8 devices: one empty
# shard; 10 directions: 3 padded rows) or schedule (chunked low rank); one each on 1 and
# 2 devices. The forward gradient and the searches run on 3 and 8 (5 tangents: a padded
# row on 3, padded shards on 8; 10 rso candidates and the gld ladder likewise).
CASES = {1: ["gaussian"], 2: ["lowrank"],
         3: [*ESTIMATORS, "forward_gradient", *SEARCHES],
         8: ["gaussian", "forward_differences", "lowrank_chunked", "forward_gradient",
             *SEARCHES]}


def max_diff(a, b) -> float:
    """Largest absolute difference over the leaves, on the host: eager jnp ops on arrays of
    each mesh's sharding would each compile a program of their own."""
    return max(float(np.max(np.abs(np.asarray(u, np.float32) - np.asarray(v, np.float32))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def max_abs(a) -> float:
    """Largest absolute entry over the leaves (the scale of an estimate), on the host."""
    return max(float(np.max(np.abs(np.asarray(u, np.float32)))) for u in jax.tree.leaves(a))


def program(loss: Callable, names: list[str], mesh=None) -> Callable:
    """One jitted ``(params, key, x, y) -> {name: result}`` for the named cases, sharded
    over ``mesh`` (None: the single-device estimators). An estimator's result is its
    (value, grads); a search case's, its step from ``init(params)``: (state, info).

    Args:
        loss: ``loss(params, x, y) -> scalar``.
        names: case names (ESTIMATORS, "forward_gradient", SEARCHES).
        mesh: the device mesh, or None.

    Returns:
        The jitted function.
    """
    on = {} if mesh is None else {"mesh": mesh}
    sharded = mesh is not None
    zo_vg = parallel.value_and_grad if sharded else zo.value_and_grad
    fwd = parallel.forward_value_and_grad if sharded else zo.forward_value_and_grad
    makers = {"gld": parallel.gld if sharded else search.gld,
              "rso": parallel.rso if sharded else search.rso}
    fns = {}
    for name in names:
        if name in ESTIMATORS:
            fns[name] = zo_vg(loss, sigma=SIGMA, **on, **ESTIMATORS[name])
        elif name == "forward_gradient":
            fns[name] = fwd(loss, **on, **FORWARD)
        else:
            m = makers[name](loss, **on, **SEARCHES[name])
            fns[name] = lambda p, k, x, y, m=m: m.step(m.init(p), k, x, y)
    return jax.jit(lambda p, k, x, y: {name: f(p, k, x, y) for name, f in fns.items()})


def main() -> None:
    task = tasks.get("digits")
    net = nets.mlp((64, 10), "relu")
    params = jax.jit(net.init)(jax.random.key(0))
    loss = task.loss_fn(net.apply)
    x, y = task.x_train[:32], task.y_train[:32]
    key = jax.random.key(7)
    out = {"devices": len(jax.devices()), "cases": []}
    # the single-device references: one program (they do not depend on the mesh)
    refs = program(loss, list(CASES[3]))(params, key, x, y)
    loss_value = float(refs["forward_differences"][0])  # one-sided: the value is f(params)
    for n, names in CASES.items():
        mesh = parallel.mesh(n)
        got = {name: program(loss, [name], mesh)(params, key, x, y)[name] for name in names}
        for name in names:
            ref, case = refs[name], {"devices": n, "case": name}
            if name in SEARCHES:
                (s1, i1), (s2, i2) = ref, got[name]
                case.update(diff=max(max_diff(s1.params, s2.params),
                                     abs(float(i1["loss"]) - float(i2["loss"]))), scale=1.0)
            else:
                case.update(diff=max_diff(ref, got[name]), scale=max_abs(ref))
                if name in ESTIMATORS:
                    case.update(loss=loss_value, sigma=SIGMA)
            out["cases"].append(case)
        if n >= 3:  # population_map itself, called eagerly, on 11 (padded) elements
            vals = parallel.population_map(lambda v: jnp.sum(v ** 2), mesh)(
                jnp.arange(11.0)[:, None])
            out["cases"].append({"devices": n, "case": "population_map",
                                 "diff": float(np.max(np.abs(np.asarray(vals)
                                                             - np.arange(11.0) ** 2))),
                                 "scale": 100.0})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
