"""Language-model kernels -> results/lm_kernels.csv: memory table and scale sweep.

For each transformer LM (``nets.transformer_lm`` presets tiny ~1.3e5, small ~1e6,
base ~1.1e7 params) on real Shakespeare windows of T tokens, B sequences a loss, one
job measures one step of each method:

- ``inference``: a forward pass on B sequences;
- ``adam``: a backprop Adam step (``methods.gradient``);
- ``mezo``: MeZO's ZO-SGD step: ``zo.value_and_grad`` with one rademacher (SPSA) pair,
  full rank, fed to ``optax.sgd``;
- ``zo_fused``: ``zo.value_and_grad(rank=RANK, num_directions=K)`` fed to
  ``optax.sgd``; ``vg.describe`` gives the fused / materialized leaf counts;
- ``evosax_Open_ES`` / ``evosax_SNES``: ``peers.evosax_method`` with population K
  (ask, vmapped evaluation of K dense parameter vectors, tell). Where the population
  (K x params float32) exceeds ``MAX_POPULATION_BYTES`` the row says so (``fits``
  False, ``reason``) instead of being measured.

Each step is AOT-compiled on its own (compile_s, compiled memory = argument + output
+ temp - alias bytes, :func:`fold_jax.bench.timing.mem_bytes`) and timed in alternating
rounds with inference on the sequences it evaluates (evals x B), so ``time_ratio``
and ``mem_ratio`` are same-time, same-machine comparisons. Goal of the zo_fused rows:
time_ratio <= 1.2, mem_ratio <= 1.25, 0 materialized leaves. Columns:
``results/COLUMNS.md``. Peak device memory is not measured (compiled memory only).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from fold_jax import results
from fold_jax.bench import timing
from fold_jax.bench.common import Job, check_profile

FILE = "lm_kernels"
KEY = results.key(FILE)

METHODS = ("inference", "adam", "mezo", "zo_fused", "evosax_Open_ES", "evosax_SNES")
RANK = 4
SIGMA = 1e-3
TIME_GOAL, MEM_GOAL = 1.2, 1.25  # zo_fused vs inference on K x B sequences
MAX_POPULATION_BYTES = 2 ** 30  # evosax's K x d float32 population beyond this: not run
MAX_CHARS = 60_000  # Shakespeare characters loaded: windows to draw batches from
PROFILE = {
    "quick": {"models": ("tiny",), "seq_lens": (64, 128), "num_directions": (8,),
              "batch_size": 4},
    "full": {"models": ("tiny", "small", "base"), "seq_lens": (64, 128, 256),
             "num_directions": (8, 32), "batch_size": 4},
}
BUDGET = {"quick": dict(min_rounds=5, max_rounds=50, max_time_s=0.5),
          "full": dict(min_rounds=10, max_rounds=200, max_time_s=3.0)}
# expected seconds of one job on a shared 2-core CPU (compiles dominate)
COST = {"tiny": 60.0, "small": 90.0, "base": 400.0}
# Left out of the default quick run (``--only lm`` runs its quick profile, the tiny model
# only): its compiles took 4-5 minutes a job on a loaded 2-core CPU, and the quick run
# has no room left under its 20-minute aim until the other suites make some.
DEFAULT_PROFILES = ("full",)


@functools.cache
def _task(seq_len: int):
    from fold_jax.learn import tasks

    return tasks.get("shakespeare", T=seq_len, max_chars=MAX_CHARS)


def setup(model: str, seq_len: int, batch_size: int):
    """The model, its params, the loss and one batch of real windows.

    Args:
        model: a ``nets.TRANSFORMER_PRESETS`` key.
        seq_len: tokens per sequence.
        batch_size: sequences per batch.

    Returns:
        ``(net, params, loss, x (B, T) int32, y (B, T) int32)``.
    """
    from fold_jax.learn import nets

    task = _task(seq_len)
    net = nets.transformer_lm(task.n_outputs, model)
    params = net.init(jax.random.key(0))
    idx = jnp.arange(batch_size) * (task.n_train // batch_size)
    return net, params, task.loss_fn(net.apply), task.x_train[idx], task.y_train[idx]


def leaf_counts(description: dict[str, Any]) -> dict[str, Any]:
    """Fused / materialized / full-rank leaf counts from ``vg.describe(params, *args)``.

    Args:
        description: the describe() dict (its ``path`` and ``leaves``).

    Returns:
        ``{"path", "fused_leaves", "materialized_leaves", "full_rank_leaves"}``.
    """
    kinds = [leaf["association"] for leaf in description["leaves"].values()]
    return {"path": description["path"],
            "fused_leaves": sum(k in ("factored", "dense", "mixed") for k in kinds),
            "materialized_leaves": kinds.count("materialized"),
            "full_rank_leaves": kinds.count("full_rank")}


def goal(time_ratio: float, mem_ratio: float, materialized: int) -> str:
    """'met' or 'missed: ...' naming each part of the zo_fused goal missed.

    Args:
        time_ratio: step / inference time on K x B sequences.
        mem_ratio: step / inference compiled memory.
        materialized: materialized leaves.

    Returns:
        The goal text.
    """
    missed = []
    if not time_ratio <= TIME_GOAL:
        missed.append(f"time {time_ratio:.2f}x > {TIME_GOAL}x")
    if not mem_ratio <= MEM_GOAL:
        missed.append(f"memory {mem_ratio:.2f}x > {MEM_GOAL}x")
    if materialized:
        missed.append(f"{materialized} materialized leaves")
    return "missed: " + ", ".join(missed) if missed else "met"


def _method(method: str, loss: Callable, num_directions: int):
    """``(step, init, evals, vg or None, rank)`` of one method (not inference)."""
    import optax

    from fold_jax.estimators import methods, peers, zo

    if method == "adam":
        m = methods.gradient(loss, optax.adam(1e-3))
        return m.step, m.init, 1, None, None
    if method == "mezo":
        vg = zo.value_and_grad(loss, num_directions=2, sigma=SIGMA, noise="rademacher")
        m = methods.descent(vg.with_info, optax.sgd(1e-6), evals_per_step=vg.evals,
                            name="mezo")
        return m.step, m.init, vg.evals, vg, 0
    if method == "zo_fused":
        vg = zo.value_and_grad(loss, rank=RANK, num_directions=num_directions, sigma=SIGMA)
        m = methods.descent(vg.with_info, optax.sgd(1e-3), evals_per_step=vg.evals,
                            name="zo_fused")
        return m.step, m.init, vg.evals, vg, RANK
    strategy = method.removeprefix("evosax_")
    m = peers.evosax_method(strategy, loss, population_size=num_directions, sigma=SIGMA,
                            eval_mean=False)
    return m.step, m.init, num_directions, None, 0


def measure(model: str, seq_len: int, batch_size: int, num_directions: int,
            profile: str = "quick", methods: tuple[str, ...] | None = None
            ) -> list[dict[str, Any]]:
    """One row per method of ``methods`` on one configuration (columns: COLUMNS.md).

    Args:
        model: a transformer_lm preset.
        seq_len: tokens per sequence T.
        batch_size: sequences per loss B.
        num_directions: K of the zo_fused and evosax rows.
        profile: the rounds budget (``BUDGET``).
        methods: which of ``METHODS`` to measure (None: all).

    Returns:
        The rows.
    """
    from fold_jax.learn import nets

    budget = BUDGET[check_profile(profile)]
    methods = METHODS if methods is None else methods
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"methods={unknown} unknown; allowed: {list(METHODS)}")
    net, params, loss, x, y = setup(model, seq_len, batch_size)
    n = nets.count_params(params)
    references: dict[int, tuple[Any, tuple, float]] = {}

    def reference(evals: int):  # inference on evals x B sequences, compiled once
        if evals not in references:
            args = (params, jnp.tile(x, (evals, 1)))
            references[evals] = (*timing.aot(net.apply, *args), args)
        compiled, _, args = references[evals]
        return compiled, args

    single_mem = timing.mem_bytes(reference(1)[0])
    rows = []
    for method in methods:
        row: dict[str, Any] = dict(model=model, n_params=n, seq_len=seq_len,
                                   batch_size=batch_size, num_directions=num_directions,
                                   method=method, profile=profile, fits=True, reason="",
                                   path="", goal="", single_inference_mem_bytes=single_mem)
        nan_counts = dict(fused_leaves=math.nan, materialized_leaves=math.nan,
                          full_rank_leaves=math.nan)
        if method == "inference":
            compiled, args = reference(1)
            row.update(rank=None, evals=1, compile_s=references[1][1], **nan_counts)
            (t_step,) = timing.interleaved([(compiled, args)], block_each=True, **budget)
            t_ref = t_step  # its own reference: the ratios are 1 by definition
        else:
            step, init, evals, vg, rank = _method(method, loss, num_directions)
            row.update(rank=rank, evals=evals, **nan_counts)
            if vg is not None:
                row.update(leaf_counts(vg.describe(params, x, y)))
            population = num_directions * n * 4
            if method.startswith("evosax") and population > MAX_POPULATION_BYTES:
                row.update(fits=False, reason=f"population {num_directions} x {n} float32 = "
                           f"{population / 2**30:.2f} GiB > {MAX_POPULATION_BYTES / 2**30:.0f} "
                           f"GiB (MAX_POPULATION_BYTES)")
                rows.append(_unmeasured(row, batch_size))
                continue
            args = (init(params), jax.random.key(1), x, y)
            compiled, compile_s = timing.aot(step, *args)
            row["compile_s"] = compile_s
            t_step, t_ref = timing.interleaved([(compiled, args), reference(evals)],
                                               block_each=True, **budget)
        row.update(_measured(t_step, t_ref, row, single_mem))
        if method == "zo_fused":
            row["goal"] = goal(row["time_ratio"], row["mem_ratio"], row["materialized_leaves"])
        rows.append(row)
    return rows


def _measured(t_step, t_ref, row: dict[str, Any], single_mem: float) -> dict[str, Any]:
    return {"step_median_s": t_step.median_s, "step_iqr_s": t_step.iqr_s,
            "rounds": t_step.rounds, "mem_bytes": t_step.mem_bytes,
            "inference_median_s": t_ref.median_s, "inference_mem_bytes": t_ref.mem_bytes,
            "ref_sequences": row["evals"] * row["batch_size"],
            "time_ratio": t_step.median_s / t_ref.median_s,
            "mem_ratio": t_step.mem_bytes / t_ref.mem_bytes,
            "mem_vs_single_inference": t_step.mem_bytes / single_mem}


def _unmeasured(row: dict[str, Any], batch_size: int) -> dict[str, Any]:
    nan = math.nan
    return {**row, "compile_s": nan, "step_median_s": nan, "step_iqr_s": nan, "rounds": nan,
            "mem_bytes": nan, "inference_median_s": nan, "inference_mem_bytes": nan,
            "ref_sequences": row["evals"] * batch_size, "time_ratio": nan, "mem_ratio": nan,
            "mem_vs_single_inference": nan}


def configurations(profile: str) -> list[dict[str, Any]]:
    """The (model, seq_len, batch_size, num_directions) of every job of ``profile``.

    Args:
        profile: quick or full.

    Returns:
        One dict per job, in order.
    """
    p = PROFILE[check_profile(profile)]
    return [dict(model=m, seq_len=t, batch_size=p["batch_size"], num_directions=k)
            for m in p["models"] for t in p["seq_lens"] for k in p["num_directions"]]


def jobs(profile: str) -> Iterator[Job]:
    """One job per configuration; it writes one row per method.

    Args:
        profile: quick or full.

    Returns:
        An iterator of :class:`fold_jax.bench.common.Job`.
    """
    for c in configurations(profile):
        label = f"lm {c['model']} T{c['seq_len']} B{c['batch_size']} K{c['num_directions']}"
        yield Job(dict(c), functools.partial(measure, profile=profile, **c), label,
                  COST[c["model"]] * c["seq_len"] / 64)
