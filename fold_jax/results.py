"""Results files: schema, machine metadata, runs, atomic resumable appends, loading.

Every benchmark writes tidy CSVs under ``results_dir`` (``results/`` by default):
one file per kind (``kernels``, ``races``, ``curves``, ``tuning``, ``variants``,
``probes``, ``region_maps``, ``scaling``, ``bbob``). Each file has one :class:`Schema`
in ``SCHEMA`` (``schema(name)``): its key columns (``key(name)``: what identifies a row
within a run; the suites, the kernel benchmarks and the report take their keys from
here) and every column it may hold, each a :class:`Column` with dtype, unit and a
one-line description. :func:`columns_markdown` renders them as the column dictionary
``results/COLUMNS.md`` (:func:`write_columns`; every report build refreshes it). Each
row carries the metadata of :func:`metadata` (``META``) and at least the core columns
of its file (``SCHEMAS``: name -> dtype, derived from ``SCHEMA``, checked on loading);
extra columns are accepted, and :func:`undescribed` names the ones the schema lacks
(the tests keep that list empty for everything the suites write).

Runs: every row carries the ``run_id`` of the run that wrote it (:func:`run_id`, shared
with child processes through ``$FOLD_JAX_RUN_ID``), and the rows of all runs live side
by side in the same files. Resuming only ever looks at the current run's rows
(:func:`done_keys` / :func:`done` match ``run_id``), so a new run measures everything
even where the files already hold rows of the same machine (another run, or the
committed reference run). ``bench.run`` records each run in ``<results_dir>/runs.csv``
(:func:`record_run`, :func:`runs`: status running / interrupted / failed / finished,
commit, host, profile, parts, times) and marks a run it may continue with a small file
``<results_dir>/.partial/<run_id>.json`` (:func:`mark_resumable`), which is git-ignored:
a fresh clone has no run to continue.

Writes are atomic: :func:`append` reads the current file, drops new rows whose key
is already there *for the same run* (only that run's keys are compared), writes the new
file to a temporary file in the same directory (the old file's bytes and the new rows'
text; a new column, or rows replaced, re-render the whole file), fsyncs it and
``os.replace``-s it over the old one. A process
killed at any moment leaves either the old or the new file, never a torn one; resumed
(same run id), the same keys are skipped, so nothing is duplicated and nothing written
is lost. Writers in several processes are serialised by an advisory ``flock`` on the
results directory (POSIX); where that is unavailable, one writer at a time is assumed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

__all__ = [
    "ALL_RUNS",
    "CODE_PATHS",
    "DTYPES",
    "MACHINE_KEY",
    "META",
    "META_COLUMNS",
    "META_OPTIONAL",
    "REGISTRY",
    "RUN_COLUMNS",
    "SCHEMA",
    "SCHEMAS",
    "Column",
    "Schema",
    "append",
    "check_run_id",
    "check_types",
    "check_writable",
    "clear_resumable",
    "code_changed",
    "columns_markdown",
    "cpu_model",
    "done",
    "done_keys",
    "git_commit",
    "key",
    "load",
    "mark_resumable",
    "metadata",
    "new_run_id",
    "normalize_key",
    "record_run",
    "resumable",
    "run_id",
    "runs",
    "schema",
    "set_run_id",
    "undescribed",
    "validate",
    "write_columns",
]

# ----------------------------------------------------------------------------- schema

DTYPES: tuple[str, ...] = ("num", "int", "str", "bool")  # num: numbers incl. inf/NaN


class Column(NamedTuple):
    """One column of a results file.

    ``dtype``: "num" (a number; inf and NaN allowed), "int" (a whole number or empty),
    "str" (text) or "bool" (True/False). ``unit``: e.g. "s", "bytes", "count", "ratio"
    ("" for names and labels). ``core``: every row of the file must carry it, and
    :func:`validate` checks its type.
    """

    name: str
    dtype: str
    unit: str
    description: str
    core: bool = False


class Schema(NamedTuple):
    """A results file: its stem, key columns (a row's identity within a run; the
    machine part ``MACHINE_KEY`` included where the suite uses it), what one row is, and
    every column it may hold besides the metadata (``META``)."""

    file: str
    key: tuple[str, ...]
    row: str
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column | None:
        """The column called ``name`` (metadata included), or None.

        Args:
            name: the column's name.

        Returns:
            The :class:`Column`, or None when the file does not describe it.
        """
        for c in (*META, *self.columns):
            if c.name == name:
                return c
        return None

    @property
    def core(self) -> dict[str, str]:
        """The core columns and their dtypes (``{name: dtype}``)."""
        return {c.name: c.dtype for c in self.columns if c.core}


def _c(name: str, dtype: str, unit: str, description: str, core: bool = False) -> Column:
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} of column {name!r}; allowed: {list(DTYPES)}")
    return Column(name, dtype, unit, description, core)


META: tuple[Column, ...] = (
    _c("run_id", "str", "", "the run that wrote the row (runs.csv records each run)"),
    _c("timestamp_utc", "str", "ISO 8601", "when the row was written (UTC)"),
    _c("git_commit", "str", "", "HEAD of the checkout that measured the row (40 hex digits "
       "or 'unknown')"),
    _c("host", "str", "", "the machine's host name (platform.node())"),
    _c("cpu_model", "str", "", "the host CPU (cpu_model(): model name, architecture, logical "
       "cores, AVX-512 when present): machines under one host name can differ"),
    _c("backend", "str", "", "jax.default_backend(): cpu, gpu, tpu, ..."),
    _c("device_kind", "str", "", "jax.devices()[0].device_kind (scaling: the forced host "
       "devices)"),
    _c("n_devices", "int", "count", "jax.device_count() of the process"),
    _c("jax_version", "str", "", "jax.__version__"),
    _c("jaxlib_version", "str", "", "jaxlib.__version__"),
)
META_COLUMNS: tuple[str, ...] = tuple(c.name for c in META)
# metadata added after results files existed: rows of older runs lack it, so a file is
# valid without it (new rows always carry it)
META_OPTIONAL: tuple[str, ...] = ("cpu_model",)
# the metadata that names the machine. Suites put it in their key so a row says which
# machine it measured; whether a job is done is decided by run_id (see done_keys).
MACHINE_KEY: tuple[str, ...] = ("host", "backend", "device_kind", "n_devices")

# shared meanings: one definition per concept, used by every file that has the column
_RANK = ("rank of each 2-D leaf's low-rank perturbation; 0 = full-rank (dense) noise; "
         "empty = the kernel perturbs nothing (inference, backprop, binarized / sparse "
         "matmuls)")
_CHUNK = ("loss evaluations per chunk actually run (zo.value_and_grad's per_chunk x signs), "
          "= num_directions when all directions run in one chunk; empty = the kernel has no "
          "directions to chunk (zo_chunk_memory's inference rows: the chunk size of the "
          "estimator rows they pair with)")
_SPARSITY = "fraction of weights that are zero (0 = dense); empty where not applicable"


def _timing(prefix: str, what: str, core: bool = False) -> tuple[Column, ...]:
    return (_c(f"{prefix}_median_s", "num", "s", f"median time of one call of {what}", core),
            _c(f"{prefix}_iqr_s", "num", "s", "interquartile range of those times", core))


_KERNELS = Schema(
    "kernels",
    ("bench", "method", "variant", "n_params", "batch_size", "num_directions", "rank",
     "chunk_size", "sparsity", "dtype", "width", "shape", "word_bits", "layout", *MACHINE_KEY),
    "one compiled kernel (a step, a forward pass or a matmul) timed on one configuration "
    "(bench/suite_kernels.py)",
    (
        _c("bench", "str", "", "the benchmark the row belongs to (forward, gradient_step, "
           "zo_fused_lowrank, xnor_matmul, ...)", True),
        _c("method", "str", "", "the kernel measured within the bench", True),
        _c("variant", "str", "", "network variant: dense, binarized or pruned", True),
        _c("n_params", "num", "count", "parameters of the model (matmuls: nonzero weights)",
           True),
        _c("batch_size", "num", "examples", "examples per call (matmuls: rows M of x)", True),
        _c("num_directions", "num", "evaluations", "perturbed loss evaluations per step "
           "(search steps: evaluations the step makes); empty without directions", True),
        _c("rank", "num", "rank", _RANK, True),
        _c("chunk_size", "num", "evaluations", _CHUNK),
        _c("sparsity", "num", "fraction", _SPARSITY, True),
        _c("dtype", "str", "", "dtype of the operands (uint32/uint64: packed bit words)",
           True),
        _c("width", "num", "units", "hidden width of the MLP where the bench varies it"),
        _c("shape", "str", "", "matmul shape MxKxN (binarized and sparse kernels)"),
        _c("word_bits", "num", "bits", "bits per packed word (xnor kernels)"),
        _c("layout", "str", "", "BCSR activation layout: feature_major (sparse_apply's) or "
           "row_major (two transposes more)"),
        _c("compile_s", "num", "s", "ahead-of-time compile time of the kernel (trace, lower, "
           "compile)", True),
        *_timing("step", "the kernel (alternating rounds with its reference)", True),
        _c("rounds", "num", "count", "timed rounds behind the median", True),
        _c("iterations", "num", "count", "calls per timed round (a round lasts >= 1 ms)"),
        _c("evals_per_s", "num", "examples/s", "examples evaluated per second: "
           "num_directions x batch_size (or batch_size) / step_median_s", True),
        _c("flops", "num", "FLOPs", "compiled.cost_analysis() FLOPs per call; NaN when the "
           "backend reports none", True),
        _c("mem_bytes", "num", "bytes", "compiled memory: argument + output + temp - alias "
           "bytes; NaN when absent", True),
        _c("inference_equiv_s", "num", "s", "median time of plain inference on "
           "num_directions x batch_size examples (batch_size for backprop and forward rows), "
           "timed in the same alternating rounds; empty on matmul rows", True),
        _c("inference_compile_s", "num", "s", "compile time of that inference"),
        _c("inference_mem_bytes", "num", "bytes", "compiled memory of that inference (as "
           "mem_bytes)"),
        _c("frac_of_inference", "num", "ratio", "inference_equiv_s / step_median_s: the "
           "share of that inference's speed a step reaches (1 = a step costs exactly the "
           "inference; higher is faster); empty on matmul rows (see speedup_vs_dense)", True),
        _c("dense_median_s", "num", "s", "median time of the f32 dense matmul of the same "
           "shape, timed in the same alternating rounds (binarized and sparse kernels)"),
        _c("speedup_vs_dense", "num", "ratio", "dense_median_s / step_median_s (> 1: faster "
           "than dense)"),
        _c("baseline", "str", "", "name of another kernel timed in the same rounds ('' if "
           "none)"),
        _c("baseline_median_s", "num", "s", "median time of that baseline"),
        _c("speedup_vs_baseline", "num", "ratio", "baseline_median_s / step_median_s (> 1: "
           "faster than the baseline)"),
        _c("weight_bytes", "num", "bytes", "bytes of the packed weight operand (xnor)"),
        _c("profile", "str", "", "benchmark profile that made the row: quick or full"),
    ),
)

_RACE_KEY = ("task", "method", "variant", "seed", "max_steps", "budget_s", *MACHINE_KEY)
_RACES = Schema(
    "races", _RACE_KEY,
    "one training race of one method on one task, variant and seed, up to a target "
    "(bench/suite_races.py)",
    (
        _c("task", "str", "", "the task (fold_jax.tasks name)", True),
        _c("method", "str", "", "the method (recipe registry name)", True),
        _c("variant", "str", "", "network variant: dense, binarized or pruned", True),
        _c("seed", "int", "", "seed of the initialisation and the batches", True),
        _c("max_steps", "int", "steps", "step budget of the race"),
        _c("budget_s", "num", "s", "wall-clock safety cap of the race", True),
        _c("library", "str", "", "who implements the method: fold_jax, optax or evosax"),
        _c("recipe", "str", "", "the recipe (search space) the method's settings come from"),
        _c("hparams", "str", "JSON", "JSON object of every setting of the run (learning "
           "rate, sigma, rank, num_directions, chunk_size, shaping, ...)"),
        _c("trial", "int", "", "the selected tuning trial (tuning.csv) whose hparams ran; -1 "
           "when not tuned"),
        _c("n_trials", "int", "count", "tuning trials the method was given"),
        _c("target_metric", "str", "", "the metric raced on (accuracy, micro_f1, ...)", True),
        _c("target", "num", "metric", "the target value of target_metric", True),
        _c("reached", "bool", "", "whether the target was reached within the budget", True),
        _c("steps_to_target", "num", "steps", "steps until the first evaluation at the "
           "target; inf when missed", True),
        _c("evals_to_target", "num", "evaluations", "loss evaluations (examples x "
           "evaluations per step) until then; inf when missed", True),
        _c("time_to_target_s", "num", "s", "timed training seconds until then (compile and "
           "evaluation excluded); inf when missed", True),
        _c("compile_s", "num", "s", "compile time of the training step plus one warm-up "
           "chunk (a race seed loads the program its selected trial compiled: the load "
           "time)", True),
        _c("final_test_metric", "num", "metric", "target_metric on the test split at the "
           "last evaluation", True),
        _c("final_test_loss", "num", "loss", "test loss at the last evaluation"),
        _c("best_test_metric", "num", "metric", "best target_metric on the test split over "
           "the race's evaluations (its direction: highest accuracy, lowest loss)"),
        _c("n_params", "num", "count", "parameters of the network", True),
        _c("steps_run", "int", "steps", "steps trained"),
        _c("capped", "bool", "", "whether budget_s cut the race short (then the row "
           "depends on machine speed)"),
        _c("evals_run", "num", "evaluations", "loss evaluations made in all"),
        _c("elapsed_s", "num", "s", "timed training seconds in all"),
        _c("evals_per_step", "num", "evaluations", "evals_run / steps_run"),
        _c("step_median_s", "num", "s", "seconds per step of the selected setting over its "
           "first eval_every steps, timed in alternating rounds against forward_median_s "
           "(bench.suite_races.step_cost); the same on every seed's row"),
        _c("step_iqr_s", "num", "s", "inter-quartile range of step_median_s over the rounds"),
        _c("forward_median_s", "num", "s", "seconds per forward pass (loss on one "
           "minibatch) of the race network, in the same rounds"),
        _c("forward_iqr_s", "num", "s", "inter-quartile range of forward_median_s"),
        _c("cost_rounds", "int", "count", "alternating rounds behind the step cost"),
        _c("eval_forwards", "num", "forward passes", "one loss evaluation's cost in forward "
           "passes of one minibatch: the steps' median time / their evaluations / "
           "forward_median_s"),
        _c("forwards_to_target", "num", "forward passes", "evals_to_target x eval_forwards: "
           "the time to target in forward passes, less at the mercy of machine drift "
           "between jobs than time_to_target_s; inf when missed"),
        _c("sparsity", "num", "fraction", _SPARSITY),
        _c("batch_size", "int", "examples", "examples per training step"),
        _c("eval_every", "int", "steps", "steps between evaluations"),
        _c("skipped_steps", "int", "steps", "steps whose update was skipped (non-finite "
           "estimate)"),
        _c("accepted_steps", "num", "steps", "steps a direct-search method moved (NaN for "
           "other methods)"),
        _c("acceptance", "str", "", "direct search's acceptance rule (reevaluate / batch); "
           "'' for other methods"),
    ),
)

_CURVES = Schema(
    "curves", (*_RACE_KEY[:6], "step", "split", "metric", *MACHINE_KEY),
    "one metric on one split at one evaluation of a race (long format; key as races.csv "
    "plus step, split, metric)",
    (
        _c("task", "str", "", "as races.csv", True),
        _c("method", "str", "", "as races.csv", True),
        _c("variant", "str", "", "as races.csv", True),
        _c("seed", "int", "", "as races.csv", True),
        _c("max_steps", "int", "steps", "as races.csv"),
        _c("budget_s", "num", "s", "as races.csv"),
        _c("step", "num", "steps", "training steps done at the evaluation", True),
        _c("evals", "num", "evaluations", "loss evaluations done at the evaluation", True),
        _c("elapsed_s", "num", "s", "timed training seconds done at the evaluation", True),
        _c("split", "str", "", "train, val or test", True),
        _c("metric", "str", "", "loss, accuracy, micro_f1, ...", True),
        _c("value", "num", "metric", "the metric's value", True),
    ),
)

_TUNING = Schema(
    "tuning", ("task", "method", "variant", "trial", "seed", "max_steps", *MACHINE_KEY),
    "one tuning trial on one of its seeds: one hyperparameter setting of a method trained "
    "on a task and scored on the validation split (never on test)",
    (
        _c("task", "str", "", "the task (fold_jax.tasks name)", True),
        _c("method", "str", "", "the method (recipe registry name)", True),
        _c("variant", "str", "", "network variant: dense, binarized or pruned", True),
        _c("trial", "int", "", "the trial's index in the method's quasi-random sequence", True),
        _c("max_steps", "int", "steps", "step budget of the trial", True),
        _c("library", "str", "", "who implements the method: fold_jax, optax or evosax"),
        _c("recipe", "str", "", "the recipe (search space) the trial was drawn from"),
        _c("hparams", "str", "JSON", "JSON object of the trial's hyperparameters"),
        _c("n_trials", "int", "count", "trials the method was given"),
        _c("split", "str", "", "the split the trial is scored on: val"),
        _c("target_metric", "str", "", "the metric raced on (accuracy, micro_f1, ...)"),
        _c("target", "num", "metric", "the target value of target_metric"),
        _c("reached", "bool", "", "whether the trial reached the target on the validation "
           "split"),
        _c("steps_to_target", "num", "steps", "steps until the target; inf when missed"),
        _c("evals_to_target", "num", "evaluations", "loss evaluations until the target; inf "
           "when missed"),
        _c("time_to_target_s", "num", "s", "timed training seconds until the target; inf "
           "when missed"),
        _c("seed", "int", "", "seed of the run's initialisation and batches: 1000 + trial + "
           "j n_trials for the trial's j-th seed (apart from the race seeds)", True),
        _c("trial_seeds", "int", "count", "seeds every trial of the method is scored on"),
        _c("best_val_metric", "num", "metric", "best target_metric on the validation split"),
        _c("capped", "bool", "", "whether budget_s cut the trial short"),
        _c("n_params", "num", "count", "parameters of the network"),
        _c("final_val_metric", "num", "metric", "target_metric on the validation split at "
           "the last evaluation"),
        _c("steps_run", "int", "steps", "steps trained"),
        _c("evals_run", "num", "evaluations", "loss evaluations made in all"),
        _c("elapsed_s", "num", "s", "timed training seconds in all"),
        _c("compile_s", "num", "s", "compile time of the training step"),
        _c("skipped_steps", "int", "steps", "steps whose update was skipped (non-finite "
           "estimate)"),
        _c("score", "num", "evaluations", "the trial's ranking score, on each of its seeds' "
           "rows: the median over its seeds of evals_to_target (lower is better)"),
        _c("selected", "bool", "", "whether this trial is the one rerun on the race seeds "
           "(races.csv)"),
    ),
)

_VARIANTS = Schema(
    "variants",
    ("row_kind", "variant", "kernel", "method", "sparsity", "shape", "word_bits",
     *MACHINE_KEY),
    "dense vs binarized vs pruned: one matmul kernel, one trained net, or one estimator "
    "error measurement (row_kind; bench/suite_variants.py)",
    (
        _c("row_kind", "str", "", "kernel (one matmul), train (a trained net) or "
           "zo_variance (estimator error on a pruned net)"),
        _c("variant", "str", "", "dense, binarized or pruned", True),
        _c("kernel", "str", "", "the kernel: dense, masked, bcsr, bcsr_row_major, "
           "xnor_packed, ... (zo_variance: zo_masked / zo_full)"),
        _c("method", "str", "", "training method of a train row; 'none' for kernels"),
        _c("real_kernel", "bool", "", "True for a real packed / sparse kernel, False for a "
           "simulation (dense math with a mask or with {-1, +1} floats)"),
        _c("sparsity", "num", "fraction", "fraction of weights that are zero (0 = dense)"),
        _c("shape", "str", "", "matmul shape MxKxN, or the MLP's widths (mlp64-256-256-10)"),
        _c("word_bits", "int", "bits", "bits per packed word (0 where nothing is packed)"),
        *_timing("time", "the row's kernel (train rows: inference on the test split)"),
        _c("compile_s", "num", "s", "compile time of the row's kernel"),
        _c("speedup_vs_dense", "num", "ratio", "time of the f32 dense counterpart (same "
           "rounds) / time_median_s (> 1: faster than dense)"),
        _c("weight_bytes", "num", "bytes", "bytes the weights take in the row's storage"),
        _c("bits_per_weight", "num", "bits", "8 x weight_bytes / dense weight count"),
        _c("nonzeros", "num", "count", "nonzero weights"),
        _c("accuracy", "num", "fraction", "test accuracy (train rows)"),
        _c("steps", "int", "steps", "training steps (train rows; 0 otherwise)"),
        _c("train_s", "num", "s", "training seconds (train rows)"),
        _c("est_mse", "num", "squared gradient", "mean squared error of one antithetic "
           "estimate on the surviving weights (zo_variance rows)"),
        _c("est_mse_sem", "num", "squared gradient", "standard error of est_mse"),
        _c("expected_mse", "num", "squared gradient", "est_mse predicted by the formula in "
           "bench/suite_variants.zo_variance"),
        _c("grad_sq_survivors", "num", "squared gradient", "|g_S|^2: squared true gradient "
           "on the surviving weights"),
        _c("grad_sq_all", "num", "squared gradient", "|g|^2: squared true gradient on all "
           "weights"),
    ),
)

_PROBES = Schema(
    "probes",
    ("probe", "task", "activation", "depth", "width", "stage", "method", "layer",
     "threshold", "metric", *MACHINE_KEY),
    "one measurement of one probe (long format: metric, value; empty where a column does "
    "not apply; bench/suite_probes.py)",
    (
        _c("probe", "str", "", "vanishing, zo_cosine, deep_sigmoid_training, heads, "
           "threshold, regions_line, regions_grid, region_map, tent, estimator_health"),
        _c("task", "str", "", "the task (fold_jax.tasks name, or the probe's own problem)"),
        _c("activation", "str", "", "hidden activation: sigmoid, tanh, relu, abs"),
        _c("depth", "num", "layers", "hidden layers (activations); a net of depth L has "
           "L + 1 dense layers"),
        _c("width", "num", "units", "hidden units per layer (estimator_health: parameters "
           "of its linear layer; tent: units per layer of the constructed net)"),
        _c("stage", "str", "", "init, trained or constructed"),
        _c("method", "str", "", "the training method or estimator (heads: the head)"),
        _c("layer", "num", "", "layer index, 0 = input side (per-layer metrics)"),
        _c("threshold", "num", "probability", "decision threshold of a multi-label head"),
        _c("metric", "str", "", "what value measures (grad_norm, ratio_first_last, cosine, "
           "test_accuracy, regions, patterns, components, ...)"),
        _c("value", "num", "metric", "the measurement"),
    ),
)

_REGION_MAPS = Schema(
    "region_maps", ("map", "grid", "row", *MACHINE_KEY),
    "one row of a 2-D region map of a trained net (bench/suite_probes.region_map; its "
    "summary numbers are probes.csv rows with probe = region_map)",
    (
        _c("map", "str", "", "the map's name (e.g. spirals_relu_d4_w32)"),
        _c("grid", "str", "", "pattern: activation-pattern id per cell; class: predicted "
           "class per cell; points_0 / points_1: the training points of each class"),
        _c("row", "int", "", "grid row index from the bottom (points: 0)"),
        _c("values", "str", "", "pattern / class: the row's cells left to right, run-length "
           "encoded as 'value*count' tokens; points: 'x1,x2' pairs, space separated"),
        _c("resolution", "int", "cells", "cells per side of the grid"),
        _c("box", "num", "input units", "the grid covers [-box, box]^2 (standardized inputs)"),
    ),
)

_SCALING = Schema(
    "scaling",
    ("method", "devices", "forced_host_devices", "num_directions", "batch_size", "host",
     "backend"),
    "throughput of one sharded step on one mesh size (bench/suite_scaling.py)",
    (
        _c("method", "str", "", "zo_gaussian, zo_lowrank (directions sharded) or "
           "backprop_data_parallel (batch sharded)"),
        _c("devices", "int", "count", "devices in the mesh"),
        _c("forced_host_devices", "int", "count", "host devices forced on CPU "
           "(--xla_force_host_platform_device_count); 0 on accelerators"),
        _c("num_directions", "int", "evaluations", "perturbed evaluations per step"),
        _c("batch_size", "int", "examples", "examples per step"),
        _c("throughput", "num", "throughput_unit", "work per second of the step"),
        _c("throughput_unit", "str", "", "perturbed evaluations/s or examples/s"),
        *_timing("step", "the sharded step"),
        _c("compile_s", "num", "s", "compile time of the step"),
    ),
)

_BBOB_TARGETS = ("1e1", "1e-1", "1e-3", "1e-5", "1e-8")
_BBOB = Schema(
    "bbob", ("function", "dim", "instance", "run", "method", "budget", *MACHINE_KEY),
    "one run of one method on one COCO BBOB problem (function x dim x instance; "
    "bench/suite_bbob.py)",
    (
        _c("function", "int", "", "BBOB function 1-24", True),
        _c("function_name", "str", "", "its name (Sphere, Rastrigin, ...)", True),
        _c("group", "str", "", "its BBOB group (separable, multimodal, ...)"),
        _c("dim", "int", "dimensions", "problem dimension", True),
        _c("instance", "int", "", "COCO instance", True),
        _c("run", "int", "", "repetition index", True),
        _c("method", "str", "", "the optimizer", True),
        _c("library", "str", "", "fold_jax, evosax or pycma", True),
        _c("budget_multiplier", "int", "evaluations/dim", "budget / dim"),
        _c("budget", "num", "evaluations", "evaluation budget of the run", True),
        _c("evals_used", "num", "evaluations", "evaluations the method made", True),
        _c("evals_counted", "num", "evaluations", "evaluations the tracker counted"),
        _c("best_precision", "num", "f - f_opt", "best f - f_opt found", True),
        _c("f_opt", "num", "f", "the problem's optimal value"),
        *[_c(f"evals_to_{t}", "num", "evaluations", f"evaluations until f - f_opt <= {t}; "
             "inf when never", True) for t in _BBOB_TARGETS],
        _c("seconds", "num", "s", "wall-clock seconds of the run (its share of a batch)",
           True),
        _c("compile_s", "num", "s", "compile time of the batch the run was in"),
        _c("batch_runs", "int", "count", "runs vmapped together with it"),
        _c("steps", "num", "steps", "generations / steps made"),
        _c("stopped", "str", "", "why the run stopped (target, budget, ...)"),
        _c("population_size", "int", "count", "evaluations per generation"),
        _c("start", "str", "", "distribution of the start point"),
        _c("seed", "int", "", "seed of the run", True),
    ),
)

_HYPOTHESES = Schema(
    "hypotheses", ("claim", "workload", "method", "setting", "seed", "metric", "step",
                   *MACHINE_KEY),
    "one measurement of one method on one setting of a workload testing one of the essays' "
    "claims (bench/suite_hypotheses.py; long format: final metrics at step = the budget, "
    "curve_* metrics at each evaluation, memory and time rows at step 0)",
    (
        _c("claim", "str", "", "depth, recurrent, nondiff_parts, nondiff_objective or "
           "linear_regression", True),
        _c("workload", "str", "", "the workload testing it (mlp_depth, adding_accuracy, "
           "adding_memory, threshold_net, categorical, zero_one, multilabel_exact, linreg)",
           True),
        _c("method", "str", "", "the training method (with its workaround: tbptt, ste_adam, "
           "gumbel_annealed, ...)", True),
        _c("family", "str", "", "backprop or forward_only"),
        _c("library", "str", "", "who implements the method: fold_jax", True),
        _c("setting", "str", "", "the configuration within the workload (sigmoid/d16, "
           "gru/T512, ...)", True),
        _c("seed", "int", "", "seed of the initialisation and the batches", True),
        _c("metric", "str", "", "what value measures (test_accuracy, test_r2, train_loss, "
           "curve_test_accuracy, mem_bytes, temp_bytes, step_s, skipped_steps; "
           "trial_val_accuracy / trial_val_r2: a tuning trial's final validation metric; "
           "trial_skipped_steps)",
           True),
        _c("value", "num", "metric", "the measurement", True),
        _c("step", "int", "steps", "training steps done when measured (the budget for "
           "final metrics; 0 for memory and time rows)", True),
        _c("evals", "num", "evaluations", "loss evaluations spent by then (NaN for memory "
           "and time rows)", True),
        _c("mem_bytes", "num", "bytes", "compiled memory of one training step: argument + "
           "output + temp - alias bytes (memory rows; NaN elsewhere)", True),
        _c("step_s", "num", "s", "seconds per training step (memory rows: median over "
           "timed rounds; training rows: timed training seconds / steps)", True),
        _c("steps", "int", "steps", "step budget of the run"),
        _c("batch_size", "int", "examples", "examples per training step"),
        _c("n_params", "num", "count", "parameters of the network"),
        _c("hparams", "str", "JSON", "JSON object of the run's settings (final rows: the "
           "selected trial's, the same for every seed)"),
        _c("trial", "int", "", "tuning trial: its index (trial rows) or the selected one's "
           "(final rows); -1 for memory and time rows, which are not tuned"),
        _c("n_trials", "int", "count", "tuning trials drawn for the method and setting "
           "(0: not tuned)"),
        _c("selected", "bool", "", "trial rows: whether this trial was selected (the "
           "highest final validation metric)"),
        _c("compile_s", "num", "s", "compile time of the training chunk or step (seeds after "
           "the first load the cached program)"),
        _c("elapsed_s", "num", "s", "timed training seconds done by then"),
        _c("T", "int", "steps", "sequence length (adding_memory rows)"),
    ),
)

SCHEMA: dict[str, Schema] = {s.file: s for s in (
    _KERNELS, _RACES, _CURVES, _TUNING, _VARIANTS, _PROBES, _REGION_MAPS, _SCALING, _BBOB,
    _HYPOTHESES)}

# Core columns per file and their dtypes (derived from SCHEMA): every row carries them
# and validate() checks their type. Extra columns are allowed in every file (the test
# suite checks each one the suites write is described in SCHEMA).
SCHEMAS: dict[str, dict[str, str]] = {
    name: ({"n_devices": "int"} if name == "scaling" else {}) | s.core
    for name, s in SCHEMA.items()}
_META_TYPES = {c.name: c.dtype for c in META if c.dtype != "str"}


def schema(name: str) -> Schema:
    """The :class:`Schema` of results file ``name``; ValueError naming the known files.

    Args:
        name: the file's stem (kernels, races, curves, tuning, ...).

    Returns:
        Its :class:`Schema`.
    """
    if name not in SCHEMA:
        raise ValueError(f"no schema for results file {name!r}; known: {sorted(SCHEMA)}")
    return SCHEMA[name]


def key(name: str) -> list[str]:
    """The key columns of results file ``name`` (a fresh list).

    Args:
        name: the file's stem.

    Returns:
        Its key columns, in order.
    """
    return list(schema(name).key)


def undescribed(name: str, columns: Iterable[str]) -> list[str]:
    """The ``columns`` that neither the metadata nor file ``name``'s schema describes.

    Args:
        name: the file's stem.
        columns: column names (a row's keys, a frame's columns).

    Returns:
        The undescribed names, in the order given.
    """
    s = schema(name)
    return [c for c in columns if s.column(c) is None]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def columns_markdown() -> str:
    """The column dictionary of every results file, as markdown (``results/COLUMNS.md``).

    Returns:
        The markdown text, generated from ``META`` and ``SCHEMA``.
    """
    out = ["# Results columns", "",
           "Generated from `fold_jax.results.SCHEMA` (`python -m fold_jax.report --columns`, "
           "and every report build writes it); do not edit by hand.",
           "", "dtype: `num` a number (inf and NaN allowed; empty = NaN), `int` a whole "
           "number (or empty), `str` text, `bool` True/False. *core*: every row carries the "
           "column and loading checks its type; other columns may be empty. *key*: the "
           "columns that identify a row within a run (a run writes one row per key).", "",
           "Every ratio column divides a reference's time by the row's own time measured in "
           "the same alternating rounds, so > 1 always means the row's kernel is faster "
           "than its reference.", "",
           "## Every file: metadata", "", "| column | dtype | unit | description |",
           "|---|---|---|---|"]
    out += [f"| `{c.name}` | {c.dtype} | {_cell(c.unit)} | {_cell(c.description)} |"
            for c in META]
    for s in SCHEMA.values():
        out += ["", f"## {s.file}.csv", "", f"One row: {s.row}.", "",
                "Key: " + ", ".join(f"`{k}`" for k in s.key) + ".", "",
                "| column | dtype | unit | core | key | description |",
                "|---|---|---|---|---|---|"]
        out += [f"| `{c.name}` | {c.dtype} | {_cell(c.unit)} | {'yes' if c.core else ''} | "
                f"{'yes' if c.name in s.key else ''} | {_cell(c.description)} |"
                for c in s.columns]
    return "\n".join(out) + "\n"


def write_columns(path: str | os.PathLike = "results/COLUMNS.md") -> Path:
    """Write :func:`columns_markdown` to ``path`` (atomically) when it differs.

    Args:
        path: the file to write.

    Returns:
        The path written.
    """
    path = Path(path)
    text = columns_markdown()
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace_atomic(path, lambda f: f.write(text))
    return path

# the run registry <results_dir>/runs.csv (one row per run; not a results file: load()
# of a directory leaves it out, runs() reads it) and its columns
REGISTRY = "runs"
RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "status", "started_utc", "updated_utc", "finished_utc", "git_commit", "host",
    "cpu_model", "backend", "device_kind", "n_devices", "jax_version", "profile", "parts",
    "filter", "attempts", "pid", "command",
)
ALL_RUNS = "*"  # done_keys(..., run=ALL_RUNS): rows of every run
# the code that produces results: rows measured at another commit are stale when these
# paths changed since (code_changed); the report package only reads the CSVs, so a change
# there stales no row (git pathspecs: ":(exclude)" drops a path)
CODE_PATHS: tuple[str, ...] = ("fold_jax", "bench", ":(exclude)fold_jax/report")
_PARTIAL = ".partial"  # <results_dir>/.partial/<run_id>.json: runs this checkout may resume
_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

_RUN_ID: str | None = None
_STATIC_META: dict[str, Any] | None = None


def new_run_id() -> str:
    """A fresh run id: UTC start time and a random suffix (``20261121T090653Z-dfb0f8``).

    Returns:
        The run id, a str.
    """
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def check_run_id(value: str) -> str:
    """``value`` if it can name a run (letters, digits, ``._-``; it names a file), else
    ValueError.

    Args:
        value: the candidate run id.

    Returns:
        ``value`` unchanged.
    """
    if not isinstance(value, str) or not _RUN_ID_RE.fullmatch(value):
        raise ValueError(f"run id {value!r} must be 1-100 letters, digits, '.', '_' or '-' "
                         f"(starting with a letter or digit)")
    return value


def run_id() -> str:
    """The id of the run this process writes rows for: the one set by
    :func:`set_run_id`, else ``$FOLD_JAX_RUN_ID``, else a new one (then fixed for the
    process).

    Returns:
        The run id, a str.
    """
    global _RUN_ID
    if _RUN_ID is None:
        _RUN_ID = os.environ.get("FOLD_JAX_RUN_ID") or new_run_id()
    return _RUN_ID


def set_run_id(value: str | None) -> str | None:
    """Make ``value`` the current run id (``None``: decide afresh on the next
    :func:`run_id` call); returns the previous one, for restoring.

    Args:
        value: the run id to use, or None.

    Returns:
        The previous run id (None if none was set yet).
    """
    global _RUN_ID
    previous, _RUN_ID = _RUN_ID, None if value is None else check_run_id(value)
    return previous


def _git(args: Sequence[str], cwd: str | os.PathLike | None = None
         ) -> subprocess.CompletedProcess | None:
    """``git args`` run in ``cwd`` (else the current directory, then the package's
    directory), in the first of them inside a git work tree; None without git."""
    dirs = [Path(cwd)] if cwd is not None else [Path.cwd(), Path(__file__).resolve().parent]
    for d in dirs:
        try:
            inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=d,
                                    capture_output=True, text=True, timeout=10, check=False)
            if inside.returncode != 0 or inside.stdout.strip() != "true":
                continue
            return subprocess.run(["git", *args], cwd=d, capture_output=True, text=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The checkout's HEAD commit (40 hex digits), or ``"unknown"`` without git.

    Args:
        cwd: a folder in the repository (None: the current directory).

    Returns:
        The commit hash, or ``"unknown"``.
    """
    out = _git(["rev-parse", "HEAD"], cwd)
    if out is not None and out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    return "unknown"


def _git_commit() -> str:
    return git_commit()


def code_changed(commit: str, head: str = "HEAD", *, cwd: str | os.PathLike | None = None,
                 paths: Sequence[str] = CODE_PATHS) -> bool | None:
    """Whether the code under ``paths`` (from the repository root) differs between
    ``commit`` and ``head`` (``git diff --quiet commit head -- paths``); None when it
    cannot be told (no git, a commit the repository does not know).

    Args:
        commit: the older commit.
        head: the newer commit.
        cwd: a folder in the repository (None: the current directory).
        paths: the code paths compared, from the repository root.

    Returns:
        True if the code differs, False if not, None if unknown.
    """
    if not commit or str(commit) in ("unknown", "nan"):
        return None
    if str(commit) == str(head):
        return False
    top = [p.replace(":(exclude)", ":(top,exclude)") if p.startswith(":(exclude)")
           else f":(top){p}" for p in paths]
    out = _git(["diff", "--quiet", str(commit), str(head), "--", *top], cwd)
    if out is None or out.returncode not in (0, 1):
        return None
    return out.returncode == 1


def cpu_model(cpuinfo: str | None = None) -> str:
    """The host CPU in one line: model name, architecture, logical cores and
    ``avx512`` when the CPU has AVX-512 (timings and some float roundings depend on it),
    e.g. ``"AMD EPYC 7B13 (x86_64, 2 cores)"``.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (None: read it; on a system without it
            the model comes from ``platform.processor()``).

    Returns:
        The description ("unknown" parts where the system does not say).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip().lower(), value.strip())
    model = (fields.get("model name") or fields.get("hardware") or fields.get("cpu model")
             or platform.processor() or "unknown")
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    extras = [platform.machine() or "unknown", f"{os.cpu_count() or 0} cores"]
    if "avx512f" in flags:
        extras.append("avx512")
    return f"{' '.join(model.split())} ({', '.join(extras)})"


def metadata() -> dict[str, Any]:
    """Metadata for a row: run_id (:func:`run_id`), timestamp_utc (now), git_commit,
    host (``platform.node()``), cpu_model (:func:`cpu_model`), backend, device_kind,
    n_devices, jax_version, jaxlib_version.

    Returns:
        A dict of the metadata columns and their values.
    """
    global _STATIC_META
    if _STATIC_META is None:
        import jax
        import jaxlib

        devices = jax.devices()
        _STATIC_META = {
            "git_commit": _git_commit(),
            "host": platform.node() or "unknown",
            "cpu_model": cpu_model(),
            "backend": jax.default_backend(),
            "device_kind": devices[0].device_kind if devices else "unknown",
            "n_devices": jax.device_count(),
            "jax_version": jax.__version__,
            "jaxlib_version": getattr(jaxlib, "__version__", "unknown"),
        }
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return {"run_id": run_id(), "timestamp_utc": now, **_STATIC_META}


# ----------------------------------------------------------------------------- keys


def _norm(value: Any) -> str:
    """Canonical text of a key value, so 64, 64.0, "64" and None/NaN/"" compare equal."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        if value in ("True", "False"):
            return value
        try:
            value = float(value)
        except ValueError:
            return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return ""
    if math.isfinite(number) and number.is_integer():
        return str(int(number))
    return repr(number)


def normalize_key(row: Mapping[str, Any], key: Sequence[str]) -> tuple[str, ...]:
    """The canonical tuple identifying ``row`` by the columns ``key``.

    Args:
        row: the row, a mapping of column -> value.
        key: the key columns (missing ones count as None).

    Returns:
        A tuple of normalized strings, one per key column.
    """
    return tuple(_norm(row.get(k)) for k in key)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name={name!r} must be a file stem such as 'kernels' or 'races'")


def _check_key(key) -> list[str]:
    if isinstance(key, str) or not isinstance(key, Sequence) or not key:
        raise TypeError(f"key must be a non-empty list of column names, got {key!r}")
    return list(key)


# ---------------------------------------------------------------------------- reading


def validate(frame: pd.DataFrame, path: str | os.PathLike, name: str | None = None) -> None:
    """Raise ValueError naming ``path`` (and the row) when ``frame`` breaks the schema.

    Rows are numbered from 1 after the header (file line = row + 1).

    Args:
        frame: the rows read from the file.
        path: the file's path (named in errors).
        name: the schema's name (None: the stem of ``path``; no schema: no check).
    """
    name = Path(path).stem if name is None else name
    schema = SCHEMAS.get(name)
    if schema is None:
        return
    required = {**{c: _META_TYPES.get(c, "str") for c in META_COLUMNS
                   if c not in META_OPTIONAL}, **schema}
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing core columns {missing} (file kind {name!r})")
    check_types(frame, required, path)


def check_types(frame: pd.DataFrame, types: Mapping[str, str],
                path: str | os.PathLike = "<frame>") -> None:
    """Raise ValueError naming ``path``, the row and the column when a value of a column
    in ``types`` is not of its dtype (empty cells pass; absent columns are not checked).

    Args:
        frame: the rows.
        types: column -> dtype ("num", "int", "str" or "bool").
        path: what to name in errors.
    """
    for column, kind in types.items():
        if kind == "str" or column not in frame.columns:
            continue
        series = frame[column]
        if kind == "bool":
            ok = series.isna() | series.astype(str).isin(["True", "False", "1", "0", "1.0",
                                                          "0.0"])
        else:
            numbers = pd.to_numeric(series, errors="coerce")
            ok = numbers.notna() | series.isna()
            if kind == "int":
                ok &= numbers.isna() | (numbers.abs() == float("inf")) | (numbers % 1 == 0)
        if not bool(ok.all()):
            i = int((~ok.to_numpy()).nonzero()[0][0])
            raise ValueError(f"{path}: row {i + 1} (line {i + 2}): column {column!r} must be "
                             f"{kind}, got {series.iloc[i]!r}")


def _to_bool(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return pd.NA
    return str(value) in ("True", "1", "1.0")


def _read(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, on_bad_lines="error", low_memory=False)
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"{path}: empty file (no header row)") from e
    except pd.errors.ParserError as e:
        raise ValueError(f"{path}: unparsable rows: {e}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text CSV: {e}") from e
    validate(frame, path)
    for column, kind in SCHEMAS.get(Path(path).stem, {}).items():
        if kind == "bool" and column in frame.columns and frame[column].dtype != bool:
            frame[column] = frame[column].map(_to_bool).astype("boolean")
    return frame


def load(path: str | os.PathLike = "results") -> dict[str, pd.DataFrame] | pd.DataFrame:
    """Validated results: a dict of DataFrames by file stem for a directory (every
    ``*.csv`` in it but the run registry ``runs.csv``, which :func:`runs` reads; {} when
    it does not exist), or one DataFrame for a CSV path.

    Raises ValueError naming the file (and row) when a file is malformed.

    Args:
        path: a results folder or one CSV file.

    Returns:
        ``{stem: DataFrame}`` for a folder, a DataFrame for a CSV file.
    """
    path = Path(path)
    if path.suffix == ".csv" or path.is_file():
        if not path.exists():
            raise FileNotFoundError(f"no results file at {path}")
        return _read(path)
    if not path.exists():
        return {}
    return {p.stem: _read(p) for p in sorted(path.glob("*.csv"))
            if not p.name.startswith(".") and p.stem != REGISTRY}


def done_keys(name: str, key: Sequence[str], results_dir: str | os.PathLike = "results", *,
              run: str | None = None) -> set[tuple[str, ...]]:
    """The normalized keys (see :func:`normalize_key`) that run ``run`` (by default the
    current one, :func:`run_id`; ``ALL_RUNS`` for every run) wrote to ``<name>.csv``.

    Args:
        name: the CSV's stem.
        key: the key columns.
        results_dir: the results folder.
        run: the run id (None: the current run; ``ALL_RUNS``: every run).

    Returns:
        The set of normalized key tuples (empty when the file or a key column is missing).
    """
    _check_name(name)
    key = _check_key(key)
    path = Path(results_dir) / f"{name}.csv"
    if not path.exists():
        return set()
    frame = _read(path)
    if any(k not in frame.columns for k in key):
        return set()
    wanted = run_id() if run is None else run
    if wanted != ALL_RUNS:
        if "run_id" not in frame.columns:
            return set()
        frame = frame[frame["run_id"].astype(str) == str(wanted)]
    return {normalize_key(r, key) for r in frame[key].to_dict("records")}


def done(name: str, key: Mapping[str, Any], results_dir: str | os.PathLike = "results", *,
         run: str | None = None) -> bool:
    """Whether run ``run`` (by default the current one) already wrote a row with these
    key values to ``<results_dir>/<name>.csv``; rows of other runs never count.

    Args:
        name: the CSV's stem.
        key: the key columns and their values.
        results_dir: the results folder.
        run: the run id (None: the current run, :func:`run_id`).

    Returns:
        True when such a row exists.
    """
    if not isinstance(key, Mapping) or not key:
        raise TypeError(f"key must be a non-empty dict of column -> value, got {key!r}")
    columns = list(key)
    return normalize_key(key, columns) in done_keys(name, columns, results_dir, run=run)


# ---------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _locked(directory: Path):
    """Advisory exclusive lock on the directory itself (no lock file to litter it)."""
    try:
        import fcntl
    except ImportError:  # single-writer assumption off POSIX
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def check_writable(results_dir: str | os.PathLike) -> Path:
    """Create ``results_dir`` if needed; PermissionError / OSError naming it if it cannot
    be written.

    Args:
        results_dir: the folder.

    Returns:
        The folder as a ``Path``.
    """
    directory = Path(results_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise type(e)(e.errno, f"cannot create results directory {directory}: "
                      f"{e.strerror}", str(directory)) from e
    if not directory.is_dir():
        raise NotADirectoryError(f"results directory {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"results directory {directory} is not writable")
    return directory


def _order(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Metadata first, then the schema's columns in its order, then any others."""
    described = [c.name for c in SCHEMA[name].columns] if name in SCHEMA else []
    # dict.fromkeys: a schema may repeat a metadata column (scaling's n_devices)
    first = [c for c in dict.fromkeys((*META_COLUMNS, *SCHEMAS.get(name, {}), *described))
             if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def _file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    _replace_atomic(path, lambda f: frame.to_csv(f, index=False))


def _append_atomic(rows: pd.DataFrame, path: Path) -> None:
    """Atomically add ``rows`` (in the file's column order) to the CSV at ``path``: its
    text is copied as is and the rows' text added, so an append costs a copy of the
    file, not a parse and render of every old row."""
    def write(f):
        with open(path, "rb") as old:  # bytes: nothing decoded, nothing re-rendered
            shutil.copyfileobj(old, f.buffer, 1 << 20)
            end = old.tell()
            old.seek(max(end - 1, 0))
            if end and old.read(1) != b"\n":
                f.buffer.write(b"\n")  # a file edited by hand may lack its last newline
        rows.to_csv(f, index=False, header=False)

    _replace_atomic(path, write)


def _replace_atomic(path: Path, write: Callable[[Any], Any]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, fsync it and
    ``os.replace`` it into place (never a torn file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; results are for sharing
        with os.fdopen(fd, "w", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _not_writer() -> bool:
    """In a multi-host run (``jax.distributed``) only process 0 writes results."""
    import jax

    return jax.process_count() > 1 and jax.process_index() != 0


def append(
    name: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    key: Sequence[str],
    results_dir: str | os.PathLike = "results",
    replace: bool = False,
) -> int:
    """Atomically add ``rows`` to ``<results_dir>/<name>.csv``; returns rows written.

    Metadata columns (:func:`metadata`) are added where a row lacks them. Rows whose
    ``key`` columns and ``run_id`` match a row already in the file (or an earlier new
    row) are dropped, so a resumed run writes no duplicates; with ``replace=True`` they
    replace that run's old rows instead. Rows of other runs are never dropped or
    replaced: each run keeps its own rows. Raises ValueError for rows missing key or
    core columns (nothing is written), ValueError when the existing file is malformed
    or ``name`` is the run registry, and PermissionError / OSError naming the path when
    the directory cannot be written. In a multi-host run only process 0 writes (the
    others return 0).

    Args:
        name: the CSV's stem (not "runs").
        rows: the rows, mappings of column -> value.
        key: the columns that identify a row within a run.
        results_dir: the results folder.
        replace: replace this run's rows with matching keys instead of dropping the new ones.

    Returns:
        The number of rows written.
    """
    _check_name(name)
    key = _check_key(key)
    if name == REGISTRY:
        raise ValueError(f"{REGISTRY}.csv is the run registry; write it with record_run")
    if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Iterable):
        raise TypeError(f"rows must be an iterable of dicts, got {type(rows).__name__}")
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows[{i}] must be a dict, got {type(row).__name__}")
    rows = [dict(r) for r in rows]
    meta = metadata()
    required = [c for c in SCHEMAS.get(name, {}) if c not in META_COLUMNS]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"rows[{i}] must be a dict, got {type(row).__name__}")
        lacking = [c for c in (*key, *required) if c not in row and c not in meta]
        if lacking:
            raise ValueError(f"rows[{i}] for {name}.csv lacks columns {lacking}")
        for column, value in meta.items():
            row.setdefault(column, value)
    if not rows or _not_writer():
        return 0
    directory = check_writable(results_dir)
    path = directory / f"{name}.csv"
    with _locked(directory):
        for stale in directory.glob(f".{name}.csv.*.tmp"):  # left by a killed writer
            with contextlib.suppress(OSError):
                stale.unlink()
        old = _read(path) if path.exists() else pd.DataFrame()
        match = key if "run_id" in key else [*key, "run_id"]  # one row per key per run
        new, seen = [], set()
        for row in reversed(rows) if replace else rows:  # replace: the last row wins
            k = normalize_key(row, match)
            if k not in seen:
                seen.add(k)
                new.append(row)
        if replace:
            new.reverse()
        dropped = False
        if len(old) and all(k in old.columns for k in match):
            # only rows of the new rows' runs can share a key (run_id is part of it):
            # normalizing every old row's key made each append grow with the file
            run_ids = {k[match.index("run_id")] for k in seen}
            same = np.array(old["run_id"].map(_norm).isin(run_ids), dtype=bool)
            old_keys = [normalize_key(r, match) for r in old.loc[same, match].to_dict("records")]
            if replace:
                replaced = same.copy()
                replaced[same] = [k in seen for k in old_keys]
                old, dropped = old[~replaced], bool(replaced.any())
            else:
                existing = set(old_keys)
                new = [r for r in new if normalize_key(r, match) not in existing]
        if not new:
            return 0
        added = pd.DataFrame(new)
        if len(old) and not dropped and set(added.columns) <= set(old.columns):
            _append_atomic(added.reindex(columns=old.columns), path)  # the header holds
        else:
            frame = added if old.empty and not len(old.columns) else pd.concat(
                [old, added], ignore_index=True)
            _write_atomic(_order(frame, name), path)
    return len(new)


# ------------------------------------------------------------------------------- runs


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _read_registry(path: Path) -> pd.DataFrame:
    """``runs.csv`` as text columns (``""`` for empty), ``RUN_COLUMNS`` first."""
    if not path.exists():
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="error")
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"{path}: empty file (no header row)") from e
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: unparsable run registry: {e}") from e
    if "run_id" not in frame.columns:
        raise ValueError(f"{path}: missing column 'run_id' (run registry)")
    for column in RUN_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    return frame[[*RUN_COLUMNS, *[c for c in frame.columns if c not in RUN_COLUMNS]]]


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def record_run(results_dir: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Create or update the row of ``record["run_id"]`` in ``<results_dir>/runs.csv``
    (atomically, under the directory lock): the given fields replace the old ones, the
    others are kept; ``updated_utc`` is set to now. In a multi-host run only process 0
    writes.

    Args:
        results_dir: the results folder.
        record: the run's fields; must hold a valid ``run_id``.
    """
    rid = check_run_id(record.get("run_id", ""))
    if _not_writer():
        return
    directory = check_writable(results_dir)
    path = directory / f"{REGISTRY}.csv"
    fields = {k: _text(v) for k, v in record.items()}
    fields["updated_utc"] = _now()
    with _locked(directory):
        frame = _read_registry(path)
        for column in fields:
            if column not in frame.columns:
                frame[column] = ""
        hit = frame["run_id"] == rid
        if hit.any():
            for column, value in fields.items():
                frame.loc[hit, column] = value
        else:
            row = {c: "" for c in frame.columns} | fields
            frame = pd.concat([frame, pd.DataFrame([row])], ignore_index=True)
        _write_atomic(frame, path)


def _partial_dir(results_dir: str | os.PathLike) -> Path:
    return Path(results_dir) / _PARTIAL


def mark_resumable(results_dir: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Write ``<results_dir>/.partial/<run_id>.json`` (``record`` as JSON, atomically):
    this checkout may continue that run. The folder is git-ignored, so a fresh clone
    never continues a run.

    Args:
        results_dir: the results folder.
        record: the run's record; must hold a valid ``run_id``.
    """
    rid = check_run_id(record.get("run_id", ""))
    if _not_writer():
        return
    directory = _partial_dir(check_writable(results_dir))
    directory.mkdir(exist_ok=True)
    text = json.dumps({k: _text(v) for k, v in record.items()}, indent=1, sort_keys=True)
    _replace_atomic(directory / f"{rid}.json", lambda f: f.write(text + "\n"))


def clear_resumable(results_dir: str | os.PathLike, run: str) -> None:
    """Remove the mark of :func:`mark_resumable` (and the ``.partial`` folder once
    empty); no error when there is none.

    Args:
        results_dir: the results folder.
        run: the run id.
    """
    directory = _partial_dir(results_dir)
    with contextlib.suppress(FileNotFoundError):
        (directory / f"{check_run_id(run)}.json").unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()  # only when empty


def resumable(results_dir: str | os.PathLike = "results") -> list[dict[str, str]]:
    """The records of the runs this checkout may continue (``.partial/*.json``), oldest
    start first; unreadable marks are skipped.

    Args:
        results_dir: the results folder.

    Returns:
        A list of records, dicts of str -> str.
    """
    directory = _partial_dir(results_dir)
    out = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("run_id") == path.stem:
            out.append({k: _text(v) for k, v in record.items()})
    return sorted(out, key=lambda r: (r.get("started_utc", ""), r["run_id"]))


def runs(results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """Every recorded run: the rows of ``<results_dir>/runs.csv`` (text columns, ``""``
    where empty; ``RUN_COLUMNS`` first) plus runs known only from their resume mark, and
    a bool column ``resumable`` (this checkout may continue the run). Raises ValueError
    when the registry is malformed.

    Args:
        results_dir: the results folder.

    Returns:
        A DataFrame, one row per run.
    """
    frame = _read_registry(Path(results_dir) / f"{REGISTRY}.csv")
    marks = resumable(results_dir)
    extra = [m for m in marks if m["run_id"] not in set(frame["run_id"])]
    if extra:
        frame = pd.concat([frame, pd.DataFrame(extra)], ignore_index=True).fillna("")
    frame["resumable"] = frame["run_id"].isin({m["run_id"] for m in marks})
    return frame.reset_index(drop=True)
