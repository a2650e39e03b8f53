"""The recipes of the hypotheses and BBOB suites, in :data:`fold_jax.learn.recipes.RECIPES`
(named ``"hypotheses/<method>"`` and ``"bbob/<method>"``; ``recipes.names(suite=...)``
lists them): one registry and one tuning protocol (:mod:`fold_jax.bench.tuning`) for
every suite.

- hypotheses: the essays' workloads build their methods themselves (an RNN, a sign net,
  a sampled code...); a recipe holds the method's search space, the same on every
  workload (the settings a workload does not tune stay fixed in its ``hparams``).
- bbob: COCO's rule, one setting per method for the whole suite (no space, no tuning
  per function); built on the problem's ``dim``, ``budget``, ``slot`` and
  ``population_size`` (``recipes.build(..., problem=...)``).
- lm_finetune: fine-tuning a pretrained character LM on Milton
  (:mod:`fold_jax.bench.suites.lm_finetune`): the arms' spaces and fixed settings; the
  suite passes ``num_directions`` (its profile's K) as a problem setting and, for
  ``zo_lora``, the head + LayerNorm mask.
- control: the control races (:mod:`fold_jax.bench.suites.control`): every ES at a
  population of ``CONTROL_POPULATION`` loss evaluations a step on ``task.loss(params,
  key)``, the same sigma (and, where an optimizer moves the mean, Adam step size) space
  for both libraries; PPO (rejax, through :func:`fold_jax.learn.ppo.train`) runs its own loop,
  its recipe holds its learning-rate space.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fold_jax.estimators import methods
from fold_jax.learn import recipes
from fold_jax.learn.recipes import LogUniform, Param, Recipe, midpoint

__all__ = ["BBOB_SIGMA0", "CONTROL_POPULATION", "LM_FINETUNE_ARMS", "bbob_recipes",
           "control_recipes", "hypotheses_recipes", "lm_finetune_recipes"]

_HYP_LR = LogUniform(3e-4, 3e-2)  # Adam step sizes of the backprop methods
_HYP_ZO = {"lr": LogUniform(1e-3, 3e-2), "sigma": LogUniform(1e-3, 1e-1)}  # Adam on an estimate
_HYP_GLD = {"max_radius": LogUniform(0.1, 10.0)}  # radii halve down to 1e-3
_HYP_RADIUS = {"radius": LogUniform(1e-2, 1.0)}  # the essay's fixed radius
_HYP_ONE_PLUS_ONE = {"sigma": LogUniform(1e-3, 1.0)}  # initial step (then adapted)
_HYP_BACKPROP = ("adam", "bptt", "tbptt", "ste_adam", "gumbel_annealed", "st_gumbel",
                 "reinforce", "adam_ce")


def _workload(loss, options, tx_wrap, mask):
    raise ValueError("a hypotheses recipe is built by its workload (fold_jax.bench."
                     "hypotheses_work); the recipe holds its search space")


def hypotheses_recipes() -> dict[str, Recipe]:
    """The hypotheses suite's methods: each workload builds them; their search spaces
    (the same on every workload) live here, one home for every suite's spaces.

    Returns:
        ``{"hypotheses/<method>": Recipe}``.
    """
    spaces: dict[str, dict[str, Param]] = {
        **{m: {"lr": _HYP_LR} for m in (*_HYP_BACKPROP, "forward_gradient")},
        **{m: _HYP_ZO for m in ("zo", "zo_layer_scaled", "zo_crn", "zo_metric")},
        **{m: _HYP_ONE_PLUS_ONE for m in ("one_plus_one", "one_plus_one_crn",
                                          "one_plus_one_ce", "one_plus_one_metric")},
        "rso": {"sigma": LogUniform(1e-2, 1.0)},
        "gld": _HYP_GLD, "gld_metric": _HYP_GLD,
        "relative_loss": _HYP_RADIUS, "relative_loss_metric": _HYP_RADIUS,
    }
    return {f"hypotheses/{m}": Recipe(
        f"hypotheses/{m}", "optax" if m in _HYP_BACKPROP else "fold_jax", _workload, space,
        {k: midpoint(p) for k, p in space.items()}, suite="hypotheses",
        description=f"hypotheses method {m} (built by its workload; every run is tuned)")
        for m, space in spaces.items()}


BBOB_SIGMA0 = 2.0  # BBOB: initial step size of the adaptive methods (domain [-5, 5])


def _bbob_direct(name: str):
    """A fold_jax direct search on a deterministic BBOB loss: decide on ``loss(params,
    slot)`` and keep the current point's loss (K evaluations a step, not K + 1)."""
    def make(loss, options, tx_wrap, mask):
        from fold_jax.estimators import search

        o = dict(options)
        slot, dim = o.pop("slot"), o.pop("dim")
        o.pop("budget"), o.pop("population_size")
        if name == "rso":
            o["num_candidates"] = max(1, dim // 2)
        return getattr(search, name)(loss, **o, eval_batch=(slot,))

    return make


def _bbob_zo_adam(loss, options, tx_wrap, mask):
    lam, budget = options["population_size"], options["budget"]
    lr = optax.cosine_decay_schedule(options["learning_rate"], max(1, budget // lam),
                                     alpha=options["decay_alpha"])
    return methods.zeroth_order(loss, "adam", lr, num_directions=lam, sigma=options["sigma"])


def _bbob_evosax(strategy: str):
    def make(loss, options, tx_wrap, mask):
        from fold_jax.estimators import peers

        lam = options["population_size"]
        if strategy == "Open_ES":  # Adam and std both cosine-decayed over the budget
            steps = max(1, options["budget"] // lam)
            alpha = options["decay_alpha"]
            return peers.evosax_method(
                strategy, loss, population_size=lam, eval_mean=False, optimizer="adam",
                learning_rate=optax.cosine_decay_schedule(options["learning_rate"], steps,
                                                          alpha=alpha),
                std_schedule=optax.cosine_decay_schedule(options["sigma"], steps,
                                                         alpha=alpha))
        return peers.evosax_method(strategy, loss, population_size=lam,
                                   sigma=options["sigma"], eval_mean=False)

    return make


def _own_loop(loss, options, tx_wrap, mask):
    raise ValueError("bbob/pycma_cma_es runs pycma's own ask/tell loop "
                     "(fold_jax.bench.suites.bbob), not a fold_jax Method")


def bbob_recipes() -> dict[str, Recipe]:
    """BBOB's methods (COCO's rule: one setting per method for the whole suite, no
    tuning per function; every population method at CMA-ES's default size, given by
    the problem). Initial step sizes are about a quarter of the domain [-5, 5].

    Returns:
        ``{"bbob/<method>": Recipe}``.
    """
    fixed_set = {"acceptance": "fixed_set"}
    decayed = {"learning_rate": 0.1, "decay_alpha": 1e-3}
    r = [Recipe("gld", "fold_jax", _bbob_direct("gld"), {}, {},
                {"max_radius": 4.0, "min_radius": 1e-5, **fixed_set},
                description="GLD, radii 4 down to 1e-5"),
         Recipe("one_plus_one", "fold_jax", _bbob_direct("one_plus_one"), {}, {},
                {"sigma": BBOB_SIGMA0, **fixed_set}, description="(1+1)-ES, 1/5 rule"),
         Recipe("rso", "fold_jax", _bbob_direct("rso"), {}, {},
                {"sigma": 0.5, "relative": False, **fixed_set},
                description="RSO, max(1, d/2) coordinate pairs, fixed scale 0.5"),
         Recipe("zo_adam", "fold_jax", _bbob_zo_adam, {}, {}, {"sigma": 1e-2, **decayed},
                description="antithetic gaussian ES gradient + Adam, cosine-decayed rate"),
         Recipe("evosax_open_es", "evosax", _bbob_evosax("Open_ES"), {}, {},
                {"sigma": 1.0, **decayed},
                description="evosax Open_ES, Adam and std cosine-decayed"),
         *[Recipe(f"evosax_{s.lower()}", "evosax", _bbob_evosax(s), {}, {},
                  {"sigma": BBOB_SIGMA0}, description=f"evosax {s}, no mean evaluation")
           for s in ("SNES", "CMA_ES")],
         Recipe("pycma_cma_es", "cma", _own_loop, {}, {}, {"sigma": BBOB_SIGMA0},
                description="pycma's CMA-ES (its own loop, default termination)")]
    return {f"bbob/{x.name}": x._replace(name=f"bbob/{x.name}", suite="bbob",
                                         handles_mask=False) for x in r}


# ------------------------------------------------------------------------ control

CONTROL_POPULATION = 32  # loss evaluations a step of every control ES (evosax's: + its mean)
# perturbation scales of a policy's weights and Adam step sizes on the mean, for both
# libraries (a policy's return is flat below sigma ~ 1e-2: argmax actions do not move)
_CONTROL_SIGMA = LogUniform(1e-2, 3e-1)
_CONTROL_LR = LogUniform(3e-3, 1e-1)


def _control_zo(loss, options, tx_wrap, mask):
    o = dict(options)
    lr = o.pop("learning_rate")
    return methods.zeroth_order(loss, tx_wrap(optax.adam(lr)), **o)


def _control_snes(loss, options, tx_wrap, mask):
    from fold_jax.estimators import snes

    return snes.snes(loss, tx_wrap(methods.optimizer("sgd", 1.0)), None, **options)


def _ppo_loop(loss, options, tx_wrap, mask):
    raise ValueError("control/ppo runs rejax's own loop (fold_jax.ppo.train, called by "
                     "fold_jax.bench.suites.control), not a fold_jax Method")


def control_recipes() -> dict[str, Recipe]:
    """The control races' methods: fold_jax's antithetic ES with centered ranks (full
    and rank-4 noise), its rank-4 SNES, evosax's Open_ES, SNES and CMA-ES (d <= 4096)
    at the same population, and rejax's PPO.

    Returns:
        ``{"control/<method>": Recipe}``.
    """
    from fold_jax.estimators.peers import MAX_DIMS

    pop = CONTROL_POPULATION
    es = {"learning_rate": _CONTROL_LR, "sigma": _CONTROL_SIGMA}
    es_default = {"learning_rate": 3e-2, "sigma": 0.1}
    ranked = {"num_directions": pop, "noise": "gaussian", "shaping": "centered_ranks"}
    r = [Recipe("es", "fold_jax", _control_zo, es, es_default, ranked,
                description=f"antithetic gaussian ES, {pop} evaluations, centered ranks "
                            f"+ Adam"),
         Recipe("es_lowrank", "fold_jax", _control_zo, es, es_default, {**ranked, "rank": 4},
                description=f"rank-4 antithetic gaussian ES, {pop} evaluations, centered "
                            f"ranks + Adam"),
         Recipe("snes_lowrank", "fold_jax", _control_snes, {"sigma": _CONTROL_SIGMA},
                {"sigma": 0.1}, {"num_directions": pop, "rank": 4, "antithetic": True},
                description=f"SNES on the fused rank-4 path, {pop} evaluations"),
         Recipe("evosax_open_es", "evosax", recipes.evosax_factory("Open_ES"), es, es_default,
                {"population_size": pop},
                description=f"evosax Open_ES, population {pop} + Adam on the mean"),
         Recipe("evosax_snes", "evosax", recipes.evosax_factory("SNES"), {"sigma": _CONTROL_SIGMA},
                {"sigma": 0.1}, {"population_size": pop},
                description=f"evosax SNES, population {pop}"),
         Recipe("evosax_cma_es", "evosax", recipes.evosax_factory("CMA_ES"),
                {"sigma": _CONTROL_SIGMA}, {"sigma": 0.1}, {"population_size": pop},
                max_params=MAX_DIMS["CMA_ES"],
                why_limited="CMA-ES keeps a d x d covariance (fold_jax.peers.CMA_MAX_DIMS)",
                description=f"evosax CMA-ES, population {pop}"),
         Recipe("ppo", "rejax", _ppo_loop, {"learning_rate": LogUniform(1e-4, 3e-3)},
                {"learning_rate": 3e-4},
                description="rejax PPO (its defaults: 64 envs x 64 steps an iteration, "
                            "64-64 actor-critic), learning rate tuned")]
    return {f"control/{x.name}": x._replace(name=f"control/{x.name}", suite="control",
                                            handles_mask=False) for x in r}


# ------------------------------------------------------------------ lm_finetune

# the fine-tuning arms (fold_jax.bench.suites.lm_finetune), in report order; zero_shot
# (no update) has no recipe, evosax_cma_es is declared so its rows can say why it is not run
LM_FINETUNE_ARMS = ("zero_shot", "adam_finetune", "mezo_sgd", "mezo_sgd2", "es_lowrank",
                    "zo_adam", "snes_lowrank", "evosax_open_es", "evosax_snes",
                    "evosax_cma_es", "zo_lora", "zo_scratch")
# Spaces, fixed before the protocol ran (from a 4-run probe on the quick GRU: Adam on an
# ES estimate at lr 1e-2 and ZO-SGD at 1e-2 made the pretrained model worse). Learning
# rates enter the optax optimizers as float32 arrays, so trials that differ only in them
# share one compiled program (fold_jax.learn.programs keys on the jaxpr; closed-over arrays
# are arguments).
_FT_ADAM_LR = LogUniform(1e-4, 1e-2)  # backprop Adam (the pretraining used 3e-3)
_FT_ZO_LR = LogUniform(1e-5, 3e-3)  # Adam on a zeroth-order estimate
_FT_SIGMA = LogUniform(1e-4, 1e-2)  # perturbation scale of the ES arms
_MEZO_LR = LogUniform(1e-4, 5e-3)  # ZO-SGD: MeZO tunes the learning rate only
_MEZO_EPS = 1e-3  # MeZO's perturbation scale (the paper's epsilon, fixed)
_FT_RANK = 4  # rank of the low-rank arms' 2-D perturbations


def _lr(options) -> jax.Array:
    return jnp.asarray(options["learning_rate"], jnp.float32)


def _ft_zo(optimizer: str):
    def make(loss, options, tx_wrap, mask):
        o = dict(options)
        o.pop("learning_rate")
        tx = optax.sgd(_lr(options)) if optimizer == "sgd" else optax.adam(_lr(options))
        if mask is not None:
            o["mask"] = mask
        return methods.zeroth_order(loss, tx_wrap(tx), **o)

    return make


def _ft_adam(loss, options, tx_wrap, mask):
    return methods.gradient(loss, tx_wrap(optax.adam(_lr(options))))


def _ft_snes(loss, options, tx_wrap, mask):
    from fold_jax.estimators import snes

    return snes.snes(loss, tx_wrap(methods.optimizer("sgd", 1.0)), None, **options)


def _ft_evosax(strategy: str):
    def make(loss, options, tx_wrap, mask):
        from fold_jax.estimators import peers

        o = dict(options)
        k = o.pop("num_directions")
        extra = {}
        if "learning_rate" in o:
            extra = {"optimizer": "adam", "learning_rate": o.pop("learning_rate")}
        return peers.evosax_method(strategy, loss, population_size=k, eval_mean=False,
                                   **o, **extra)

    return make


def lm_finetune_recipes() -> dict[str, Recipe]:
    """The fine-tuning arms of the lm_finetune suite (all but ``zero_shot``, which does
    not train). Each is built with ``problem={"num_directions": K}`` (the profile's
    population; MeZO's arms fix their own 2 or 4 evaluations: the suite passes K only
    to recipes without a fixed ``num_directions``).

    Returns:
        ``{"lm_finetune/<arm>": Recipe}``.
    """
    from fold_jax.estimators.peers import MAX_DIMS

    es = {"learning_rate": _FT_ZO_LR, "sigma": _FT_SIGMA}
    es_default = {"learning_rate": 3e-4, "sigma": 1e-3}
    mezo = {"learning_rate": _MEZO_LR}
    spsa = {"noise": "rademacher", "sigma": _MEZO_EPS, "antithetic": True}
    r = [Recipe("adam_finetune", "optax", _ft_adam, {"learning_rate": _FT_ADAM_LR},
                {"learning_rate": 1e-3}, description="backprop + Adam (the anchor)"),
         Recipe("mezo_sgd", "fold_jax", _ft_zo("sgd"), mezo, {"learning_rate": 1e-3},
                {**spsa, "num_directions": 2},
                description="MeZO: ZO-SGD, SPSA (rademacher), 1 direction pair, eps 1e-3, "
                            "constant learning rate"),
         Recipe("mezo_sgd2", "fold_jax", _ft_zo("sgd"), mezo, {"learning_rate": 1e-3},
                {**spsa, "num_directions": 4},
                description="MeZO with 2 direction pairs (n = 2)"),
         Recipe("es_lowrank", "fold_jax", _ft_zo("adam"), es, es_default,
                {"noise": "gaussian", "rank": _FT_RANK, "shaping": "centered_ranks"},
                description=f"fold_jax's antithetic rank-{_FT_RANK} ES (fused), K "
                            f"evaluations, centered ranks + Adam"),
         Recipe("zo_adam", "fold_jax", _ft_zo("adam"), es, es_default,
                {"noise": "gaussian"},
                description="ZO-Adam: antithetic full-rank gaussian estimate, K evaluations, "
                            "+ Adam"),
         Recipe("snes_lowrank", "fold_jax", _ft_snes, {"sigma": _FT_SIGMA}, {"sigma": 1e-3},
                {"rank": _FT_RANK, "antithetic": True},
                description=f"SNES on the fused rank-{_FT_RANK} path, K evaluations"),
         Recipe("evosax_open_es", "evosax", _ft_evosax("Open_ES"), es, es_default,
                description="evosax Open_ES, population K, Adam on the mean"),
         Recipe("evosax_snes", "evosax", _ft_evosax("SNES"), {"sigma": _FT_SIGMA},
                {"sigma": 1e-3}, description="evosax SNES, population K"),
         Recipe("evosax_cma_es", "evosax", _ft_evosax("CMA_ES"), {"sigma": _FT_SIGMA},
                {"sigma": 1e-3}, max_params=MAX_DIMS["CMA_ES"],
                why_limited="CMA-ES keeps a d x d covariance (fold_jax.peers.CMA_MAX_DIMS)",
                description="evosax CMA-ES, population K"),
         Recipe("zo_lora", "fold_jax", _ft_zo("adam"), es, es_default, {"noise": "gaussian"},
                description="parameter-efficient ZO: the ZO-Adam estimate on the output head "
                            "and LayerNorm parameters only (a mask; not a LoRA adapter)"),
         Recipe("zo_scratch", "fold_jax", _ft_zo("adam"), es, es_default,
                {"noise": "gaussian", "rank": _FT_RANK, "shaping": "centered_ranks"},
                description="control: es_lowrank's recipe from random init (no pretraining)")]
    return {f"lm_finetune/{x.name}": x._replace(name=f"lm_finetune/{x.name}",
                                                suite="lm_finetune",
                                                handles_mask=x.name == "zo_lora")
            for x in r}


recipes.add_shipped(hypotheses_recipes() | bbob_recipes() | control_recipes()
                    | lm_finetune_recipes())
