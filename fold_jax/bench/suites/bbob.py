"""BBOB: the 24 noiseless functions of COCO's ``bbob`` suite, direct search and
zeroth-order descent beside evosax's strategies and the reference CMA-ES (``cma``).

Functions come from ``cocoex`` (PyPI ``coco-experiment``), COCO's own C implementation
(offline: the C code ships inside the package). It was picked over ``bbobax`` (a JAX
re-implementation that draws its own instances from JAX keys, f_opt 0 by default) and
evosax's problems for fidelity: every evaluation runs the reference code on COCO's
instances, ``f_opt`` comes from it (``BareProblem.best_value``), and its ``Observer``
writes COCO's own data format, which ``cocopp`` post-processes. Wheels: CPython 3.11
x86-64 (2.8.2; 2.8.3+ need Python >= 3.12); PyPI has no aarch64 Linux wheel, so there
pip builds the sdist (meson-python + Cython: needs a C compiler).

One row per function x dimension x instance x method x run (``results/bbob.csv``):
``function``, ``function_name``, ``group`` (cocopp's five), ``dim``, ``instance``,
``run``, ``method``, ``library`` (fold_jax / evosax / cma), ``budget`` (evaluations:
``budget_multiplier x dim``), ``evals_used`` (the method's own count until it stopped:
the sum of ``info["evals"]`` over its steps, or pycma's ``countevals``; the last step
may pass the budget by less than one step), ``evals_counted`` (evaluations of the COCO
function, at most ``budget``), ``best_precision`` (the best ``f - f_opt`` among them),
``f_opt``, ``evals_to_<target>`` for COCO's precision targets 1e1, 1e-1, 1e-3, 1e-5,
1e-8 (the evaluation, counted from 1, at which ``f - f_opt <= target`` first held; inf
when it never did within the budget), ``seconds`` (wall time per run, compile
excluded: the runs of a method and dimension run together, so it is the batch's time /
``batch_runs``), ``compile_s``, ``steps``, ``stopped`` (budget / final_target / pycma's
termination), ``population_size``, ``seed``.

How a run goes:

- Start point: uniform in [-4, 4]^d (COCO's region of interest, where ``x_opt`` lies),
  drawn from ``seed`` (a function of function, dim, instance and run), the same for
  every method. ``problem.initial_solution`` (the origin) would start every run of an
  instance at one point; COCO's instances are its repetitions (one run per instance;
  ``runs`` > 1 is an option).
- The loss the methods see is ``f(x) - f_opt``, computed in float64 by COCO's C code
  and handed to JAX as float32 (comparison-based methods are invariant to the shift,
  gradient estimates unchanged by it, and float32 keeps its relative precision near the
  optimum) through ``jax.pure_callback``. Runs are vmapped: every run of a method and
  dimension is one lane of one jitted ``lax.scan`` of ``CHUNK`` steps, and each lane's
  loss takes its own int32 problem slot (``loss(params, slot)``, ``step(state, key,
  slot)``), bound on the host to the run's :class:`Tracker` (:func:`bound`). So a
  method compiles once per dimension, and one host callback a step serves all runs.
- Every evaluation goes through the run's tracker, which counts it, keeps the best and
  the first evaluation reaching each target (COCO's runtimes, whatever a method
  reports), and refuses evaluations past the budget or after the final target 1e-8
  (COCO stops there; the answer is inf and is not counted). A lane steps while its
  ``evals_used < budget`` and stops at the final target (checked between chunks; its
  ``evals_used`` and ``steps`` are read at the step that reached it).
- Re-evaluating the point a comparison-based method keeps (the first of the lowest
  float32 losses, bit for bit) is answered from memory and not counted: BBOB is
  deterministic, and fold_jax's direct search runs with
  ``acceptance="fixed_set"`` (its rule for exact losses: the current point's loss is
  kept, so a step spends K evaluations, K + 1 on the first), whose "is the current
  loss known" branch a vmapped ``lax.cond`` computes for every lane.
- fold_jax's and evosax's methods keep float32 parameters: on ill-conditioned
  functions (f2, f10, f11, f12: condition 1e6) a float32 step near ``x_opt`` can be too
  coarse for 1e-8; pycma works in float64. pycma runs its own ask/tell loop per run,
  ``maxfevals = budget`` and its default termination criteria, no restarts.
- Settings are one per method for the whole suite (COCO's rule: no tuning per
  function), each method the recipe ``bbob/<method>`` of :mod:`fold_jax.learn.recipes`
  (defined in ``fold_jax/learn/suite_recipes.py``); initial step sizes are about a
  quarter of the domain [-5, 5]:
  ``one_plus_one`` sigma 2; ``gld`` radii 4 down to 1e-5 (20 candidates a step);
  ``rso`` max(1, d/2) coordinate pairs, sigma 0.5 (fixed scales, as in the paper);
  ``zo_adam``: fold_jax's antithetic gaussian estimator (lambda directions, sigma 1e-2)
  with Adam, learning rate cosine-decayed from 0.1 to 1e-4 over the budget;
  ``evosax_open_es``: the same decayed Adam, std cosine-decayed from 1 to 1e-3;
  ``evosax_snes``, ``evosax_cma_es`` (``eval_mean=False``: no extra evaluation of the
  mean) and ``pycma_cma_es``: initial std 2. Population sizes are CMA-ES's default
  lambda = 4 + floor(3 ln d), made even.

COCO's data: after a job, each run is replayed through COCO's ``bbob`` observer (it
observes one problem at a time, so not during the vmapped runs): the run's evaluation
count, with each point that set a new best at COCO's target-trigger resolution (100 per
decade) evaluated at its own evaluation number and the best point so far in between,
so the best-so-far record at every target trigger is the run's. The other files' (per
evaluation) f column shows that best point's value. One observer per method and
benchmark run writes ``$FOLD_JAX_BBOB_COCO_DIR`` (default ``results/bbob_coco``)
``/<run_id>/<method>/``; ``python -m cocopp results/bbob_coco/<run_id>/*`` reads it. A
resumed run opens ``<method>_001`` for the jobs it reruns. ``FOLD_JAX_BBOB_COCO_DIR=off``
skips it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from fold_jax import results
from fold_jax.bench.bbob_problems import (
    COCO_DIR_DEFAULT,
    COCO_DIR_ENV,
    START_HIGH,
    START_LOW,
    TRIGGERS_PER_DECADE,
    Problem,
    Tracker,
    bare_problem,
    bbob_loss,
    bound,
    coco_dir,
    coco_observer,
    f_opt,
    new_slot,
    new_tracker,
    replay,
    seed_of,
    start_point,
)
from fold_jax.bench.common import Job, check_profile
from fold_jax.checks import check_choice
from fold_jax.learn import recipes, suite_recipes
from fold_jax.report.bbob import FUNCTIONS, TARGETS, group_of, target_column

# the problems (fold_jax.bench.bbob_problems) stay importable from here
__all__ = ["CHUNK", "COCO_DIR_DEFAULT", "COCO_DIR_ENV", "COMPILE_S", "COST_PER_EVAL_S", "FILE",
           "KEY", "METHODS", "PROFILE", "SIGMA0", "START_HIGH", "START_LOW",
           "TRIGGERS_PER_DECADE", "Problem", "Runner", "Spec", "Tracker", "bare_problem",
           "bbob_loss", "bound", "build", "coco_dir", "f_opt", "jobs", "new_slot", "new_tracker",
           "population_size", "replay", "run_batch", "run_one", "runner", "seed_of",
           "start_point"]

FILE = "bbob"
KEY = ["function", "dim", "instance", "run", "method", "budget", *results.MACHINE_KEY]

CHUNK = 32  # steps per jitted lax.scan call (the final target is checked between chunks)
SIGMA0 = suite_recipes.BBOB_SIGMA0  # initial step size of the adaptive methods (domain [-5, 5])
# quick keeps the whole suite within about 2 minutes on a 2-core CPU; full is COCO's
# standard experiment (all its dimensions, 15 instances) at 1000 x dim evaluations.
PROFILE: dict[str, dict[str, Any]] = {
    "quick": {"dims": [2, 10], "instances": [1, 2, 3], "runs": 1, "budget_multiplier": 100},
    "full": {"dims": [2, 3, 5, 10, 20, 40], "instances": list(range(1, 16)), "runs": 1,
             "budget_multiplier": 1000},
}
# job cost estimate (seconds, 2-core CPU): a compile plus this much per evaluation
COMPILE_S, COST_PER_EVAL_S = 4.0, 2e-6


def population_size(dim: int) -> int:
    """CMA-ES's default population size 4 + floor(3 ln d), rounded up to even (the
    mirrored-sampling estimators need pairs).

    Args:
        dim: search-space dimension.

    Returns:
        The population size (evaluations a step) of every population method.
    """
    lam = 4 + math.floor(3 * math.log(dim))
    return lam + lam % 2


# ----------------------------------------------------------------------- methods


class Spec(NamedTuple):
    """A benchmarked method: its recipe ``bbob/<name>`` in :mod:`fold_jax.learn.recipes`
    (settings and builder), its library, whether it runs its own loop (pycma) and the
    module it imports (missing: its jobs are skipped)."""

    recipe: str
    library: str
    own_loop: bool
    needs: str


_NEEDS = {"pycma_cma_es": "cma", "zo_adam": "fold_jax.methods"}  # others: by library


def _spec(name: str) -> Spec:
    recipe = recipes.get(name)
    short = name.removeprefix("bbob/")
    needs = _NEEDS.get(short, {"evosax": "fold_jax.peers"}.get(recipe.library,
                                                                "fold_jax.search"))
    return Spec(name, recipe.library, recipe.library == "cma", needs)


# the suite's methods: the registry's bbob recipes (fold_jax.learn.suite_recipes), by short name
METHODS: dict[str, Spec] = {n.removeprefix("bbob/"): _spec(n)
                            for n in recipes.names(suite="bbob")}


def build(name: str, loss: Callable, slot: Any, dim: int, budget: int):
    """Method ``name`` (a key of ``METHODS`` that runs in JAX) on ``loss`` for one
    problem: its recipe built with the problem's dimension, budget, slot and the
    population size of every population method (:func:`population_size`).

    Args:
        name: the method.
        loss: ``loss(params, slot) -> scalar``.
        slot: the run's problem slot (int32; direct search decides on it).
        dim: dimension.
        budget: evaluations (schedules decay over it).

    Returns:
        The :class:`fold_jax.estimators.methods.Method`.
    """
    return recipes.build(METHODS[name].recipe, loss, problem={
        "slot": slot, "dim": dim, "budget": budget, "population_size": population_size(dim)})


def _select(active, new, old):
    """``new`` where ``active`` else ``old``, leaf by leaf, in ``old``'s dtypes."""
    import jax
    import jax.numpy as jnp

    def pick(n, o):
        return jax.lax.convert_element_type(jnp.where(active, n, o), jnp.result_type(o))

    return jax.tree.map(pick, new, old)


class Runner(NamedTuple):
    """A method compiled for one dimension, budget and number of runs (lanes)."""

    init: Callable  # params -> state (one run)
    chunk: Callable  # (states, keys, spent, steps, limits, slots) -> (carry, history)
    compile_s: float


_RUNNERS: dict[tuple[str, int, int, int], Runner] = {}


def runner(name: str, dim: int, budget: int, lanes: int) -> Runner:
    """Method ``name``'s jitted chunk of ``CHUNK`` steps over ``lanes`` vmapped runs
    (cached): a lane steps while its ``spent < limit``.

    Args:
        name: a key of ``METHODS`` that is not ``own_loop``.
        dim: dimension.
        budget: evaluations (schedules that decay over the budget depend on it).
        lanes: runs batched together.

    Returns:
        The :class:`Runner`; ``chunk`` returns the new ``(states, keys, spent, steps)``
        and per lane and step the cumulative ``(spent, steps)``, shaped ``(lanes, CHUNK)``.
    """
    import jax
    import jax.numpy as jnp

    cache_key = (name, dim, budget, lanes)
    if cache_key in _RUNNERS:
        return _RUNNERS[cache_key]
    init = build(name, bbob_loss, jnp.int32(0), dim, budget).init

    def lane(state, key, spent, steps, limit, slot):
        method = build(name, bbob_loss, slot, dim, budget)  # fixed_set decides on this slot

        def body(carry, _):
            state, key, spent, steps = carry
            key, sub = jax.random.split(key)
            active = spent < limit
            new, info = method.step(state, sub, slot)
            evals = jnp.where(active, jnp.asarray(info["evals"], jnp.int32), 0)
            carry = (_select(active, new, state), key, spent + evals,
                     steps + active.astype(jnp.int32))
            return carry, (carry[2], carry[3])

        return jax.lax.scan(body, (state, key, spent, steps), None, length=CHUNK)

    states = _stack([init({"x": jnp.zeros(dim, jnp.float32)})] * lanes)
    zeros = jnp.zeros(lanes, jnp.int32)
    keys = jax.random.split(jax.random.key(0), lanes)
    t0 = time.perf_counter()
    compiled = jax.jit(jax.vmap(lane)).lower(states, keys, zeros, zeros, zeros + budget,
                                             zeros).compile()
    built = Runner(init, compiled, time.perf_counter() - t0)
    _RUNNERS[cache_key] = built
    return built


def _stack(trees: Sequence[Any]) -> Any:
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _run_jax(name: str, trackers: Sequence[Tracker], x0s: np.ndarray, seeds: Sequence[int]
             ) -> list[dict[str, Any]]:
    """All runs of a fold_jax / evosax method at one dimension, vmapped, until each has
    spent its budget or reached the final target."""
    import jax
    import jax.numpy as jnp

    lanes, dim = x0s.shape
    budget = trackers[0].budget
    r = runner(name, dim, budget, lanes)
    slots = [new_slot() for _ in range(lanes)]
    states = _stack([r.init({"x": jnp.asarray(x, jnp.float32)}) for x in x0s])
    carry = (states, jnp.stack([jax.random.key(s) for s in seeds]),
             jnp.zeros(lanes, jnp.int32), jnp.zeros(lanes, jnp.int32))
    used = [None] * lanes  # (evals_used, steps) of lanes stopped at the final target
    limits = np.full(lanes, budget, np.int32)
    with contextlib.ExitStack() as stack:
        for slot, tracker in zip(slots, trackers, strict=True):
            stack.enter_context(bound(slot, tracker))
        slot_arg = jnp.asarray(slots, jnp.int32)
        t0 = time.perf_counter()
        for _ in range(budget // CHUNK + 2):  # every step spends >= 1 evaluation
            carry, (spent_hist, steps_hist) = r.chunk(*carry, jnp.asarray(limits), slot_arg)
            spent_hist, steps_hist = np.asarray(spent_hist), np.asarray(steps_hist)
            for i, tracker in enumerate(trackers):
                if used[i] is None and tracker.solved:  # the step holding the hit
                    j = int(np.argmax(spent_hist[i] >= tracker.hits[-1]))
                    used[i] = (int(spent_hist[i, j]), int(steps_hist[i, j]))
                    limits[i] = 0
            if all(u is not None or s >= budget for u, s in zip(used, spent_hist[:, -1],
                                                                  strict=True)):
                break
        seconds = (time.perf_counter() - t0) / lanes
    spent, steps = np.asarray(carry[2]), np.asarray(carry[3])
    out = []
    for i in range(lanes):
        evals, n_steps = used[i] or (int(spent[i]), int(steps[i]))
        out.append({"evals_used": evals, "steps": n_steps, "seconds": seconds,
                    "compile_s": r.compile_s, "batch_runs": lanes,
                    "stopped": "final_target" if used[i] else "budget"})
    return out


def _run_pycma(tracker: Tracker, x0: np.ndarray, seed: int) -> dict[str, Any]:
    """pycma's CMA-ES ask/tell loop (its default settings, ``maxfevals = budget``)."""
    import cma

    es = cma.CMAEvolutionStrategy(list(x0), SIGMA0, {
        "seed": seed + 1, "maxfevals": tracker.budget, "popsize": population_size(len(x0)),
        "verbose": -9, "verb_log": 0, "verb_disp": 0})
    steps = 0
    t0 = time.perf_counter()
    while not es.stop() and not tracker.solved:
        xs = es.ask()
        es.tell(xs, [tracker.evaluate(x) for x in xs])
        steps += 1
    seconds = time.perf_counter() - t0
    reasons = list(es.stop())
    stopped = "final_target" if tracker.solved else (
        "budget" if "maxfevals" in reasons else ",".join(reasons) or "unknown")
    return {"evals_used": int(es.countevals), "steps": steps, "seconds": seconds,
            "compile_s": 0.0, "batch_runs": 1, "stopped": stopped}


# ------------------------------------------------------------------------- runs


def run_batch(method: str, dim: int, problems: Sequence[Problem], *,
              budget_multiplier: int = PROFILE["quick"]["budget_multiplier"]
              ) -> list[dict[str, Any]]:
    """Runs of ``method`` on ``problems`` at dimension ``dim`` (vmapped together unless
    the method is pycma), then their COCO data when it is on.

    Args:
        method: a key of ``METHODS``.
        dim: dimension (one of COCO's 2, 3, 5, 10, 20, 40).
        problems: the (function 1-24, instance, run) to make.
        budget_multiplier: the budget is ``budget_multiplier * dim`` evaluations.

    Returns:
        One ``results/bbob.csv`` row per problem (module docstring).
    """
    check_choice(method, "method", METHODS)
    bad = [p.function for p in problems if p.function not in FUNCTIONS]
    if bad or not problems:
        raise ValueError(f"problems must be a non-empty list of bbob functions 1-24: {bad}")
    budget = int(budget_multiplier * dim)
    seeds = [seed_of(p.function, dim, p.instance, p.run) for p in problems]
    x0s = np.stack([start_point(s, dim) for s in seeds])
    trackers = [new_tracker(p.function, dim, p.instance, budget) for p in problems]
    if METHODS[method].own_loop:
        outs = [_run_pycma(t, x, s) for t, x, s in zip(trackers, x0s, seeds, strict=True)]
    else:
        outs = _run_jax(method, trackers, x0s, seeds)
    observer = coco_observer(method)
    if observer is not None:
        for p, t in zip(problems, trackers, strict=True):
            replay(t, p.function, dim, p.instance, observer)
    rows = []
    for p, t, out, seed in zip(problems, trackers, outs, seeds, strict=True):
        rows.append({
            "function": p.function, "function_name": FUNCTIONS[p.function],
            "group": group_of(p.function), "dim": dim, "instance": p.instance, "run": p.run,
            "method": method, "library": METHODS[method].library,
            "budget_multiplier": budget_multiplier, "budget": budget,
            "evals_used": out["evals_used"], "evals_counted": t.count,
            "best_precision": t.best, "f_opt": t.f_opt,
            **{target_column(g): h for g, h in zip(TARGETS, t.hits, strict=True)},
            "seconds": out["seconds"], "compile_s": out["compile_s"],
            "batch_runs": out["batch_runs"], "steps": out["steps"], "stopped": out["stopped"],
            "population_size": population_size(dim),
            "start": f"uniform[{START_LOW:g},{START_HIGH:g}]^d", "seed": seed})
    return rows


def run_one(method: str, function: int, dim: int, instance: int, run: int = 0, *,
            budget_multiplier: int = PROFILE["quick"]["budget_multiplier"]) -> dict[str, Any]:
    """One run of ``method`` on one bbob problem: :func:`run_batch`'s row.

    Args:
        method: a name of ``METHODS``.
        function: bbob function 1-24.
        dim: dimension.
        instance: COCO instance.
        run: the run's index (its seed).
        budget_multiplier: evaluations allowed per dimension.

    Returns:
        The bbob.csv row.
    """
    return run_batch(method, dim, [Problem(function, instance, run)],
                     budget_multiplier=budget_multiplier)[0]


def _available(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def jobs(profile: str) -> Iterator[Job]:
    """One job per method x dimension: all 24 functions x instances x runs, vmapped;
    methods whose module is missing are skipped, saying so.

    Args:
        profile: quick or full.

    Returns:
        An iterator of :class:`fold_jax.bench.common.Job`.
    """
    p = PROFILE[check_profile(profile)]
    if not _available("cocoex"):
        print("bbob: skipping every job: cocoex is missing (pip install "
              "'coco-experiment>=2.8.2')")
        return
    missing = sorted({s.needs for s in METHODS.values() if not _available(s.needs)})
    if missing:
        print(f"bbob: skipping the methods that need the missing modules {missing}")
    problems = [Problem(f, i, r) for f in FUNCTIONS for i in p["instances"]
                for r in range(p["runs"])]
    for name, spec in METHODS.items():
        if spec.needs in missing:
            continue
        for dim in p["dims"]:
            budget = p["budget_multiplier"] * dim
            cost = COMPILE_S + len(problems) * budget * COST_PER_EVAL_S * (
                50 if spec.own_loop else 1)  # pycma: Python per generation
            key = {"function": problems[0].function, "dim": dim,
                   "instance": problems[0].instance, "run": 0, "method": name,
                   "budget": budget}
            yield Job(key, lambda a=(name, dim, problems, p["budget_multiplier"]): run_batch(
                a[0], a[1], a[2], budget_multiplier=a[3]), label=f"bbob/{name}/d{dim}",
                cost=cost)
