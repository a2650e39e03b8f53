"""The language-model suites' results files (issue 32): ``lm_kernels`` (the memory
table and scale sweep), ``lm_finetune`` (a row per arm and seed), ``lm_finetune_curves``
and ``lm_finetune_tuning``, as :class:`~fold_jax.results.columns.Schema`; collected in
:data:`fold_jax.results.files.SCHEMA`."""

from __future__ import annotations

from fold_jax.results.columns import MACHINE_KEY, RANK_MEANING, Schema, col, timing_columns

__all__ = ["SCHEMAS"]

_LM_KERNELS = Schema(
    "lm_kernels",
    ("model", "seq_len", "batch_size", "num_directions", "method", "rank", *MACHINE_KEY),
    "one step (or forward pass) of one training method on one transformer LM "
    "configuration, timed in alternating rounds against inference on the sequences it "
    "evaluates (fold_jax/bench/suites/lm.py)",
    (
        col("model", "str", "", "transformer_lm preset: tiny (~1.3e5 params), small (~1e6) "
           "or base (~1.1e7)", True),
        col("n_params", "num", "count", "parameters of the model", True),
        col("seq_len", "int", "tokens", "tokens per sequence T", True),
        col("batch_size", "int", "sequences", "sequences B in one loss evaluation", True),
        col("num_directions", "int", "evaluations", "the configuration's K: perturbed "
           "evaluations of the fused ES and evosax rows (population size); the other "
           "methods' rows carry it to pair with them", True),
        col("method", "str", "", "inference (a forward pass on B sequences), adam (a "
           "backprop Adam step), mezo (ZO-SGD: one rademacher SPSA pair, full rank), "
           "zo_fused (zo.value_and_grad low rank, K directions, SGD update), evosax_Open_ES, "
           "evosax_SNES (evosax ask / vmapped evaluation / tell, population K)", True),
        col("rank", "int", "rank", RANK_MEANING, True),
        col("evals", "int", "evaluations", "loss evaluations one call makes on B sequences "
           "(inference and adam 1, mezo 2, the others K)", True),
        col("ref_sequences", "int", "sequences", "sequences of the reference inference: "
           "evals x batch_size"),
        col("fits", "bool", "", "whether the row was measured; False: the method does not "
           "fit this configuration (see reason) and the measured columns are NaN", True),
        col("reason", "str", "", "why the row was not measured ('' when it was)", True),
        col("compile_s", "num", "s", "ahead-of-time compile time of the step (trace, lower, "
           "compile)", True),
        *timing_columns("step", "the step (alternating rounds with its reference)", True),
        col("rounds", "num", "count", "timed rounds behind the median"),
        col("mem_bytes", "num", "bytes", "compiled memory of the step: argument + output + "
           "temp - alias bytes (fold_jax.timing.mem_bytes); NaN when absent", True),
        col("inference_median_s", "num", "s", "median time of inference on ref_sequences "
           "sequences, timed in the same alternating rounds", True),
        col("inference_mem_bytes", "num", "bytes", "compiled memory of that inference", True),
        col("time_ratio", "num", "ratio", "step_median_s / inference_median_s (goal for "
           "zo_fused: <= 1.2)", True),
        col("mem_ratio", "num", "ratio", "mem_bytes / inference_mem_bytes (goal for "
           "zo_fused: <= 1.25)", True),
        col("single_inference_mem_bytes", "num", "bytes", "compiled memory of inference on "
           "batch_size sequences (the memory table's baseline)"),
        col("mem_vs_single_inference", "num", "ratio", "mem_bytes / "
           "single_inference_mem_bytes (MeZO's claim: a ZO step needs about one "
           "inference's memory)", True),
        col("path", "str", "", "zo rows: vg.describe()'s path (fused, materialized, "
           "full_rank); '' for the others"),
        col("fused_leaves", "num", "count", "zo rows: leaves whose low-rank noise reaches a "
           "layer as factors (association factored, dense or mixed); NaN for the others"),
        col("materialized_leaves", "num", "count", "zo rows: low-rank leaves summed into "
           "dense weights (W + s A B^T); NaN for the others", True),
        col("full_rank_leaves", "num", "count", "zo rows: leaves with full-rank noise; NaN "
           "for the others"),
        col("goal", "str", "", "zo_fused rows: 'met', or 'missed: ' and what missed (time "
           "ratio > 1.2, memory ratio > 1.25, materialized leaves > 0); '' for the others"),
        col("profile", "str", "", "benchmark profile that made the row: quick or full"),
    ),
)


_FT_KEY = ("arm", "seed", "budget_evals", *MACHINE_KEY)
_FT = "as lm_finetune.csv"
_FT_RUN = (  # the columns a fine-tuning run shares between its final and tuning rows
    col("arm", "str", "", "the fine-tuning arm (zero_shot, adam_finetune, mezo_sgd, "
       "es_lowrank, ...; fold_jax/bench/suites/lm_finetune.py)", True),
    col("seed", "int", "", "seed of the minibatches, the noise and (zo_scratch) the init",
       True),
    col("budget_evals", "int", "evaluations", "loss evaluations (forward passes of "
       "batch_size sequences) every arm is given; steps = budget_evals // evals_per_step",
       True),
    col("profile", "str", "", "benchmark profile that made the row: quick or full"),
    col("model", "str", "", "the LM and its sizes (fold_jax.pretrain.model)"),
    col("n_params", "num", "count", "parameters of the LM (d)", True),
    col("batch_size", "int", "sequences", "windows per minibatch"),
    col("seq_len", "int", "tokens", "window length T"),
    col("num_directions", "int", "evaluations", "K: the ES arms' evaluations a step (MeZO "
       "arms fix 2 or 4, Adam 1: evals_per_step)"),
    col("pretrain_cache", "str", "", "pretraining cache outcome: hit, miss, stale, corrupt"),
    col("zero_shot_val_bpc", "num", "bits/char", "the pretrained model's Milton validation "
       "bits per character"),
    col("zero_shot_test_bpc", "num", "bits/char", "the pretrained model's Milton test bits "
       "per character"),
    col("target_bpc", "num", "bits/char", "the stated target: zero_shot_val_bpc - the "
       "profile's target_drop"),
    col("library", "str", "", "who implements the arm: optax, fold_jax, evosax ('' for "
       "zero_shot)", True),
    col("recipe", "str", "", "the recipe (lm_finetune/<arm>; '' when nothing trained)"),
    col("hparams", "str", "JSON", "JSON object of every setting of the run"),
    col("evals_per_step", "int", "evaluations", "loss evaluations one step spends (Adam 1: "
       "its backward pass is in its seconds, not in this count)"),
    col("steps", "int", "steps", "training steps run"),
    col("elapsed_s", "num", "s", "timed training seconds (compilation and evaluation off the "
       "clock)"),
    col("compile_s", "num", "s", "compile (and warm-up) seconds of the run; later seeds load "
       "cached programs"),
    col("skipped_steps", "int", "steps", "steps whose update was skipped (non-finite "
       "estimate)"),
    col("step_mean_s", "num", "s", "elapsed_s / steps"),
    col("init", "str", "", "pretrained, or random (zo_scratch: the control)"),
    col("trial", "int", "", "tuning trial (final rows: the selected one; -1: untuned)",
       True),
    col("n_trials", "int", "count", "tuning trials the arm was given (0: not trained)"),
    col("final_val_bpc", "num", "bits/char", "validation bits per character at the end of "
       "the budget", True),
    col("best_val_bpc", "num", "bits/char", "lowest validation bits per character over the "
       "evaluations"),
)
_LM_FINETUNE = Schema(
    "lm_finetune", _FT_KEY,
    "one fine-tuning arm on one final seed: a pretrained character LM (Shakespeare) "
    "fine-tuned on Milton for the same evaluation budget, selected on validation "
    "(fold_jax/bench/suites/lm_finetune.py)",
    (
        *_FT_RUN,
        col("final_test_bpc", "num", "bits/char", "test bits per character at the end of the "
           "budget (the only read of the test split besides test curves)", True),
        col("reached", "bool", "", "whether the validation curve reached target_bpc", True),
        col("evals_to_target", "num", "evaluations", "loss evaluations until the first "
           "validation evaluation at or below target_bpc; inf when missed", True),
        col("time_to_target_s", "num", "s", "timed training seconds until then; inf when "
           "missed", True),
        col("mem_bytes", "num", "bytes", "compiled memory of one training step (argument + "
           "output + temp - alias bytes) at the selected setting; NaN when not run"),
        col("inference_mem_bytes", "num", "bytes", "compiled memory of inference on "
           "batch_size sequences"),
        col("mem_ratio", "num", "ratio", "mem_bytes / inference_mem_bytes"),
        col("fits", "bool", "", "whether the arm ran (False: reason says why, e.g. CMA-ES's "
           "d x d covariance)", True),
        col("reason", "str", "", "why the arm did not run ('' when it ran)"),
        col("test_curve", "bool", "", "whether lm_finetune_curves.csv holds a test curve of "
           "the row (a rerun of the same seed scored on test)"),
    ),
)

_LM_FINETUNE_CURVES = Schema(
    "lm_finetune_curves", (*_FT_KEY[:3], "split", "evals", *MACHINE_KEY),
    "one evaluation of a final fine-tuning run: bits per character on a split against "
    "loss evaluations and seconds",
    (
        col("arm", "str", "", _FT, True),
        col("seed", "int", "", _FT, True),
        col("budget_evals", "int", "evaluations", _FT, True),
        col("library", "str", "", _FT, True),
        col("split", "str", "", "val or test", True),
        col("evals", "num", "evaluations", "loss evaluations done at the evaluation", True),
        col("step", "int", "steps", "training steps done"),
        col("elapsed_s", "num", "s", "timed training seconds done", True),
        col("bits_per_char", "num", "bits/char", "bits per character on the split", True),
    ),
)

_LM_FINETUNE_TUNING = Schema(
    "lm_finetune_tuning", ("arm", "trial", "seed", "budget_evals", *MACHINE_KEY),
    "one tuning trial of a fine-tuning arm on one seed, scored on Milton's validation "
    "split (its task holds no test windows)",
    (
        *_FT_RUN,
        col("selected", "bool", "", "whether this trial's setting ran the finals", True),
        col("score", "num", "bits/char", "the trial's ranking score: median final_val_bpc "
           "over its seeds (inf when not finite; lowest selected)", True),
    ),
)


SCHEMAS = (_LM_KERNELS, _LM_FINETUNE, _LM_FINETUNE_CURVES, _LM_FINETUNE_TUNING)
