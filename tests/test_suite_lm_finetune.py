"""The LM fine-tuning suite (fold_jax.bench.suites.lm_finetune) and its report section."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fold_jax import results
from fold_jax.bench import run as bench_run
from fold_jax.bench.suites import lm_finetune as suite
from fold_jax.learn import recipes, text, train
from fold_jax.report import lm_finetune as report

ARMS = ("zero_shot", "adam_finetune", "mezo_sgd", "mezo_sgd2", "es_lowrank", "zo_adam",
        "snes_lowrank", "evosax_open_es", "evosax_snes", "evosax_cma_es", "zo_lora",
        "zo_scratch")
TINY = {"model": ("gru", {"embed": 8, "hidden": 16}),
        "pretrain": {"steps": 10, "batch_size": 8, "T": 16, "max_chars": 20_000},
        "finetune_chars": 20_000, "batch_size": 4, "budget_evals": 8, "eval_evals": 4,
        "num_directions": 4, "trials": 1, "seeds": (0, 1), "target_drop": 0.1,
        "test_curves": False}


def test_arms_are_named_and_registered():
    assert suite.ARMS == ARMS
    for arm in ARMS[1:]:
        r = recipes.get(f"lm_finetune/{arm}")
        assert r.suite == "lm_finetune" and r.space, arm  # every trained arm is tuned
    assert set(recipes.names(suite="lm_finetune")) == {f"lm_finetune/{a}" for a in ARMS[1:]}
    assert suite.PROFILE["full"]["arms"] == ARMS
    quick = suite.PROFILE["quick"]["arms"]
    assert {"zero_shot", "adam_finetune", "mezo_sgd", "es_lowrank", "zo_scratch"} <= set(quick)
    assert "quick" in suite.DEFAULT_PROFILES and "full" in suite.DEFAULT_PROFILES


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_every_arm_gets_the_same_budget_trials_and_seeds(profile):
    """One tuning budget, one evaluation budget and >= 3 final seeds for every arm; a
    step's evaluations: Adam 1, MeZO 2 (one SPSA pair) or 4, the ES arms K."""
    p = suite.PROFILE[profile]
    jobs = list(suite.jobs(profile))
    assert [j.label.split("/")[1] for j in jobs] == list(p["arms"])
    assert {j.key["budget_evals"] for j in jobs} == {p["budget_evals"]}
    assert len(p["seeds"]) >= 3 and p["trials"] >= 2
    k = p["num_directions"]
    per = {a: suite.evals_per_step(a, k) for a in ARMS[1:]}
    assert per["adam_finetune"] == 1 and per["mezo_sgd"] == 2 and per["mezo_sgd2"] == 4
    assert all(per[a] == k for a in ("es_lowrank", "zo_adam", "snes_lowrank",
                                     "evosax_open_es", "zo_lora", "zo_scratch"))
    for arm, e in per.items():  # whole steps within the budget, losing less than a step
        assert p["budget_evals"] - e < (p["budget_evals"] // e) * e <= p["budget_evals"], arm
    # MeZO's arms keep their own pairs: K is not passed to a recipe that fixes them
    assert recipes.get("lm_finetune/mezo_sgd").fixed["noise"] == "rademacher"


def test_an_arm_that_cannot_hold_d_says_why():
    assert "CMA_MAX_DIMS" in suite.why_not("evosax_cma_es", 10_000, 16)
    assert suite.why_not("evosax_cma_es", 1_000, 16) == ""
    assert "MAX_POPULATION_BYTES" in suite.why_not("evosax_open_es", 2 ** 28, 16)
    assert suite.why_not("es_lowrank", 2 ** 28, 16) == ""  # nothing materialized per K


def test_head_and_norm_mask_marks_only_head_and_layernorms():
    import jax

    from fold_jax.learn import nets

    # the mask reads names and shapes only: the params' shapes, traced, not initialized
    # (an eager init compiled one program per initializer and shape, ~3 s)
    params = jax.eval_shape(nets.transformer_lm(85, "tiny").init, jax.random.key(0))
    mask = suite.head_and_norm_mask(params)
    assert jax.tree.map(np.shape, mask) == jax.tree.map(np.shape, params)
    for path, leaf in jax.tree_util.tree_leaves_with_path(mask):
        names = jax.tree_util.keystr(path)
        want = "'head'" in names or "'ln_" in names
        assert np.all(leaf == float(want)), names


def test_unknown_arm_and_profile_are_refused():
    with pytest.raises(ValueError, match="arm"):
        suite.arm_rows("quick", "sgd")
    with pytest.raises(ValueError, match="profile"):
        list(suite.jobs("medium"))


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    monkeypatch.setenv("FOLD_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(suite.PROFILE, "quick", {**suite.PROFILE["quick"], **TINY,
                                                 "arms": ("zero_shot", "mezo_sgd")})
    suite.setup.cache_clear()
    yield suite.PROFILE["quick"]
    suite.setup.cache_clear()


def _check_schema(name: str, rows: list[dict]) -> None:
    schema = results.schema(name)
    for r in rows:
        assert not results.undescribed(name, r), (name, results.undescribed(name, r))
        for c in schema.columns:
            assert not c.core or c.name in r, (name, c.name)


def test_end_to_end_protocol_schema_and_resume(tiny, monkeypatch, tmp_path):
    """Tiny quick profile: zero_shot does no update; the tuning trial trains on a task
    with no test windows and nothing reads test until the finals; rows fit their schemas;
    a job whose rows the run wrote is not run again."""
    events: list[tuple] = []
    fit, setup = train.fit, suite.setup("quick")  # pretraining (it fits), zero-shot scores
    zs, bits = setup.zero_shot, setup.bits

    def spy_fit(method, params, task, **kw):
        events.append(("fit", kw["eval_split"], task.x_test is task.x_val))
        return fit(method, params, task, **kw)

    def spy_bits(params, split):
        events.append(("evaluate", split))
        return bits(params, split)

    def no_evaluate(*args, **kwargs):
        raise AssertionError("the suite scores splits with Setup.bits only")

    monkeypatch.setattr(train, "fit", spy_fit)
    monkeypatch.setattr(setup, "bits", spy_bits)
    monkeypatch.setattr(text.SequenceTask, "evaluate", no_evaluate)
    zero = suite.arm_rows("quick", "zero_shot")
    assert all(r["steps"] == 0 and r["final_test_bpc"] == zs["test"]
               and r["final_val_bpc"] == zs["val"] for r in zero["lm_finetune"])
    assert not [e for e in events if e[0] == "fit"]  # zero_shot trains nothing
    events.clear()
    out = suite.arm_rows("quick", "mezo_sgd")
    fits = [i for i, e in enumerate(events) if e[0] == "fit"]
    assert len(fits) == 1 + 2  # one trial, a final per seed (two: "each", not "one")
    assert events[fits[0]] == ("fit", "val", True)  # tuning: validation, no test windows
    assert ("evaluate", "test") not in events[:fits[1]]  # test unread until the finals
    assert all(events[i] == ("fit", "val", False) for i in fits[1:])
    tune, = out["lm_finetune_tuning"]
    assert tune["selected"] and "final_test_bpc" not in tune
    for r in out["lm_finetune"]:
        assert r["steps"] == tiny["budget_evals"] // 2 and r["evals_per_step"] == 2
        assert r["reached"] == math.isfinite(r["time_to_target_s"])
        assert r["mem_ratio"] > 0 and r["skipped_steps"] == 0 and r["trial"] == 0
    curve = pd.DataFrame(out["lm_finetune_curves"])
    assert list(curve[curve["seed"] == 0]["evals"]) == [0.0, 4.0, 8.0]
    for name in ("lm_finetune", "lm_finetune_curves", "lm_finetune_tuning"):
        _check_schema(name, zero[name] + out[name])
    # into a results store through the runner: a resumed run skips the written job
    # (the process's run id is set, not read from $FOLD_JAX_RUN_ID: an earlier test in
    # this process may have fixed it already)
    previous = results.set_run_id("lmft-test")
    try:
        job = next(j for j in suite.jobs("quick") if j.label.endswith("mezo_sgd"))
        bench_run.write_rows(suite, job, out, str(tmp_path))
        todo, done = bench_run.pending(suite, "quick", str(tmp_path), None)
        assert done == 1 and [j.label for j in todo] == ["lm_finetune/zero_shot"]
        bench_run.write_rows(suite, job, out, str(tmp_path))  # a rerun of the job replaces
        frame = results.load(tmp_path, run="lmft-test")["lm_finetune"]
    finally:
        results.set_run_id(previous)
    assert len(frame) == 2  # one row per seed, the rerun replaced its rows


def _rows(arm: str, library: str, finals: list[float], test: float) -> list[dict]:
    return [{"arm": arm, "library": library, "seed": s, "fits": True, "reason": "",
             "final_val_bpc": v, "final_test_bpc": test, "profile": "quick",
             "n_params": 1000, "budget_evals": 64, "batch_size": 4, "target_bpc": 3.0,
             "zero_shot_val_bpc": 3.1, "evals_to_target": 8.0, "time_to_target_s": 1.0,
             "step_mean_s": 0.01, "mem_bytes": 1e6, "mem_ratio": 1.1}
            for s, v in enumerate(finals)]


def _curve(arm: str, seconds: list[float], levels: list[float]) -> list[dict]:
    return [{"arm": arm, "seed": s, "split": "val", "evals": float(8 * i),
             "elapsed_s": float(t * i), "bits_per_char": b}
            for s, t in enumerate(seconds) for i, b in enumerate(levels)]


@pytest.mark.parametrize("es_seconds,verdict", [([0.1, 0.1, 0.1], "met"),
                                                ([1.0, 1.0, 1.0], "missed")])
def test_goal_is_judged_from_the_rows(es_seconds, verdict, tmp_path):
    """MeZO ends at 3.0; es_lowrank passes 3.0 after its second evaluation: 2 x 0.1 s vs
    MeZO's 2 x 1 s is 10x sooner (met), 2 x 1 s vs 2 x 1 s is 1x (missed)."""
    rows = pd.DataFrame(_rows("zero_shot", "", [3.2] * 3, 3.2) + _rows(
        "adam_finetune", "optax", [2.5] * 3, 2.6) + _rows("mezo_sgd", "fold_jax", [3.0] * 3, 3.1)
        + _rows("es_lowrank", "fold_jax", [2.9] * 3, 2.9))
    curves = pd.DataFrame(_curve("mezo_sgd", [1.0] * 3, [3.2, 3.1, 3.0])
                          + _curve("es_lowrank", es_seconds, [3.2, 3.1, 2.95]))
    goal, = report.goals()
    v = report.goal_verdict(rows, curves, goal)
    assert v["verdict"] == verdict and v["arm"] == "es_lowrank" and v["level"] == 3.0
    s = report.summary(rows).set_index("arm")
    # (3.2 - 2.9) / (3.2 - 2.6) = 0.5 of Adam's gain
    assert s.loc["es_lowrank", "gain recovered"] == pytest.approx(0.5)
    frames = {"lm_finetune": rows, "lm_finetune_curves": curves}
    assert f"**{verdict}**" in report.headline(frames, tmp_path)
    assert "lm_finetune_curves.png" in report.section(frames, tmp_path)
