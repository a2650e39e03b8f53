"""The essays' claims about forward-only training, tested: results/hypotheses.csv.

Long rows (claim, workload, method, library, setting, seed, metric, value, mem_bytes,
step_s, evals, step, ...); the workloads are in :mod:`fold_jax.bench.hypotheses_work`. One job
tunes one method on one setting (:func:`fold_jax.bench.hypotheses_work.tune`: ``trials``
settings scored on the validation split) and trains the selected one on every seed of
the profile (the seeds share compiled programs:
:func:`fold_jax.bench.common.shared_compiles`); its key is its last row (the last
seed's final metric). Memory and time rows are measured, not tuned.

Profiles: ``quick`` (about 12 minutes on a 2-core CPU; run by ``--only hypotheses``,
not by the default quick run: ``DEFAULT_PROFILES``) gives every claim a verdict with
small nets, short fixed budgets, 4 trials and 3 seeds; ``full`` adds activations,
depths, methods, sequence lengths and the multilabel objective, with longer budgets, 20
trials and 5 seeds. The report (:mod:`fold_jax.report.hypotheses`) draws the verdicts
from these rows only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fold_jax import results
from fold_jax.bench import hypotheses_work as work
from fold_jax.bench.common import Job, check_profile, shared_compiles

FILE = "hypotheses"
KEY = results.key(FILE)
# Not in the default quick run: its quick profile alone takes about 12 minutes on a 2-core
# CPU, 9 of them compiling (each tuning trial bakes its hyperparameters into its program),
# which the 20-minute quick run cannot hold beside the races. `--only hypotheses` runs it
# (quick), and the full profile runs it by default; the report shows the newest run's rows
# with their run id and commit.
DEFAULT_PROFILES = ("full",)

PROFILE: dict[str, dict[str, Any]] = {
    "quick": dict(
        seeds=(0, 1, 2), trials=4,
        depth_activations=("sigmoid",), depths=(2, 16),
        depth_methods=("adam", "zo", "zo_layer_scaled", "one_plus_one", "rso"),
        depth_steps=1000, depth_relu_methods=("adam",),
        rnn_Ts=(16,), rnn_steps=600,
        rnn_methods=("bptt", "tbptt", "forward_gradient", "zo"),
        cost_T=(64, 128, 256, 512), truncate=16,
        cost_methods=("bptt", "tbptt", "forward_gradient", "zo"),
        threshold_methods=("ste_adam", "zo", "gld"), threshold_steps=600,
        categorical_methods=("gumbel_annealed", "st_gumbel", "reinforce", "zo_crn"),
        categorical_steps=600,
        objective_workloads=("zero_one",),
        objective_methods=("adam_ce", "zo_metric", "gld_metric"), objective_steps=600,
        linreg_methods=("relative_loss", "gld", "one_plus_one", "adam"), linreg_steps=3000,
    ),
    "full": dict(
        seeds=(0, 1, 2, 3, 4), trials=20,
        depth_activations=("sigmoid", "tanh", "relu"), depths=(2, 4, 8, 16, 32),
        depth_methods=("adam", "zo", "zo_layer_scaled", "gld", "one_plus_one", "rso",
                       "relative_loss"),
        depth_steps=3000, depth_relu_methods=None,
        rnn_Ts=(16, 64, 256, 1024), rnn_steps=3000,
        rnn_methods=("bptt", "tbptt", "forward_gradient", "zo", "one_plus_one"),
        cost_T=(16, 32, 64, 128, 256, 512, 1024), truncate=16,
        cost_methods=("bptt", "tbptt", "forward_gradient", "zo", "one_plus_one"),
        threshold_methods=("ste_adam", "zo", "gld", "one_plus_one", "relative_loss"),
        threshold_steps=3000,
        categorical_methods=("gumbel_annealed", "st_gumbel", "reinforce", "zo_crn",
                             "one_plus_one_crn"),
        categorical_steps=3000,
        objective_workloads=("zero_one", "multilabel_exact"),
        objective_methods=("adam_ce", "one_plus_one_ce", "zo_metric", "one_plus_one_metric",
                           "gld_metric"), objective_steps=3000,
        linreg_methods=("relative_loss", "gld", "one_plus_one", "zo", "adam"),
        linreg_steps=3000,
    ),
}


def truncation(T: int, k: int) -> int:
    """The window of truncated BPTT on the adding problem of length ``T``: ``k`` (the
    profile's ``truncate``, also the window whose memory ``adding_memory`` measures),
    but at most a quarter of the sequence (4 at T = 16), so the gradient never spans
    the whole sequence."""
    return max(1, min(k, T // 4))


def _last_key(claim: str, workload: str, method: str, setting: str, seed: int, metric: str,
              step: int) -> dict[str, Any]:
    return {"claim": claim, "workload": workload, "method": method, "setting": setting,
            "seed": seed, "metric": metric, "step": step}


def _measured(run: Callable[[], list[dict]]) -> Callable[[], list[dict]]:
    def go() -> list[dict]:
        with shared_compiles():
            return run()

    return go


def _train_job(claim: str, workload: str, method: str, setting: str, metric: str,
               steps: int, seeds: tuple[int, ...], n_trials: int, run: work.Run,
               cost_per_run: float) -> Job:
    """The job tuning ``method`` by ``n_trials`` trials and training it on ``seeds``;
    ``cost_per_run``: seconds of one training run on a 2-core CPU."""
    key = _last_key(claim, workload, method, setting, seeds[-1], f"test_{metric}", steps)
    return Job(key, _measured(lambda: work.tune(run, method, seeds, n_trials)),
               f"{workload}/{setting}/{method}", cost_per_run * (n_trials + len(seeds)))


def jobs(profile: str) -> Iterator[Job]:
    """The jobs of ``profile``.

    Args:
        profile: "quick" or "full".

    Yields:
        :class:`fold_jax.bench.common.Job` objects, one per (workload, setting, method).
    """
    p = PROFILE[check_profile(profile)]
    seeds, n = p["seeds"], p["trials"]
    steps = p["linreg_steps"]
    for m in p["linreg_methods"]:
        yield _train_job("linear_regression", "linreg", m, "d20", "r2", steps, seeds, n,
                         lambda s, hp, split, m=m, k=steps: work.linreg_run(
                             m, s, k, k // 8, hp=hp, eval_split=split), 1.5)
    relu_only = () if p["depth_relu_methods"] is None else ("relu",)
    for act in (*p["depth_activations"], *relu_only):
        for depth in p["depths"]:
            steps = p["depth_steps"]
            for m in (p["depth_relu_methods"] if act in relu_only else p["depth_methods"]):
                yield _train_job(
                    "depth", "mlp_depth", m, f"{act}/d{depth}", "accuracy", steps, seeds, n,
                    lambda s, hp, split, m=m, a=act, d=depth, k=steps: work.depth_run(
                        m, a, d, s, k, k // 5, hp=hp, eval_split=split),
                    2 + depth / 4)
    steps = p["rnn_steps"]
    for T in p["rnn_Ts"]:
        window = truncation(T, p["truncate"])
        for m in p["rnn_methods"]:
            yield _train_job("recurrent", "adding_accuracy", m, f"gru/T{T}", "r2", steps,
                             seeds, n, lambda s, hp, split, m=m, k=steps, T=T, kt=window:
                             work.recurrent_accuracy_run(m, T, kt, s, k, k // 5, hp=hp,
                                                         eval_split=split),
                             2 * max(1, T // 16))
    for T in p["cost_T"]:
        for m in p["cost_methods"]:
            key = _last_key("recurrent", "adding_memory", m, f"gru/T{T}", seeds[-1],
                            "step_s", 0)
            yield Job(key, _measured(lambda m=m, T=T: work.recurrent_cost_rows(
                m, T, p["truncate"], seeds)), f"adding_memory/T{T}/{m}",
                2 + T / 256)
    steps = p["threshold_steps"]
    for m in p["threshold_methods"]:
        yield _train_job("nondiff_parts", "threshold_net", m, f"sign/h2/w{work.WIDTH}",
                         "accuracy", steps, seeds, n,
                         lambda s, hp, split, m=m, k=steps: work.threshold_run(
                             m, s, k, k // 6, hp=hp, eval_split=split), 2)
    steps = p["categorical_steps"]
    for m in p["categorical_methods"]:
        yield _train_job("nondiff_parts", "categorical", m, f"K{work.CATEGORIES}", "accuracy",
                         steps, seeds, n,
                         lambda s, hp, split, m=m, k=steps: work.categorical_run(
                             m, s, k, k // 6, hp=hp, eval_split=split), 2)
    steps = p["objective_steps"]
    for wl in p["objective_workloads"]:
        setting = {"zero_one": "digits", "multilabel_exact": "digit_attributes"}[wl]
        for m in p["objective_methods"]:
            yield _train_job("nondiff_objective", wl, m, setting, "accuracy", steps, seeds, n,
                             lambda s, hp, split, m=m, w=wl, k=steps: work.objective_run(
                                 m, w, s, k, k // 6, hp=hp, eval_split=split), 2)
