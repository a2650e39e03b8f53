"""Sharded estimators equal single-device ones (same keys) on 1, 2, 3 and 8 devices.

JAX fixes its device count at start-up, so the comparison runs in a subprocess with
8 forced host (CPU) devices; meshes of 1, 2, 3 and 8 are built from them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.learn import parallel

HELPER = Path(__file__).parent / "helpers" / "parallel_check.py"


@pytest.fixture(scope="module")
def sharded_cases():
    # the suite's own XLA flags (tests/conftest.py) plus 8 host devices
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
                        "--xla_force_host_platform_device_count=8"}
    done = subprocess.run([sys.executable, str(HELPER)], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_eight_host_devices_were_forced(sharded_cases):
    assert sharded_cases["devices"] == 8
    assert {c["devices"] for c in sharded_cases["cases"]} == {1, 2, 3, 8}


def test_sharded_equals_single_device_for_every_estimator(sharded_cases):
    names = {c["case"] for c in sharded_cases["cases"] if c["devices"] == 3}
    assert names >= {"gaussian", "rademacher", "sphere", "forward_differences", "lowrank",
                     "lowrank_chunked", "centered_ranks", "sign", "forward_gradient", "gld",
                     "rso", "population_map"}
    eps = float(np.finfo(np.float32).eps)
    for case in sharded_cases["cases"]:
        # float32 sums in another order: relative error ~ sqrt(terms) * 2^-24 << 1e-4.
        # Zeroth-order cases also evaluate each loss in batches of another shape (XLA
        # may pick other kernels): a loss may move by its rounding, <= 64 eps |f| (the
        # 64 input features' dot products), and a coefficient divides that by sigma;
        # the estimate averages c_k u_k with |u| < 5.5 (the noise bound).
        bound = 1e-4 * max(case["scale"], 1.0)
        if "sigma" in case:
            bound += 5.5 * 64 * eps * abs(case["loss"]) / case["sigma"]
        assert case["diff"] <= bound, case


def test_mesh_and_population_map_errors():
    with pytest.raises(ValueError, match="devices"):
        parallel.mesh(len(jax.devices()) + 1)
    with pytest.raises(TypeError, match="devices"):
        parallel.mesh("all")
    with pytest.raises(ValueError, match="axis"):
        parallel.population_map(jnp.sum, parallel.mesh(), axis="other")
    with pytest.raises(TypeError, match="Mesh"):
        parallel.population_map(jnp.sum, mesh="cpu")
    f = parallel.population_map(lambda a, b: a + b)
    with pytest.raises(ValueError, match="leading axis"):
        f(jnp.ones(3), jnp.ones(4))
    with pytest.raises(TypeError, match="population_map"):
        from fold_jax.estimators import zo

        zo.value_and_grad(jnp.sum, population_map=3)


def test_shard_batch_requires_divisible_batch():
    m = parallel.mesh()
    n = m.shape[parallel.AXIS]
    placed = parallel.shard_batch(jnp.ones((2 * n, 3)), m)
    assert placed.shape == (2 * n, 3)
    if n > 1:
        with pytest.raises(ValueError, match="multiple"):
            parallel.shard_batch(jnp.ones((2 * n + 1, 3)), m)


def test_two_processes_over_jax_distributed_match_one(tmp_path):
    """A real multi-host run on loopback: 2 processes joined by fold_jax.learn.parallel.initialize
    (jax.distributed, gloo CPU collectives), one device each, mesh over both."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "FOLD_JAX_COORDINATOR": f"127.0.0.1:{port}",
               "FOLD_JAX_NUM_PROCESSES": "2", "FOLD_JAX_PROCESS_ID": str(rank)}
        # one device per process: the suite's compile flags (tests/conftest.py), without
        # a forced host device count
        env["XLA_FLAGS"] = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                                    if not f.startswith("--xla_force_host_platform_device"))
        procs.append(subprocess.Popen([sys.executable, str(HELPER.parent / "multihost_check.py")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(o["process"] for o in outs) == [0, 1]
    for o in outs:
        assert o["processes"] == 2 and o["global_devices"] == 2
        # the two programs fuse differently, so losses agree to float32 rounding
        # (|df| <~ 4 ulp of f ~ 2.3, about 1e-6); the estimate divides loss differences
        # by 2 sigma = 0.02 and multiplies them by |u| < 6: |dg| <~ 1e-6 / 0.02 * 6 = 3e-4
        assert o["value_diff"] <= 1e-5 and o["diff"] <= 3e-4


def test_initialize_reads_the_environment():
    assert parallel.initialize({}) is False
    with pytest.raises(ValueError, match="FOLD_JAX_NUM_PROCESSES"):
        parallel.initialize({"FOLD_JAX_COORDINATOR": "127.0.0.1:1"})
    with pytest.raises(ValueError, match="FOLD_JAX_PROCESS_ID"):
        parallel.initialize({"FOLD_JAX_COORDINATOR": "h:1", "FOLD_JAX_NUM_PROCESSES": "2",
                             "FOLD_JAX_PROCESS_ID": "2"})
    with pytest.raises(ValueError, match="integers"):
        parallel.initialize({"FOLD_JAX_COORDINATOR": "h:1", "FOLD_JAX_NUM_PROCESSES": "two",
                             "FOLD_JAX_PROCESS_ID": "0"})
