"""Kernel micro-benchmarks -> results/kernels.csv, one compiled kernel a row.

Benches (``bench`` column), all on the digits MLP 64-w-w-10 unless said otherwise:

- forward / gradient_step: a forward pass and a backprop (Adam) step, w in {32, 128}
  (full: 512 too), batch 32 and 256 (full: 8..512);
- zo_fused_lowrank: the rank-4 estimator, K = 128 directions, batch 256, through
  fold_jax's layers, fused=True or "auto", in one chunk or 16 evaluations a chunk, and
  with every other option at its default (``zo_gaussian_fused_default``: the headline
  row, target >= 0.95 of inference);
- zo_fused_flax: a user's flax.linen MLP on the fused path, with the same net from
  fold_jax.learn.nets timed beside it (``speedup_vs_baseline``);
- zo_fullrank_vs_es: the full-rank estimator vs an OpenAI-ES generation that
  materializes its population;
- zo_chunk_memory: compiled memory of a K = 128 estimator with chunk_size = c vs
  inference on c x batch;
- zo_scaling_directions / zo_scaling_params: step time vs K and vs w;
- search_step / forward_gradient_step: direct-search and forward-gradient steps;
- xnor_matmul / bcsr_matmul: packed binarized and BCSR sparse matmuls against the f32
  dense matmul of the same shape.

Every row is one :class:`Kernel` (its configuration, the key of kernels.csv, is known
before anything is built); :func:`measure` AOT-compiles it (compile_s, FLOPs, memory)
and times it in alternating rounds with its reference: plain inference on
num_directions x batch examples (``inference_equiv_s``, ``frac_of_inference``) or, for
the binarized and sparse matmuls, the dense matmul (``dense_median_s``,
``speedup_vs_dense``), plus an optional second kernel (``baseline``,
``speedup_vs_baseline``). Column meanings: ``results/COLUMNS.md``. ``fold_jax.bench.run`` runs
these as the ``kernels`` part; ``pytest bench`` times the same kernels with
pytest-benchmark (its tables only; it writes no rows).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

from fold_jax import results
from fold_jax.bench import timing
from fold_jax.bench.common import Job, check_profile, config_jobs, config_label
from fold_jax.bench.kernel_cases import (
    SHAPES,
    SIGMA,
    Case,
    bcsr_case,
    chunk_memory_case,
    core_case,
    flax_case,
    forward_gradient_case,
    fullrank_vs_es_case,
    fused_case,
    openai_es_reference,
    scaling_case,
    search_case,
    search_evals,
    xnor_case,
)

# the cases (fold_jax.bench.kernel_cases) stay importable from here
__all__ = ["BUDGET", "CONFIG", "FILE", "KEY", "LABEL", "PROFILE", "SHAPES", "SIGMA", "SPARSITIES",
           "Case", "Kernel", "chunk_used", "config", "jobs", "kernels", "measure", "mlp_params",
           "openai_es_reference", "search_evals"]

FILE = "kernels"
KEY = results.key(FILE)
CONFIG = [c for c in KEY if c not in results.MACHINE_KEY]  # a kernel's configuration

# rounds / time budget per kernel by profile
BUDGET = {"quick": dict(min_rounds=5, max_rounds=50, max_time_s=0.25),
          "full": dict(min_rounds=10, max_rounds=500, max_time_s=2.0)}
PROFILE = {
    "quick": {"widths": [32, 128], "batches": [32, 256], "chunks": [None, 16],
              "memory_chunks": [8, 32], "scale_k": [8, 32, 128, 512],
              "scale_w": [16, 128, 1024], "forward_k": [1, 8], "es_k": [32, 128]},
    "full": {"widths": [32, 128, 512], "batches": [8, 32, 128, 512],
             "chunks": [None, 8, 16, 32], "memory_chunks": [4, 8, 16, 32, 64],
             "scale_k": [8, 32, 128, 512], "scale_w": [16, 64, 128, 512, 1024],
             "forward_k": [1, 8, 32], "es_k": [32, 128, 512]},
}
SPARSITIES = [0.5, 0.9, 0.95, 0.99]


class Kernel(NamedTuple):
    """One row of kernels.csv: its configuration (``config``: the key columns but the
    machine's), how to build it, a label and the expected seconds (``cost``, 2-core
    CPU, quick profile) it takes to measure."""

    config: dict[str, Any]
    build: Callable[[], Case]
    label: str
    cost: float
    x64: bool = False


def config(bench: str, method: str, *, variant: str = "dense", n_params: int | None = None,
           batch_size: int | None = None, num_directions: int | None = None,
           rank: int | None = None, chunk_size: int | None = None,
           sparsity: float | None = None, dtype: str = "float32", width: int | None = None,
           shape: str | None = None, word_bits: int | None = None,
           layout: str | None = None) -> dict[str, Any]:
    """A kernel's configuration: every key column of kernels.csv but the machine's.

    Args:
        bench: the benchmark.
        method: the kernel within it.
        variant: dense, binarized or pruned.
        n_params: parameters (matmuls: nonzero weights).
        batch_size: examples per call.
        num_directions: evaluations per step (None: no directions).
        rank: low-rank perturbation rank, 0 for full rank (None: no perturbation).
        chunk_size: evaluations per chunk actually run (None: nothing to chunk).
        sparsity: fraction of zero weights (None: not applicable).
        dtype: operand dtype.
        width: hidden width where the bench varies it.
        shape: matmul shape MxKxN.
        word_bits: bits per packed word.
        layout: BCSR activation layout.

    Returns:
        ``{column: value}`` in ``CONFIG`` order.
    """
    values = dict(bench=bench, method=method, variant=variant, n_params=n_params,
                  batch_size=batch_size, num_directions=num_directions, rank=rank,
                  chunk_size=chunk_size, sparsity=sparsity, dtype=dtype, width=width,
                  shape=shape, word_bits=word_bits, layout=layout)
    return {c: values[c] for c in CONFIG}


def mlp_params(width: int, n_in: int = 64, n_out: int = 10) -> int:
    """Parameters of the MLP n_in-width-width-n_out (weights and biases).

    Args:
        width: hidden width.
        n_in: inputs.
        n_out: outputs.

    Returns:
        The count.
    """
    return (n_in + 1) * width + (width + 1) * width + (width + 1) * n_out


def chunk_used(num_directions: int, chunk_size: int | str | None = "auto",
               rank: int | None = None) -> int:
    """Loss evaluations per chunk that ``zo.value_and_grad(num_directions=...,
    chunk_size=...)`` runs (num_directions when one chunk).

    Args:
        num_directions: evaluations per step.
        chunk_size: as given to ``zo.value_and_grad``.
        rank: as given to ``zo.value_and_grad``.

    Returns:
        The evaluations per chunk.
    """
    from fold_jax.estimators import zo

    o = zo.value_and_grad(lambda p: 0.0, num_directions=num_directions, chunk_size=chunk_size,
                          rank=rank).options
    return o.per_chunk * o.signs


# ----------------------------------------------------------------------------- kernels


# a kernel's label: its bench and method, then each configuration value it has, prefixed
LABEL = (("bench", ""), ("method", ""), ("width", "w"), ("batch_size", "b"),
         ("num_directions", "K"), ("chunk_size", "chunk"), ("sparsity", "s"), ("shape", ""),
         ("word_bits", "u"), ("layout", ""))


def kernels(profile: str) -> list[Kernel]:
    """Every kernel of ``profile``, in a fixed order.

    Args:
        profile: quick or full.

    Returns:
        The :class:`Kernel` list (nothing is built yet).
    """
    p = PROFILE[check_profile(profile)]
    out: list[Kernel] = []

    def add(cfg: dict[str, Any], build: Callable[[], Case], cost: float, x64: bool = False):
        out.append(Kernel(cfg, build, config_label(cfg, LABEL), cost, x64))

    for bench, cost in (("forward", 0.3), ("gradient_step", 1.5)):
        for w in p["widths"]:
            for b in p["batches"]:
                add(config(bench, "inference" if bench == "forward" else "adam",
                           n_params=mlp_params(w), batch_size=b, width=w),
                    functools.partial(core_case, bench, w, b), cost)
    n = mlp_params(128)
    for shape in SHAPES:
        m, k, nn = shape
        for word_bits in (32, 64):
            add(config("xnor_matmul", "xnor_packed", variant="binarized", n_params=k * nn,
                       batch_size=m, dtype=f"uint{word_bits}", shape="x".join(map(str, shape)),
                       word_bits=word_bits),
                functools.partial(xnor_case, shape, word_bits), 0.4 if nn <= 1024 else 0.6,
                x64=word_bits == 64)
    for sparsity in SPARSITIES:
        m, k, nn = SHAPES[0]
        for layout in ("feature_major", "row_major"):
            add(config("bcsr_matmul", "bcsr", variant="pruned",
                       n_params=round((1 - sparsity) * k * nn), batch_size=m, sparsity=sparsity,
                       shape="x".join(map(str, SHAPES[0])), layout=layout),
                functools.partial(bcsr_case, sparsity, layout), 2.5 if sparsity <= 0.5 else 1.0)
    for chunk in p["chunks"]:
        for fused, method in ((True, "zo_gaussian_fused"), ("auto", "zo_gaussian_fused_auto")):
            add(config("zo_fused_lowrank", method, n_params=n, batch_size=256,
                       num_directions=128, rank=4, chunk_size=chunk_used(128, chunk, 4)),
                functools.partial(fused_case, fused, chunk), 3.5)
    add(config("zo_fused_lowrank", "zo_gaussian_fused_default", n_params=n, batch_size=256,
               num_directions=128, rank=4, chunk_size=chunk_used(128, "auto", 4)),
        functools.partial(fused_case, "auto", "auto"), 3.5)
    add(config("zo_fused_flax", "zo_gaussian_fused_linen", n_params=n, batch_size=256,
               num_directions=128, rank=4, chunk_size=16), flax_case, 6.0)
    for k in p["es_k"]:
        for impl, chunk in (("zo_gaussian", k), ("zo_gaussian_chunk32", 32),
                            ("openai_es_materialized", k)):
            add(config("zo_fullrank_vs_es", impl, n_params=n, batch_size=256, num_directions=k,
                       rank=0, chunk_size=chunk_used(k, None) if chunk == k else chunk),
                functools.partial(fullrank_vs_es_case, impl, k), 3.5)
    for chunk in p["memory_chunks"]:
        for impl, rank in (("zo_gaussian", 0), ("zo_gaussian_r4", 4), ("inference", None)):
            cost = 0.5 if impl == "inference" else (25.0 if rank == 0 else 20.0) * 8 / chunk
            add(config("zo_chunk_memory", impl, n_params=n, batch_size=256, num_directions=128,
                       rank=rank, chunk_size=chunk_used(128, chunk) if rank is not None
                       else chunk),
                functools.partial(chunk_memory_case, impl, chunk), cost)
    for k in p["scale_k"]:
        for rank in (None, 4):
            add(config("zo_scaling_directions", "zo_gaussian" + ("_r4" if rank else ""),
                       n_params=n, batch_size=64, num_directions=k, rank=rank or 0,
                       chunk_size=chunk_used(k, "auto", rank)),
                functools.partial(scaling_case, k, 128, rank, "auto"),
                2 + k / (256 if rank else 64))
    for w in p["scale_w"]:
        for rank in (None, 4):
            add(config("zo_scaling_params", "zo_gaussian" + ("_r4" if rank else ""),
                       n_params=mlp_params(w), batch_size=64, num_directions=32, rank=rank or 0,
                       chunk_size=chunk_used(32, 8, rank), width=w),
                functools.partial(scaling_case, 32, w, rank, 8), 2 + w / (512 if rank else 128))
    for name in ("gld", "rso", "one_plus_one"):
        add(config("search_step", name, n_params=n, batch_size=256,
                   num_directions=search_evals(name), rank=0),
            functools.partial(search_case, name), 0.5 if name == "one_plus_one" else 1.5)
    for k in p["forward_k"]:
        add(config("forward_gradient_step", "forward_gradient", n_params=n, batch_size=256,
                   num_directions=k, rank=0),
            functools.partial(forward_gradient_case, k), 2 + k / 8)
    return out


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def measure(kernel: Kernel, profile: str = "quick") -> dict[str, Any]:
    """Build, compile and time ``kernel``: its kernels.csv row (columns:
    results/COLUMNS.md).

    The kernel is AOT-compiled on its own (compile_s, flops, mem_bytes), then timed in
    alternating rounds with its reference (and baseline), so every ratio is a same-time
    comparison: ``frac_of_inference`` = inference_equiv_s / step_median_s for an
    inference reference, ``speedup_vs_dense`` = dense_median_s / step_median_s for a
    dense one, ``speedup_vs_baseline`` = baseline_median_s / step_median_s.

    Args:
        kernel: one of :func:`kernels`.
        profile: the budget of rounds (``BUDGET``).

    Returns:
        The row (a dict).
    """
    budget = BUDGET[check_profile(profile)]
    context = jax.enable_x64(True) if kernel.x64 else contextlib.nullcontext()
    with context:
        case = kernel.build()
        c = kernel.config
        wrong = {k: (c[k], v) for k, v in (case.actual or {}).items()
                 if results.normalize_key(c, [k]) != results.normalize_key({k: v}, [k])}
        if wrong:
            raise RuntimeError(f"kernel {kernel.label}: key (listed, built) differ: {wrong}")
        compiled, compile_s = timing.aot(case.fn, *case.args)
        iterations, _ = timing.calibrate(compiled, case.args)
        calls = [(compiled, case.args)]
        calls += [case.reference[1:]] if case.reference else []
        calls += [case.baseline[1:]] if case.baseline else []
        t_step, *others = timing.interleaved(
            calls, block_each=True, min_rounds=max(10, budget["min_rounds"]),
            max_rounds=budget["max_rounds"], max_time_s=2 * len(calls) * budget["max_time_s"])
        t_ref = others.pop(0) if case.reference else None
        t_base = others.pop(0) if case.baseline else None
    median = t_step.median_s
    kind = case.reference[0] if case.reference else ""
    evals = case.evals
    if evals is None and c.get("batch_size") is not None:
        evals = (c.get("num_directions") or 1) * c["batch_size"]
    nan = math.nan

    def ratio(t):
        return t.median_s / median if t is not None else nan

    inference = t_ref if kind == "inference" else None
    dense = t_ref if kind == "dense" else None
    return {
        **{k: _scalar(v) for k, v in c.items()},
        "compile_s": compile_s, "step_median_s": median, "step_iqr_s": t_step.iqr_s,
        "rounds": t_step.rounds, "iterations": iterations,
        "evals_per_s": evals / median if evals else nan,
        "flops": timing.flops(compiled), "mem_bytes": timing.mem_bytes(compiled),
        "inference_equiv_s": inference.median_s if inference else nan,
        "inference_compile_s": inference.compile_s if inference else nan,
        "inference_mem_bytes": inference.mem_bytes if inference else nan,
        "frac_of_inference": ratio(inference),
        "dense_median_s": dense.median_s if dense else nan,
        "speedup_vs_dense": ratio(dense),
        "baseline": case.baseline[0] if case.baseline else "",
        "baseline_median_s": t_base.median_s if t_base else nan,
        "speedup_vs_baseline": ratio(t_base),
        **(case.extra or {}), "profile": profile,
    }


def jobs(profile: str) -> Iterator[Job]:
    """One job per kernel of ``profile`` (its key: the kernel's configuration).

    Args:
        profile: quick or full.

    Returns:
        An iterator of :class:`fold_jax.bench.common.Job`.
    """
    return config_jobs(kernels(profile), key=lambda k: k.config,
                       run=lambda k: [measure(k, profile)], label=lambda k: k.label,
                       cost=lambda k: k.cost)
