"""One process of a 2-process (2-"host") run on loopback; see tests/test_parallel.py.

Each process joins through fold_jax.learn.parallel.initialize (FOLD_JAX_* variables), builds
a mesh over the global devices (one CPU device per process) and compares the sharded
estimate with the single-process one for the same keys. Prints one JSON line.
"""

import json

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")

from fold_jax.estimators import zo  # noqa: E402
from fold_jax.learn import nets, parallel, tasks  # noqa: E402


def main() -> None:
    assert parallel.initialize()
    task = tasks.get("digits")
    net = nets.mlp((64, 16, 10), "relu")
    params = net.init(jax.random.key(0))
    loss = task.loss_fn(net.apply)
    x, y = task.x_train[:32], task.y_train[:32]
    key = jax.random.key(3)
    m = parallel.mesh()
    value, grads = jax.jit(parallel.value_and_grad(loss, mesh=m, num_directions=10, sigma=1e-2))(
        params, key, x, y)
    ref_value, ref_grads = jax.jit(zo.value_and_grad(loss, num_directions=10, sigma=1e-2))(
        params, key, x, y)
    diff = max(float(abs(a - b).max()) for a, b in zip(
        jax.tree.leaves(jax.device_get(grads)), jax.tree.leaves(jax.device_get(ref_grads)),
        strict=True))
    print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                      "global_devices": len(jax.devices()), "diff": diff,
                      "value_diff": abs(float(value) - float(ref_value))}))


if __name__ == "__main__":
    main()
