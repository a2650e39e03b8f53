"""One process of a 2-process (2-"host") run on loopback; see tests/test_parallel.py.

Each process joins through fold_jax.learn.parallel.initialize (FOLD_JAX_* variables), builds
a mesh over the global devices (one CPU device per process) and compares the sharded
estimate with the single-process one for the same keys. Prints one JSON line.

Start-up (imports) and compiling are this check's cost: the net is linear (64 -> 10, two
leaves; a hidden layer only made both programs larger) and its params come from one
jitted init (an eager init compiled a program per operation).
"""

import json

import jax
import numpy as np

jax.config.update("jax_cpu_collectives_implementation", "gloo")

from fold_jax.estimators import zo  # noqa: E402
from fold_jax.learn import nets, parallel, tasks  # noqa: E402


def main() -> None:
    assert parallel.initialize()
    task = tasks.get("digits")
    net = nets.mlp((64, 10), "relu")
    params = jax.jit(net.init)(jax.random.key(0))
    loss = task.loss_fn(net.apply)
    x, y = task.x_train[:32], task.y_train[:32]
    key = jax.random.key(3)
    m = parallel.mesh()
    value, grads = jax.jit(parallel.value_and_grad(loss, mesh=m, num_directions=10, sigma=1e-2))(
        params, key, x, y)
    ref_value, ref_grads = jax.jit(zo.value_and_grad(loss, num_directions=10, sigma=1e-2))(
        params, key, x, y)
    # on the host: an eager jnp op would compile a program of its own
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
        jax.tree.leaves(jax.device_get(grads)), jax.tree.leaves(jax.device_get(ref_grads)),
        strict=True))
    print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                      "global_devices": len(jax.devices()), "diff": diff,
                      "value_diff": abs(float(value) - float(ref_value))}))


if __name__ == "__main__":
    main()
