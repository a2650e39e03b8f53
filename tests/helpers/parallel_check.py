"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_parallel.py).

For meshes of 1, 2, 3 and 8 CPU devices, every sharded estimator / search step is
compared with its single-device twin on the same keys; prints one JSON line of
max abs differences (and device counts) per case.
"""

import json

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


def max_diff(a, b) -> float:
    """Largest absolute difference over the leaves, on the host: eager jnp ops on arrays of
    each mesh's sharding would each compile a program of their own (most of this check's
    compiles before)."""
    return max(float(np.max(np.abs(np.asarray(u, np.float32) - np.asarray(v, np.float32))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def max_abs(a) -> float:
    """Largest absolute entry over the leaves (the scale of an estimate), on the host."""
    return max(float(np.max(np.abs(np.asarray(u, np.float32)))) for u in jax.tree.leaves(a))


def main() -> None:
    task = tasks.get("digits")
    net = nets.mlp((64, 16, 10), "relu")
    params = net.init(jax.random.key(0))
    loss = task.loss_fn(net.apply)
    x, y = task.x_train[:32], task.y_train[:32]
    key = jax.random.key(7)
    out = {"devices": len(jax.devices()), "cases": []}
    # the single-device references, compiled once (they do not depend on the mesh)
    refs = {name: jax.jit(zo.value_and_grad(loss, sigma=1e-2, **opts))(params, key, x, y)
            for name, opts in ESTIMATORS.items()}
    forward_ref = jax.jit(zo.forward_value_and_grad(loss, num_directions=5))(params, key, x, y)
    singles = {"gld": search.gld(loss, min_radius=0.01),
               "rso": search.rso(loss, num_candidates=5)}
    search_refs = {name: jax.jit(m.step)(m.init(params), key, x, y)
                   for name, m in singles.items()}
    loss_value = float(loss(params, x, y))
    for n in (1, 2, 3, 8):
        mesh = parallel.mesh(n)
        # every estimator on 3 devices (no population here divides 3); on 8, the cases
        # with another padding (7 forward differences on 8 devices: one empty shard)
        # or schedule (chunked low rank); one on 1 and 2 devices (the forward gradient,
        # the searches and population_map run on 3 and 8 only). Each sharded program
        # compiles for its mesh (the cost of this test), so the grid is kept to these
        names = {1: ["gaussian"], 2: ["lowrank"], 3: list(ESTIMATORS),
                 8: ["gaussian", "forward_differences", "lowrank_chunked"]}[n]
        for name in names:
            ref = refs[name]
            got = jax.jit(parallel.value_and_grad(loss, mesh=mesh, sigma=1e-2,
                                                  **ESTIMATORS[name]))(params, key, x, y)
            out["cases"].append({"devices": n, "case": name, "diff": max_diff(ref, got),
                                 "scale": max_abs(ref),
                                 "loss": loss_value, "sigma": 1e-2})
        if n < 3:  # meshes of 1 and 2: one estimator each; the rest on 3 and 8 below
            continue
        got = jax.jit(parallel.forward_value_and_grad(loss, mesh=mesh, num_directions=5))(
            params, key, x, y)
        out["cases"].append({"devices": n, "case": "forward_gradient",
                             "diff": max_diff(forward_ref, got),
                             "scale": max_abs(forward_ref)})
        searches = [("gld", parallel.gld(loss, mesh=mesh, min_radius=0.01)),
                    ("rso", parallel.rso(loss, mesh=mesh, num_candidates=5))]
        for name, sharded in searches:
            s1, i1 = search_refs[name]
            s2, i2 = jax.jit(sharded.step)(sharded.init(params), key, x, y)
            out["cases"].append({"devices": n, "case": name,
                                 "diff": max(max_diff(s1.params, s2.params),
                                             abs(float(i1["loss"]) - float(i2["loss"]))),
                                 "scale": 1.0})
        vals = parallel.population_map(lambda v: jnp.sum(v ** 2), mesh)(jnp.arange(11.0)[:, None])
        out["cases"].append({"devices": n, "case": "population_map",
                             "diff": float(np.max(np.abs(np.asarray(vals) - np.arange(11.0) ** 2))),
                             "scale": 100.0})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
