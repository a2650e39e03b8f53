"""Throughput vs device count for the sharded population axis (fold_jax.learn.parallel).

For each mesh size the suite times one jitted step of: the full-rank gaussian and
the rank-4 zeroth-order estimators with their directions sharded over the mesh
(throughput = perturbed evaluations / s), and the data-parallel backprop step with
the batch sharded (throughput = examples / s). Digits MLP (64-128-128-10), batch 256.

On an accelerator backend the mesh sizes are 1, 2, 4, ... up to the devices present,
timed in this process. On CPU there is one device, so the suite runs a worker
process with ``--xla_force_host_platform_device_count`` = the CPU cores and meshes of
1..cores host devices (rows say so in ``device_kind`` and ``forced_host_devices``):
those devices share the machine's cores, so this measures how well the sharded code
uses them, not a multi-accelerator speedup.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

from fold_jax.bench.common import Job, check_profile

FILE = "scaling"
KEY = ["method", "devices", "forced_host_devices", "num_directions", "batch_size", "host",
       "backend"]

BATCH = 256
PROFILE = {"quick": {"num_directions": [256]}, "full": {"num_directions": [64, 256, 1024]}}


def _counts(available: int) -> list[int]:
    counts, n = [], 1
    while n < available:
        counts.append(n)
        n *= 2
    return [*counts, available]


def measure(devices: int, num_directions: int) -> list[dict]:
    """Rows for one mesh size (runs in whichever process has the devices)."""
    import jax
    import jax.numpy as jnp
    import optax

    from fold_jax.bench import timing
    from fold_jax.estimators import methods
    from fold_jax.learn import nets, parallel, tasks

    task = tasks.get("digits")
    net = nets.mlp((64, 128, 128, 10), "relu")
    params = net.init(jax.random.key(0))
    loss = task.loss_fn(net.apply)
    idx = jnp.arange(BATCH) % task.n_train
    x, y = task.x_train[idx], task.y_train[idx]
    mesh = parallel.mesh(devices)
    rows = []
    for method, opts in [("zo_gaussian", {}), ("zo_lowrank", {"rank": 4})]:
        vg = parallel.value_and_grad(loss, mesh=mesh, num_directions=num_directions,
                                     sigma=1e-2, **opts)
        t = timing.measure(vg, params, jax.random.key(1), x, y)
        rows.append({"method": method, "throughput": num_directions / t.median_s,
                     "throughput_unit": "perturbed evaluations/s", "step_median_s": t.median_s,
                     "step_iqr_s": t.iqr_s, "compile_s": t.compile_s})
    grad = parallel.data_parallel_gradient(loss, optax.adam(1e-3))
    state = grad.init(params)
    xs, ys = parallel.shard_batch((x, y), mesh)
    t = timing.measure(grad.step, state, jax.random.key(1), xs, ys)
    rows.append({"method": "backprop_data_parallel", "throughput": BATCH / t.median_s,
                 "throughput_unit": "examples/s", "step_median_s": t.median_s,
                 "step_iqr_s": t.iqr_s, "compile_s": t.compile_s})
    del methods
    for row in rows:
        row.update(devices=devices, num_directions=num_directions, batch_size=BATCH)
    return rows


def _worker(devices: int, forced: int, num_directions: int) -> list[dict]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
                        f"--xla_force_host_platform_device_count={forced}".strip()}
    code = ("import json, sys; from fold_jax.bench.suites.scaling import measure; "
            f"print(json.dumps(measure({devices}, {num_directions})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=False, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"scaling worker ({devices} of {forced} host devices) failed:\n"
                           f"{done.stderr[-2000:]}")
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    for row in rows:
        row.update(forced_host_devices=forced, device_kind=f"cpu ({forced} forced host devices)")
    return rows


def jobs(profile: str) -> Iterator[Job]:
    import jax

    check_profile(profile)
    backend = jax.default_backend()
    for k in PROFILE[profile]["num_directions"]:
        if backend == "cpu":
            forced = max(2, os.cpu_count() or 1)
            for n in _counts(forced):
                yield Job({"method": "backprop_data_parallel", "devices": n,
                           "forced_host_devices": forced, "num_directions": k,
                           "batch_size": BATCH, "backend": backend},
                          lambda n=n, k=k, forced=forced: _worker(n, forced, k),
                          label=f"scaling {n}/{forced} host devices K={k}", cost=20.0)
        else:
            for n in _counts(len(jax.devices())):
                yield Job({"method": "backprop_data_parallel", "devices": n,
                           "forced_host_devices": 0, "num_directions": k,
                           "batch_size": BATCH, "backend": backend},
                          lambda n=n, k=k: [dict(r, forced_host_devices=0) for r in measure(n, k)],
                          label=f"scaling {n} devices K={k}", cost=10.0)
