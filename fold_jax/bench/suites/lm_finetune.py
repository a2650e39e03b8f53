"""Fine-tuning a pretrained character LM forward-only vs backprop -> results/lm_finetune.csv
(one row per arm and seed), lm_finetune_curves.csv and lm_finetune_tuning.csv (issue 32,
item 5).

The protocol, fixed here before any fine-tuning number was read:

- **Model and data.** The profile's LM (``PROFILE[..]["model"]``) is pretrained with Adam
  on Shakespeare by :func:`fold_jax.learn.pretrain.pretrain` (cached: a second run loads it),
  then fine-tuned on Milton (``text.milton``: contiguous train / val / test blocks, the
  first ``finetune_chars`` characters) with minibatches of ``batch_size`` windows of T.
- **Arms** (``ARMS``; recipes ``lm_finetune/<arm>`` in
  :func:`fold_jax.learn.suite_recipes.lm_finetune_recipes`): ``zero_shot`` (the pretrained
  params, no update), ``adam_finetune`` (backprop + Adam), ``mezo_sgd`` / ``mezo_sgd2``
  (MeZO: ZO-SGD, SPSA, 1 / 2 rademacher direction pairs, eps 1e-3, constant learning
  rate, the learning rate tuned), ``es_lowrank`` (fold_jax's antithetic rank-4 ES, K
  evaluations, centered ranks, Adam), ``zo_adam`` (full-rank antithetic gaussian
  estimate, K evaluations, Adam), ``snes_lowrank`` (fold_jax's SNES on rank-4 noise),
  ``evosax_open_es`` / ``evosax_snes`` / ``evosax_cma_es`` (population K, no evaluation
  of the mean; where a strategy cannot hold d its rows say why and nothing runs),
  ``zo_lora`` (ZO-Adam on the output head and LayerNorm parameters only, a mask: NOT a
  LoRA adapter) and ``zo_scratch`` (es_lowrank's recipe, fixed a priori as fold_jax's
  headline forward-only arm, from random init, tuned on its own).
- **Budget**: ``budget_evals`` loss evaluations on a minibatch (forward passes of B
  sequences) for every arm: ``budget_evals // evals_per_step`` steps (Adam 1 a step,
  its backward pass not counted but in its seconds; MeZO 2 or 4; the ES arms K).
  Validation bits/char is recorded every ``eval_evals`` evaluations.
- **Tuning** (:func:`fold_jax.bench.tuning.tune`, the same for every arm):
  ``trials`` settings drawn from the arm's space, one seed each, trained on the whole
  budget and scored by the final **validation** bits/char (lowest wins; NaN ranks last).
  Tuning runs see a task whose test windows are replaced by the validation windows
  (:func:`tuning_view`), so the test split cannot be read while choosing.
- **Finals**: the selected setting on ``seeds`` (>= 3), validation curve against
  evaluations and seconds; the test split is read once per seed at the end
  (``final_test_bpc``) and, where the profile says ``test_curves``, by a second run of
  the same seed scored on test (a deterministic rerun of the same trajectory).
- **Target**: ``target_bpc = zero-shot validation bits/char - target_drop`` (0.1 quick,
  0.2 full); evaluations and seconds to it on the validation curve (inf when missed).
- **Cost**: step time = timed training seconds / steps (compilation and evaluation off
  the clock); compiled memory of one step and of inference on B sequences
  (:func:`fold_jax.bench.timing.mem_bytes`), on the selected setting.

Profiles: **quick** (a tiny GRU LM, 2 trials, 3 seeds, 480 evaluations; in the default
quick run) says whether the machinery runs and roughly where the arms stand; **full**
(the tiny transformer, every arm, 6 trials, 5 seeds) carries the reference numbers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np

from fold_jax import results
from fold_jax.bench import timing, tuning
from fold_jax.bench.common import Job, check_profile, shared_compiles
from fold_jax.checks import check_choice
from fold_jax.learn import nets, pretrain, recipes, text, train
from fold_jax.learn.suite_recipes import LM_FINETUNE_ARMS

__all__ = ["ARMS", "PROFILE", "arm_rows", "evals_per_step", "head_and_norm_mask", "jobs",
           "run", "setup", "tuning_view", "why_not"]

FILE = "lm_finetune"
KEY = results.key(FILE)
KEYS = {"lm_finetune_curves": results.key("lm_finetune_curves"),
        "lm_finetune_tuning": results.key("lm_finetune_tuning")}
DEFAULT_PROFILES = ("quick", "full")

ARMS = LM_FINETUNE_ARMS
MAX_POPULATION_BYTES = 2 ** 30  # an evosax population (K x d float32) beyond this: not run
PROFILE: dict[str, dict[str, Any]] = {
    "quick": {"model": ("gru", {"embed": 32, "hidden": 64}),
              "pretrain": {"steps": 400, "batch_size": 32, "T": 32, "max_chars": 200_000},
              "finetune_chars": 60_000, "batch_size": 16, "budget_evals": 480,
              "eval_evals": 120, "num_directions": 8, "trials": 2, "seeds": (0, 1, 2),
              "target_drop": 0.1, "test_curves": False,
              "arms": ("zero_shot", "adam_finetune", "mezo_sgd", "es_lowrank", "zo_scratch")},
    "full": {"model": ("transformer", {"preset": "tiny"}),
             "pretrain": {"steps": 3000, "batch_size": 32, "T": 64, "max_chars": 1_000_000},
             "finetune_chars": 300_000, "batch_size": 16, "budget_evals": 6_400,
             "eval_evals": 800, "num_directions": 16, "trials": 6, "seeds": (0, 1, 2, 3, 4),
             "target_drop": 0.2, "test_curves": True, "arms": ARMS},
}
# seconds a run takes on a shared 2-core CPU (quick: compile-dominated): the progress
# bar's estimate
RUN_COST = {"quick": 8.0, "full": 900.0}


class Setup:
    """The pretrained model and the fine-tuning task of a profile (built once a process).

    Attributes:
        net, pretrained: the LM and :func:`fold_jax.learn.pretrain.pretrain`'s result.
        task: Milton's :class:`~fold_jax.learn.text.SequenceTask`.
        loss, apply: the training loss and fit's (batched) evaluation apply.
        zero_shot: ``{"val": bpc, "test": bpc}`` of the pretrained params.
    """

    def __init__(self, profile: str):
        p = PROFILE[check_profile(profile)]
        name, sizes = p["model"]
        self.net = pretrain.model(name, len(text.vocabulary()), **sizes)
        self.pretrained = pretrain.pretrain(self.net, "shakespeare", **p["pretrain"])
        self.task = text.milton(T=p["pretrain"]["T"], max_chars=p["finetune_chars"])
        text.check_same_vocabulary(self.pretrained.task, self.task)
        self.loss = self.task.loss_fn(self.net.apply)
        self.apply = pretrain.batched_apply(self.net.apply)
        self.n_params = nets.count_params(self.pretrained.params)
        head = self.task.head  # one jitted scorer of a whole split per call
        self._metrics = jax.jit(lambda p, x, y: head.metrics(self.apply(p, x), y))
        self.zero_shot = {s: self.bits(self.pretrained.params, s) for s in ("val", "test")}

    def bits(self, params: Any, split: str) -> float:
        """Bits per character of ``params`` on the whole ``split`` of the task.

        Args:
            params: the LM's params.
            split: "val" or "test".

        Returns:
            The mean cross-entropy over every position, in bits.
        """
        x, y = self.task.split(check_choice(split, "split", ("val", "test")))
        return float(self._metrics(params, x, y)["bits_per_char"])


@functools.cache
def setup(profile: str) -> Setup:
    """The profile's :class:`Setup` (cached per process).

    Args:
        profile: "quick" or "full".

    Returns:
        The setup.
    """
    return Setup(profile)


def tuning_view(task: text.SequenceTask) -> text.SequenceTask:
    """``task`` with its test windows replaced by the validation windows: what tuning
    trains on, so no tuning code path can read the test split.

    Args:
        task: the fine-tuning task.

    Returns:
        A copy holding no test window.
    """
    import dataclasses

    return dataclasses.replace(task, x_test=task.x_val, y_test=task.y_val)


def head_and_norm_mask(params: Any) -> Any:
    """1 on the output head's and every LayerNorm's parameters, 0 elsewhere (zo_lora).

    Args:
        params: an LM's params (``nets.gru_lm`` / ``nets.transformer_lm``).

    Returns:
        A float32 0/1 pytree like ``params``.
    """
    def keep(path, leaf):
        names = [str(getattr(k, "key", k)) for k in path]
        on = any(n == "head" or n.startswith("ln") or "LayerNorm" in n for n in names)
        return np.full(np.shape(leaf), float(on), np.float32)

    return jax.tree_util.tree_map_with_path(keep, params)


def evals_per_step(arm: str, num_directions: int) -> int:
    """Loss evaluations one step of ``arm`` spends.

    Args:
        arm: an arm of ``ARMS`` other than zero_shot.
        num_directions: the profile's K.

    Returns:
        1 (backprop), the recipe's fixed ``num_directions`` (MeZO) or K.
    """
    r = recipes.get(f"lm_finetune/{arm}")
    if r.library == "optax":
        return 1
    return int(r.fixed.get("num_directions", num_directions))


def why_not(arm: str, n_params: int, num_directions: int) -> str:
    """Why ``arm`` cannot run at d = ``n_params`` ("" when it can).

    Args:
        arm: the arm.
        n_params: d.
        num_directions: K (an evosax population).

    Returns:
        The reason.
    """
    if arm == "zero_shot":
        return ""
    r = recipes.get(f"lm_finetune/{arm}")
    if r.max_params is not None and n_params > r.max_params:
        return f"d = {n_params} > {r.max_params}: {r.why_limited}"
    population = num_directions * n_params * 4
    if r.library == "evosax" and population > MAX_POPULATION_BYTES:
        return (f"population {num_directions} x {n_params} float32 = {population / 2**30:.2f}"
                f" GiB > {MAX_POPULATION_BYTES / 2**30:.0f} GiB (MAX_POPULATION_BYTES)")
    return ""


def _method(s: Setup, arm: str, hparams: Mapping[str, Any], k: int, params: Any):
    r = recipes.get(f"lm_finetune/{arm}")
    problem = {} if "num_directions" in r.fixed or r.library == "optax" else {
        "num_directions": k}
    mask = head_and_norm_mask(params) if arm == "zo_lora" else None
    return recipes.build(r, s.loss, hparams, mask=mask, problem=problem)


def _to_target(curve, target: float) -> tuple[float, float]:
    hit = curve[curve["val_bits_per_char"] <= target]
    if hit.empty:
        return math.inf, math.inf
    return float(hit["evals"].iloc[0]), float(hit["elapsed_s"].iloc[0])


def run(profile: str, arm: str, hparams: Mapping[str, Any], seed: int, split: str,
        tuning_run: bool) -> tuple[dict[str, Any], Any, train.TrainResult]:
    """One fine-tuning run of ``arm`` over the profile's budget.

    Args:
        profile: "quick" or "full".
        arm: a training arm.
        hparams: settings from its space.
        seed: init (zo_scratch), minibatch and noise seed.
        split: the split fit scores ("val"; "test" for a final's test curve).
        tuning_run: train on :func:`tuning_view` (no test windows).

    Returns:
        ``(row, history, fit result)``.
    """
    p, s = PROFILE[check_profile(profile)], setup(profile)
    k = p["num_directions"]
    params = (s.net.init(jax.random.key(seed)) if arm == "zo_scratch"
              else s.pretrained.params)
    method = _method(s, arm, hparams, k, params)
    per = evals_per_step(arm, k)
    steps = p["budget_evals"] // per
    if steps < 1:
        raise ValueError(f"budget_evals={p['budget_evals']} is less than one step of {arm} "
                         f"({per} evaluations)")
    task = tuning_view(s.task) if tuning_run else s.task
    r = train.fit(method, params, task, apply=s.apply, steps=steps, batch_size=p["batch_size"],
                  eval_every=max(1, p["eval_evals"] // per), seed=seed, eval_split=split)
    h = r.history
    recipe = recipes.get(f"lm_finetune/{arm}")
    row = {"arm": arm, "library": recipe.library, "recipe": recipe.name,
           "hparams": recipes.hparams_json({**recipe.fixed, **recipe.defaults, **hparams}),
           "evals_per_step": per, "steps": int(h["step"].iloc[-1]),
           "elapsed_s": float(h["elapsed_s"].iloc[-1]), "compile_s": float(r.compile_s),
           "skipped_steps": int(r.skipped),
           "init": "random" if arm == "zo_scratch" else "pretrained"}
    row["step_mean_s"] = row["elapsed_s"] / max(row["steps"], 1)
    return row, h, r


def _base(profile: str, arm: str, seed: int) -> dict[str, Any]:
    p, s = PROFILE[profile], setup(profile)
    return {"arm": arm, "seed": seed, "budget_evals": p["budget_evals"], "profile": profile,
            "model": f"{p['model'][0]} {p['model'][1]}", "n_params": s.n_params,
            "batch_size": p["batch_size"], "seq_len": s.task.seq_len,
            "num_directions": p["num_directions"], "pretrain_cache": s.pretrained.cache,
            "zero_shot_val_bpc": s.zero_shot["val"], "zero_shot_test_bpc": s.zero_shot["test"],
            "target_bpc": s.zero_shot["val"] - p["target_drop"]}


def _trial(profile: str, arm: str, index: int, hparams: Mapping[str, Any],
           seeds: list[int], n_trials: int) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        row, h, _ = run(profile, arm, hparams, seed, "val", tuning_run=True)
        final = float(h["val_bits_per_char"].iloc[-1])
        rows.append({**_base(profile, arm, seed), **row, "trial": index, "n_trials": n_trials,
                     "final_val_bpc": final, "best_val_bpc": float(h["val_bits_per_char"].min()),
                     "selected": False})
    score = float(np.median([r["final_val_bpc"] for r in rows]))
    return [r | {"score": score if math.isfinite(score) else math.inf} for r in rows]


def _memory(profile: str, arm: str, hparams: Mapping[str, Any]) -> dict[str, float]:
    """Compiled memory of one step of ``arm`` and of inference on B sequences."""
    p, s = PROFILE[profile], setup(profile)
    x, y = s.task.x_train[:p["batch_size"]], s.task.y_train[:p["batch_size"]]
    params = s.pretrained.params
    m = _method(s, arm, hparams, p["num_directions"], params)
    step, _ = timing.aot(m.step, m.init(params), jax.random.key(0), x, y)
    inference, _ = timing.aot(s.net.apply, params, x)
    mem, ref = timing.mem_bytes(step), timing.mem_bytes(inference)
    return {"mem_bytes": mem, "inference_mem_bytes": ref, "mem_ratio": mem / ref}


def _curve(key: dict[str, Any], h, split: str) -> list[dict[str, Any]]:
    return [{**key, "split": split, "evals": float(e), "step": int(st), "elapsed_s": float(t),
             "bits_per_char": float(v)} for e, st, t, v in zip(
        h["evals"], h["step"], h["elapsed_s"], h[f"{split}_bits_per_char"], strict=True)]


def _final(profile: str, arm: str, index: int, hparams: Mapping[str, Any], seed: int,
           n_trials: int, memory: dict[str, float]) -> dict[str, list[dict[str, Any]]]:
    p, s = PROFILE[profile], setup(profile)
    row, h, r = run(profile, arm, hparams, seed, "val", tuning_run=False)
    base = _base(profile, arm, seed)
    evals_to, secs_to = _to_target(h, base["target_bpc"])
    test = s.bits(r.state.params, "test")
    key = {"arm": arm, "seed": seed, "budget_evals": p["budget_evals"],
           "library": row["library"]}
    curves = _curve(key, h, "val")
    if p["test_curves"]:
        _, h_test, _ = run(profile, arm, hparams, seed, "test", tuning_run=False)
        curves += _curve(key, h_test, "test")
    out = {**base, **row, **memory, "trial": index, "n_trials": n_trials, "fits": True,
           "reason": "", "final_val_bpc": float(h["val_bits_per_char"].iloc[-1]),
           "best_val_bpc": float(h["val_bits_per_char"].min()), "final_test_bpc": test,
           "reached": math.isfinite(secs_to), "evals_to_target": evals_to,
           "time_to_target_s": secs_to, "test_curve": bool(p["test_curves"])}
    return {"lm_finetune": [out], "lm_finetune_curves": curves}


def _untrained(profile: str, arm: str, reason: str) -> dict[str, list[dict[str, Any]]]:
    """Rows of zero_shot (the pretrained params, no update) or of an arm that cannot run."""
    p, s = PROFILE[profile], setup(profile)
    rows, curves = [], []
    fits = not reason
    for seed in p["seeds"]:
        base = _base(profile, arm, seed)
        zs = s.zero_shot if fits else {"val": math.nan, "test": math.nan}
        reached = fits and zs["val"] <= base["target_bpc"]
        rows.append({**base, "library": "" if fits else recipes.get(
            f"lm_finetune/{arm}").library, "recipe": "", "hparams": "{}", "evals_per_step": 0,
            "steps": 0, "elapsed_s": 0.0, "compile_s": 0.0, "skipped_steps": 0,
            "step_mean_s": math.nan, "init": "pretrained", "trial": -1, "n_trials": 0,
            "fits": fits, "reason": reason, "final_val_bpc": zs["val"],
            "best_val_bpc": zs["val"], "final_test_bpc": zs["test"], "reached": reached,
            "evals_to_target": 0.0 if reached else math.inf,
            "time_to_target_s": 0.0 if reached else math.inf, "test_curve": fits,
            "mem_bytes": math.nan, "inference_mem_bytes": math.nan, "mem_ratio": math.nan})
        if fits:
            key = {"arm": arm, "seed": seed, "budget_evals": p["budget_evals"], "library": ""}
            curves += [{**key, "split": split, "evals": 0.0, "step": 0, "elapsed_s": 0.0,
                        "bits_per_char": zs[split]} for split in ("val", "test")]
    return {"lm_finetune_tuning": [], "lm_finetune": rows, "lm_finetune_curves": curves}


def arm_rows(profile: str, arm: str) -> dict[str, list[dict[str, Any]]]:
    """The whole protocol for one arm under ``profile`` (module docstring).

    Args:
        profile: "quick" or "full".
        arm: one of ``ARMS``.

    Returns:
        ``{"lm_finetune_tuning": rows, "lm_finetune": rows, "lm_finetune_curves": rows}``.
    """
    p = PROFILE[check_profile(profile)]
    check_choice(arm, "arm", ARMS)
    s = setup(profile)
    if arm == "zero_shot":
        return _untrained(profile, arm, "")
    why = why_not(arm, s.n_params, p["num_directions"])
    if why:
        return _untrained(profile, arm, why)
    n = p["trials"]
    memory: dict[str, dict[str, float]] = {}

    def final(index: int, hp: dict[str, Any], seed: int):
        if "m" not in memory:
            memory["m"] = _memory(profile, arm, hp)
        return _final(profile, arm, index, hp, seed, n, memory["m"])

    with shared_compiles():  # the finals load the selected trial's programs
        tuned = tuning.tune(f"lm_finetune/{arm}", n,
                            lambda i, hp, seeds: _trial(profile, arm, i, hp, seeds, n),
                            lambda rows: (rows[0]["score"],), final, p["seeds"])
    trials = [r | {"selected": r["trial"] == tuned.selected} for g in tuned.trials for r in g]
    return {"lm_finetune_tuning": trials,
            "lm_finetune": [r for f in tuned.finals for r in f["lm_finetune"]],
            "lm_finetune_curves": [r for f in tuned.finals for r in f["lm_finetune_curves"]]}


def jobs(profile: str) -> Iterator[Job]:
    """One job per arm of ``profile`` (it writes a row per final seed).

    Args:
        profile: "quick" or "full".

    Yields:
        The jobs.
    """
    p = PROFILE[check_profile(profile)]
    for arm in p["arms"]:
        key = {"arm": arm, "seed": p["seeds"][-1], "budget_evals": p["budget_evals"]}
        runs = 0 if arm == "zero_shot" else p["trials"] + len(p["seeds"])
        yield Job(key, functools.partial(arm_rows, profile, arm), f"lm_finetune/{arm}",
                  RUN_COST[profile] * max(runs, 1))
