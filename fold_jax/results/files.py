"""The results files: one :class:`~fold_jax.results.columns.Schema` per file stem.

``SCHEMA`` maps each file (kernels, races, curves, tuning, variants, probes, region_maps,
scaling, bbob, hypotheses, control, control_curves, control_tuning, control_speed,
lm_kernels, lm_finetune, lm_finetune_curves, lm_finetune_tuning) to its key columns
and every column it may hold; ``SCHEMAS`` the core columns and their dtypes (every row
carries them and loading checks them).
"""

from __future__ import annotations

from fold_jax.results import files_control, files_lm
from fold_jax.results.columns import MACHINE_KEY, RANK_MEANING, Schema, col, timing_columns

__all__ = ["SCHEMA", "SCHEMAS"]

# shared meanings: one definition per concept, used by every file that has the column
_CHUNK = ("loss evaluations per chunk actually run (zo.value_and_grad's per_chunk x signs), "
          "= num_directions when all directions run in one chunk; empty = the kernel has no "
          "directions to chunk (zo_chunk_memory's inference rows: the chunk size of the "
          "estimator rows they pair with)")
_SPARSITY = "fraction of weights that are zero (0 = dense); empty where not applicable"


_KERNELS = Schema(
    "kernels",
    ("bench", "method", "variant", "n_params", "batch_size", "num_directions", "rank",
     "chunk_size", "sparsity", "dtype", "width", "shape", "word_bits", "layout", *MACHINE_KEY),
    "one compiled kernel (a step, a forward pass or a matmul) timed on one configuration "
    "(fold_jax/bench/suites/kernels.py)",
    (
        col("bench", "str", "", "the benchmark the row belongs to (forward, gradient_step, "
           "zo_fused_lowrank, xnor_matmul, ...)", True),
        col("method", "str", "", "the kernel measured within the bench", True),
        col("variant", "str", "", "network variant: dense, binarized or pruned", True),
        col("n_params", "num", "count", "parameters of the model (matmuls: nonzero weights)",
           True),
        col("batch_size", "num", "examples", "examples per call (matmuls: rows M of x)", True),
        col("num_directions", "num", "evaluations", "perturbed loss evaluations per step "
           "(search steps: evaluations the step makes); empty without directions", True),
        col("rank", "num", "rank", RANK_MEANING, True),
        col("chunk_size", "num", "evaluations", _CHUNK),
        col("sparsity", "num", "fraction", _SPARSITY, True),
        col("dtype", "str", "", "dtype of the operands (uint32/uint64: packed bit words)",
           True),
        col("width", "num", "units", "hidden width of the MLP where the bench varies it"),
        col("shape", "str", "", "matmul shape MxKxN (binarized and sparse kernels)"),
        col("word_bits", "num", "bits", "bits per packed word (xnor kernels)"),
        col("layout", "str", "", "BCSR activation layout: feature_major (sparse_apply's) or "
           "row_major (two transposes more)"),
        col("compile_s", "num", "s", "ahead-of-time compile time of the kernel (trace, lower, "
           "compile)", True),
        *timing_columns("step", "the kernel (alternating rounds with its reference)", True),
        col("rounds", "num", "count", "timed rounds behind the median", True),
        col("iterations", "num", "count", "calls per timed round (a round lasts >= 1 ms)"),
        col("evals_per_s", "num", "examples/s", "examples evaluated per second: "
           "num_directions x batch_size (or batch_size) / step_median_s", True),
        col("flops", "num", "FLOPs", "compiled.cost_analysis() FLOPs per call; NaN when the "
           "backend reports none", True),
        col("mem_bytes", "num", "bytes", "compiled memory: argument + output + temp - alias "
           "bytes; NaN when absent", True),
        col("inference_equiv_s", "num", "s", "median time of plain inference on "
           "num_directions x batch_size examples (batch_size for backprop and forward rows), "
           "timed in the same alternating rounds; empty on matmul rows", True),
        col("inference_compile_s", "num", "s", "compile time of that inference"),
        col("inference_mem_bytes", "num", "bytes", "compiled memory of that inference (as "
           "mem_bytes)"),
        col("frac_of_inference", "num", "ratio", "inference_equiv_s / step_median_s: the "
           "share of that inference's speed a step reaches (1 = a step costs exactly the "
           "inference; higher is faster); empty on matmul rows (see speedup_vs_dense)", True),
        col("dense_median_s", "num", "s", "median time of the f32 dense matmul of the same "
           "shape, timed in the same alternating rounds (binarized and sparse kernels)"),
        col("speedup_vs_dense", "num", "ratio", "dense_median_s / step_median_s (> 1: faster "
           "than dense)"),
        col("baseline", "str", "", "name of another kernel timed in the same rounds ('' if "
           "none)"),
        col("baseline_median_s", "num", "s", "median time of that baseline"),
        col("speedup_vs_baseline", "num", "ratio", "baseline_median_s / step_median_s (> 1: "
           "faster than the baseline)"),
        col("weight_bytes", "num", "bytes", "bytes of the packed weight operand (xnor)"),
        col("profile", "str", "", "benchmark profile that made the row: quick or full"),
    ),
)

_RACE_KEY = ("task", "method", "variant", "seed", "max_steps", "budget_s", *MACHINE_KEY)
_RACES = Schema(
    "races", _RACE_KEY,
    "one training race of one method on one task, variant and seed, up to a target "
    "(fold_jax/bench/suites/races.py)",
    (
        col("task", "str", "", "the task (fold_jax.tasks name)", True),
        col("method", "str", "", "the method (recipe registry name)", True),
        col("variant", "str", "", "network variant: dense, binarized, pruned or conv "
           "(nets.cnn in place of the MLP, digits only)", True),
        col("seed", "int", "", "seed of the initialisation and the batches", True),
        col("max_steps", "int", "steps", "step budget of the race"),
        col("budget_s", "num", "s", "wall-clock safety cap of the race", True),
        col("library", "str", "", "who implements the method: fold_jax, optax or evosax"),
        col("recipe", "str", "", "the recipe (search space) the method's settings come from"),
        col("hparams", "str", "JSON", "JSON object of every setting of the run (learning "
           "rate, sigma, rank, num_directions, chunk_size, shaping, ...)"),
        col("trial", "int", "", "the selected tuning trial (tuning.csv) whose hparams ran; -1 "
           "when not tuned"),
        col("n_trials", "int", "count", "tuning trials the method was given"),
        col("target_metric", "str", "", "the metric raced on (accuracy, micro_f1, ...)", True),
        col("target", "num", "metric", "the target value of target_metric", True),
        col("reached", "bool", "", "whether the target was reached within the budget", True),
        col("steps_to_target", "num", "steps", "steps until the first evaluation at the "
           "target; inf when missed", True),
        col("evals_to_target", "num", "evaluations", "loss evaluations (examples x "
           "evaluations per step) until then; inf when missed", True),
        col("time_to_target_s", "num", "s", "timed training seconds until then (compile and "
           "evaluation excluded); inf when missed", True),
        col("compile_s", "num", "s", "compile time of the training step plus one warm-up "
           "chunk (a race seed loads the program its selected trial compiled: the load "
           "time)", True),
        col("final_test_metric", "num", "metric", "target_metric on the test split at the "
           "last evaluation", True),
        col("final_test_loss", "num", "loss", "test loss at the last evaluation"),
        col("best_test_metric", "num", "metric", "best target_metric on the test split over "
           "the race's evaluations (its direction: highest accuracy, lowest loss)"),
        col("n_params", "num", "count", "parameters of the network", True),
        col("steps_run", "int", "steps", "steps trained"),
        col("capped", "bool", "", "whether budget_s cut the race short (then the row "
           "depends on machine speed)"),
        col("evals_run", "num", "evaluations", "loss evaluations made in all"),
        col("elapsed_s", "num", "s", "timed training seconds in all"),
        col("evals_per_step", "num", "evaluations", "evals_run / steps_run"),
        col("step_median_s", "num", "s", "seconds per step of the selected setting over its "
           "first eval_every steps, timed in alternating rounds against forward_median_s "
           "(bench.suite_races.step_cost); the same on every seed's row"),
        col("step_iqr_s", "num", "s", "inter-quartile range of step_median_s over the rounds"),
        col("forward_median_s", "num", "s", "seconds per forward pass (loss on one "
           "minibatch) of the race network, in the same rounds"),
        col("forward_iqr_s", "num", "s", "inter-quartile range of forward_median_s"),
        col("cost_rounds", "int", "count", "alternating rounds behind the step cost"),
        col("eval_forwards", "num", "forward passes", "one loss evaluation's cost in forward "
           "passes of one minibatch: the steps' median time / their evaluations / "
           "forward_median_s"),
        col("forwards_to_target", "num", "forward passes", "evals_to_target x eval_forwards: "
           "the time to target in forward passes, less at the mercy of machine drift "
           "between jobs than time_to_target_s; inf when missed"),
        col("sparsity", "num", "fraction", _SPARSITY),
        col("batch_size", "int", "examples", "examples per training step"),
        col("eval_every", "int", "steps", "steps between evaluations"),
        col("skipped_steps", "int", "steps", "steps whose update was skipped (non-finite "
           "estimate)"),
        col("accepted_steps", "num", "steps", "steps a direct-search method moved (NaN for "
           "other methods)"),
        col("acceptance", "str", "", "direct search's acceptance rule (reevaluate / batch); "
           "'' for other methods"),
    ),
)

_CURVES = Schema(
    "curves", (*_RACE_KEY[:6], "step", "split", "metric", *MACHINE_KEY),
    "one metric on one split at one evaluation of a race (long format; key as races.csv "
    "plus step, split, metric)",
    (
        col("task", "str", "", "as races.csv", True),
        col("method", "str", "", "as races.csv", True),
        col("variant", "str", "", "as races.csv", True),
        col("seed", "int", "", "as races.csv", True),
        col("max_steps", "int", "steps", "as races.csv"),
        col("budget_s", "num", "s", "as races.csv"),
        col("step", "num", "steps", "training steps done at the evaluation", True),
        col("evals", "num", "evaluations", "loss evaluations done at the evaluation", True),
        col("elapsed_s", "num", "s", "timed training seconds done at the evaluation", True),
        col("split", "str", "", "train, val or test", True),
        col("metric", "str", "", "loss, accuracy, micro_f1, ...", True),
        col("value", "num", "metric", "the metric's value", True),
    ),
)

_TUNING = Schema(
    "tuning", ("task", "method", "variant", "trial", "seed", "max_steps", *MACHINE_KEY),
    "one tuning trial on one of its seeds: one hyperparameter setting of a method trained "
    "on a task and scored on the validation split (never on test)",
    (
        col("task", "str", "", "the task (fold_jax.tasks name)", True),
        col("method", "str", "", "the method (recipe registry name)", True),
        col("variant", "str", "", "network variant: as races.csv", True),
        col("trial", "int", "", "the trial's index in the method's quasi-random sequence", True),
        col("max_steps", "int", "steps", "step budget of the trial", True),
        col("library", "str", "", "who implements the method: fold_jax, optax or evosax"),
        col("recipe", "str", "", "the recipe (search space) the trial was drawn from"),
        col("hparams", "str", "JSON", "JSON object of the trial's hyperparameters"),
        col("n_trials", "int", "count", "trials the method was given"),
        col("split", "str", "", "the split the trial is scored on: val"),
        col("target_metric", "str", "", "the metric raced on (accuracy, micro_f1, ...)"),
        col("target", "num", "metric", "the target value of target_metric"),
        col("reached", "bool", "", "whether the trial reached the target on the validation "
           "split"),
        col("steps_to_target", "num", "steps", "steps until the target; inf when missed"),
        col("evals_to_target", "num", "evaluations", "loss evaluations until the target; inf "
           "when missed"),
        col("time_to_target_s", "num", "s", "timed training seconds until the target; inf "
           "when missed"),
        col("seed", "int", "", "seed of the run's initialisation and batches: 1000 + trial + "
           "j n_trials for the trial's j-th seed (apart from the race seeds)", True),
        col("trial_seeds", "int", "count", "seeds every trial of the method is scored on"),
        col("best_val_metric", "num", "metric", "best target_metric on the validation split"),
        col("capped", "bool", "", "whether budget_s cut the trial short"),
        col("n_params", "num", "count", "parameters of the network"),
        col("final_val_metric", "num", "metric", "target_metric on the validation split at "
           "the last evaluation"),
        col("steps_run", "int", "steps", "steps trained"),
        col("evals_run", "num", "evaluations", "loss evaluations made in all"),
        col("elapsed_s", "num", "s", "timed training seconds in all"),
        col("compile_s", "num", "s", "compile time of the training step"),
        col("skipped_steps", "int", "steps", "steps whose update was skipped (non-finite "
           "estimate)"),
        col("score", "num", "evaluations", "the trial's ranking score, on each of its seeds' "
           "rows: the median over its seeds of evals_to_target (lower is better)"),
        col("selected", "bool", "", "whether this trial is the one rerun on the race seeds "
           "(races.csv)"),
    ),
)

_VARIANTS = Schema(
    "variants",
    ("row_kind", "variant", "kernel", "method", "sparsity", "shape", "word_bits",
     *MACHINE_KEY),
    "dense vs binarized vs pruned: one matmul kernel, one trained net, or one estimator "
    "error measurement (row_kind; fold_jax/bench/suites/variants.py)",
    (
        col("row_kind", "str", "", "kernel (one matmul), train (a trained net) or "
           "zo_variance (estimator error on a pruned net)"),
        col("variant", "str", "", "dense, binarized or pruned", True),
        col("kernel", "str", "", "the kernel: dense, masked, bcsr, bcsr_row_major, "
           "xnor_packed, ... (zo_variance: zo_masked / zo_full)"),
        col("method", "str", "", "training method of a train row; 'none' for kernels"),
        col("real_kernel", "bool", "", "True for a real packed / sparse kernel, False for a "
           "simulation (dense math with a mask or with {-1, +1} floats)"),
        col("sparsity", "num", "fraction", "fraction of weights that are zero (0 = dense)"),
        col("shape", "str", "", "matmul shape MxKxN, or the MLP's widths (mlp64-256-256-10)"),
        col("word_bits", "int", "bits", "bits per packed word (0 where nothing is packed)"),
        *timing_columns("time", "the row's kernel (train rows: inference on the test split)"),
        col("compile_s", "num", "s", "compile time of the row's kernel"),
        col("speedup_vs_dense", "num", "ratio", "time of the f32 dense counterpart (same "
           "rounds) / time_median_s (> 1: faster than dense)"),
        col("weight_bytes", "num", "bytes", "bytes the weights take in the row's storage"),
        col("bits_per_weight", "num", "bits", "8 x weight_bytes / dense weight count"),
        col("nonzeros", "num", "count", "nonzero weights"),
        col("accuracy", "num", "fraction", "test accuracy (train rows)"),
        col("steps", "int", "steps", "training steps (train rows; 0 otherwise)"),
        col("train_s", "num", "s", "training seconds (train rows)"),
        col("est_mse", "num", "squared gradient", "mean squared error of one antithetic "
           "estimate on the surviving weights (zo_variance rows)"),
        col("est_mse_sem", "num", "squared gradient", "standard error of est_mse"),
        col("expected_mse", "num", "squared gradient", "est_mse predicted by the formula in "
           "fold_jax.bench.suites.variants.zo_variance"),
        col("grad_sq_survivors", "num", "squared gradient", "|g_S|^2: squared true gradient "
           "on the surviving weights"),
        col("grad_sq_all", "num", "squared gradient", "|g|^2: squared true gradient on all "
           "weights"),
    ),
)

_PROBES = Schema(
    "probes",
    ("probe", "task", "activation", "depth", "width", "stage", "method", "layer",
     "threshold", "metric", *MACHINE_KEY),
    "one measurement of one probe (long format: metric, value; empty where a column does "
    "not apply; fold_jax/bench/suites/probes.py)",
    (
        col("probe", "str", "", "vanishing, zo_cosine, deep_sigmoid_training, heads, "
           "threshold, regions_line, regions_grid, region_map, tent, estimator_health"),
        col("task", "str", "", "the task (fold_jax.tasks name, or the probe's own problem)"),
        col("activation", "str", "", "hidden activation: sigmoid, tanh, relu, abs"),
        col("depth", "num", "layers", "hidden layers (activations); a net of depth L has "
           "L + 1 dense layers"),
        col("width", "num", "units", "hidden units per layer (estimator_health: parameters "
           "of its linear layer; tent: units per layer of the constructed net)"),
        col("stage", "str", "", "init, trained or constructed"),
        col("method", "str", "", "the training method or estimator (heads: the head)"),
        col("layer", "num", "", "layer index, 0 = input side (per-layer metrics)"),
        col("threshold", "num", "probability", "decision threshold of a multi-label head"),
        col("metric", "str", "", "what value measures (grad_norm, ratio_first_last, cosine, "
           "test_accuracy, regions, patterns, components, ...)"),
        col("value", "num", "metric", "the measurement"),
    ),
)

_REGION_MAPS = Schema(
    "region_maps", ("map", "grid", "row", *MACHINE_KEY),
    "one row of a 2-D region map of a trained net (fold_jax.bench.suites.probes.region_map; its "
    "summary numbers are probes.csv rows with probe = region_map)",
    (
        col("map", "str", "", "the map's name (e.g. spirals_relu_d4_w32)"),
        col("grid", "str", "", "pattern: activation-pattern id per cell; class: predicted "
           "class per cell; points_0 / points_1: the training points of each class"),
        col("row", "int", "", "grid row index from the bottom (points: 0)"),
        col("values", "str", "", "pattern / class: the row's cells left to right, run-length "
           "encoded as 'value*count' tokens; points: 'x1,x2' pairs, space separated"),
        col("resolution", "int", "cells", "cells per side of the grid"),
        col("box", "num", "input units", "the grid covers [-box, box]^2 (standardized inputs)"),
    ),
)

_SCALING = Schema(
    "scaling",
    ("method", "devices", "forced_host_devices", "num_directions", "batch_size", "host",
     "backend"),
    "throughput of one sharded step on one mesh size (fold_jax/bench/suites/scaling.py)",
    (
        col("method", "str", "", "zo_gaussian, zo_lowrank (directions sharded) or "
           "backprop_data_parallel (batch sharded)"),
        col("devices", "int", "count", "devices in the mesh"),
        col("forced_host_devices", "int", "count", "host devices forced on CPU "
           "(--xla_force_host_platform_device_count); 0 on accelerators"),
        col("num_directions", "int", "evaluations", "perturbed evaluations per step"),
        col("batch_size", "int", "examples", "examples per step"),
        col("throughput", "num", "throughput_unit", "work per second of the step"),
        col("throughput_unit", "str", "", "perturbed evaluations/s or examples/s"),
        *timing_columns("step", "the sharded step"),
        col("compile_s", "num", "s", "compile time of the step"),
    ),
)

_BBOB_TARGETS = ("1e1", "1e-1", "1e-3", "1e-5", "1e-8")
_BBOB = Schema(
    "bbob", ("function", "dim", "instance", "run", "method", "budget", *MACHINE_KEY),
    "one run of one method on one COCO BBOB problem (function x dim x instance; "
    "fold_jax/bench/suites/bbob.py)",
    (
        col("function", "int", "", "BBOB function 1-24", True),
        col("function_name", "str", "", "its name (Sphere, Rastrigin, ...)", True),
        col("group", "str", "", "its BBOB group (separable, multimodal, ...)"),
        col("dim", "int", "dimensions", "problem dimension", True),
        col("instance", "int", "", "COCO instance", True),
        col("run", "int", "", "repetition index", True),
        col("method", "str", "", "the optimizer", True),
        col("library", "str", "", "fold_jax, evosax or pycma", True),
        col("budget_multiplier", "int", "evaluations/dim", "budget / dim"),
        col("budget", "num", "evaluations", "evaluation budget of the run", True),
        col("evals_used", "num", "evaluations", "evaluations the method made", True),
        col("evals_counted", "num", "evaluations", "evaluations the tracker counted"),
        col("best_precision", "num", "f - f_opt", "best f - f_opt found", True),
        col("f_opt", "num", "f", "the problem's optimal value"),
        *[col(f"evals_to_{t}", "num", "evaluations", f"evaluations until f - f_opt <= {t}; "
             "inf when never", True) for t in _BBOB_TARGETS],
        col("seconds", "num", "s", "wall-clock seconds of the run (its share of a batch)",
           True),
        col("compile_s", "num", "s", "compile time of the batch the run was in"),
        col("batch_runs", "int", "count", "runs vmapped together with it"),
        col("steps", "num", "steps", "generations / steps made"),
        col("stopped", "str", "", "why the run stopped (target, budget, ...)"),
        col("population_size", "int", "count", "evaluations per generation"),
        col("start", "str", "", "distribution of the start point"),
        col("seed", "int", "", "seed of the run", True),
    ),
)

_HYPOTHESES = Schema(
    "hypotheses", ("claim", "workload", "method", "setting", "seed", "metric", "step",
                   *MACHINE_KEY),
    "one measurement of one method on one setting of a workload testing one of the essays' "
    "claims (fold_jax/bench/suites/hypotheses.py; long format: final metrics at step = the budget, "
    "curve_* metrics at each evaluation, memory and time rows at step 0)",
    (
        col("claim", "str", "", "depth, recurrent, nondiff_parts, nondiff_objective or "
           "linear_regression", True),
        col("workload", "str", "", "the workload testing it (mlp_depth, adding_accuracy, "
           "adding_memory, threshold_net, categorical, zero_one, multilabel_exact, linreg)",
           True),
        col("method", "str", "", "the training method (with its workaround: tbptt, ste_adam, "
           "gumbel_annealed, ...)", True),
        col("family", "str", "", "backprop or forward_only"),
        col("library", "str", "", "who implements the method: fold_jax", True),
        col("setting", "str", "", "the configuration within the workload (sigmoid/d16, "
           "gru/T512, ...)", True),
        col("seed", "int", "", "seed of the initialisation and the batches", True),
        col("metric", "str", "", "what value measures (test_accuracy, test_r2, train_loss, "
           "curve_test_accuracy, mem_bytes, temp_bytes, step_s, skipped_steps; "
           "trial_val_accuracy / trial_val_r2: a tuning trial's final validation metric; "
           "trial_skipped_steps)",
           True),
        col("value", "num", "metric", "the measurement", True),
        col("step", "int", "steps", "training steps done when measured (the budget for "
           "final metrics; 0 for memory and time rows)", True),
        col("evals", "num", "evaluations", "loss evaluations spent by then (NaN for memory "
           "and time rows)", True),
        col("mem_bytes", "num", "bytes", "compiled memory of one training step: argument + "
           "output + temp - alias bytes (memory rows; NaN elsewhere)", True),
        col("step_s", "num", "s", "seconds per training step (memory rows: median over "
           "timed rounds; training rows: timed training seconds / steps)", True),
        col("steps", "int", "steps", "step budget of the run"),
        col("batch_size", "int", "examples", "examples per training step"),
        col("n_params", "num", "count", "parameters of the network"),
        col("hparams", "str", "JSON", "JSON object of the run's settings (final rows: the "
           "selected trial's, the same for every seed)"),
        col("trial", "int", "", "tuning trial: its index (trial rows) or the selected one's "
           "(final rows); -1 for memory and time rows, which are not tuned"),
        col("n_trials", "int", "count", "tuning trials drawn for the method and setting "
           "(0: not tuned)"),
        col("selected", "bool", "", "trial rows: whether this trial was selected (the "
           "highest final validation metric)"),
        col("compile_s", "num", "s", "compile time of the training chunk or step (seeds after "
           "the first load the cached program)"),
        col("elapsed_s", "num", "s", "timed training seconds done by then"),
        col("T", "int", "steps", "sequence length (adding_memory rows)"),
    ),
)


SCHEMA: dict[str, Schema] = {s.file: s for s in (
    _KERNELS, _RACES, _CURVES, _TUNING, _VARIANTS, _PROBES, _REGION_MAPS, _SCALING, _BBOB,
    _HYPOTHESES, *files_control.SCHEMAS, *files_lm.SCHEMAS)}

# Core columns per file and their dtypes (derived from SCHEMA): every row carries them
# and validate() checks their type. Extra columns are allowed in every file (the test
# suite checks each one the suites write is described in SCHEMA).
SCHEMAS: dict[str, dict[str, str]] = {
    name: ({"n_devices": "int"} if name == "scaling" else {}) | s.core
    for name, s in SCHEMA.items()}
