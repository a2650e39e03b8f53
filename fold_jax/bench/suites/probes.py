"""The essays' probes as benchmark jobs: results/probes.csv, one measurement a row.

Long format: probe, task, activation, depth, width, stage ("init" / "trained"),
method, layer, threshold, metric, value (None/NaN where a column does not apply).
``depth`` counts hidden layers (activations); a net of depth L has L + 1 dense layers.

- vanishing: per-layer gradient norms (metric grad_norm, layer i) on a fixed batch of
  256 digits, ratio_first_last, train_loss and test_accuracy, at init and after Adam.
- zo_cosine: per-layer cosine between a forward-only estimate and backprop's gradient
  at init (mean over ``REPEATS`` keys), cosine_all over all parameters.
- deep_sigmoid_training: every available method (the races' configurations) on a
  depth-16 sigmoid net on digits for a fixed number of steps per method
  (``deep_steps``: backprop's steps are ~10x cheaper than a 32-direction estimate's,
  so Adam gets 10x more, about the same training time; deterministic, unlike the
  former wall-clock budget). ``sigmoid_budget_s`` is only a safety cap (metric
  ``capped`` = 1 if it cut the run short). Relu control in full.
- heads / threshold: the three heads trained alike; for digit_attributes the sigmoid
  head vs a softmax head trained on normalised labels, across thresholds 0.3..0.9.
- regions_line / regions_grid / tent: linear regions (fold_jax.analysis.regions) vs depth and
  width at init and after training (Adam vs zeroth-order) on spirals; the tent-map net.
- region_map: a ReLU net (``MAP``) trained on spirals and its activation regions on a
  grid over [-box, box]^2: the grid goes to results/region_maps.csv (pattern id and
  predicted class per cell, run-length encoded per grid row, and the training
  points), its summary (patterns, components, test accuracy, ...) to probes.csv; the
  report draws the figure from those rows.

Each job's ``key`` names one of its rows (its last word), so the runner knows it is done.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fold_jax import results
from fold_jax.analysis import probes, regions
from fold_jax.bench.common import Job, check_profile
from fold_jax.estimators import methods
from fold_jax.learn import heads, nets, recipes, tasks, train

FILE = "probes"
KEY = results.key(FILE)
KEYS = {"region_maps": results.key("region_maps")}

ACTIVATIONS = ("sigmoid", "tanh", "relu", "abs")
DEPTHS = (2, 4, 8, 16, 32)
WIDTH = 64
BATCH = 256  # examples in the fixed gradient batch
REPEATS = 4  # keys averaged per zo_cosine estimate
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BOX = 2.0  # spirals live in about [-2, 2]^2 after standardization
# Chords of the box that miss the origin: flax initialises biases to zero, so at init
# every region is a cone from the origin and a line through it meets exactly 2.
SEGMENTS = (((-BOX, 1.0), (BOX, 1.0)), ((-BOX, -1.0), (BOX, -1.0)),
            ((1.0, -BOX), (1.0, BOX)), ((-1.0, -BOX), (-1.0, BOX)))
# the spirals region map (region_map job): net, Adam training and grid
MAP = dict(activation="relu", depth=4, width=32, learning_rate=1e-2, steps=2000,
           resolution=300, box=2.5)

PROFILE = {
    "quick": dict(vanishing_depths=(2, 4, 8, 16), trained_depths=(16,), train_steps=100,
                  zo_grid=[(a, 8, "zo_gaussian") for a in ("sigmoid", "relu")],
                  sigmoid_methods=("adam", "zo_gaussian"), sigmoid_activations=("sigmoid",),
                  deep_steps={"adam": 1500, "default": 150}, sigmoid_budget_s=60.0,
                  head_steps=300,
                  region_widths=(8, 32), grid_resolution=128,
                  region_trained=[("relu", 4)], region_methods=("adam_1e-2", "zo_gaussian"),
                  region_steps=500, tent_depths=tuple(range(1, 11))),
    "full": dict(vanishing_depths=DEPTHS, trained_depths=DEPTHS, train_steps=500,
                 zo_grid=[(a, d, m) for a in ACTIVATIONS for d in DEPTHS
                          for m in ("zo_gaussian", "zo_lowrank", "forward_gradient")],
                 sigmoid_methods=None, sigmoid_activations=("sigmoid", "relu"),
                 deep_steps={"adam": 15000, "default": 1500}, sigmoid_budget_s=600.0,
                 head_steps=1500,
                 region_widths=(8, 16, 32, 64), grid_resolution=512,
                 region_trained=[(a, d) for a in ("relu", "abs") for d in (2, 4, 8)],
                 region_methods=("adam_1e-2", "zo_gaussian"), region_steps=3000,
                 tent_depths=tuple(range(1, 17))),
}


def _row(probe: str, metric: str, value: Any, *, task=None, activation=None, depth=None,
         width=None, stage=None, method=None, layer=None, threshold=None) -> dict[str, Any]:
    value = float(value)
    return {"probe": probe, "task": task, "activation": activation, "depth": depth,
            "width": width, "stage": stage, "method": method, "layer": layer,
            "threshold": threshold, "metric": metric, "value": value}


def _key(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in KEY if k in row}


# name -> (recipe, hyperparameters): the probes' methods, built from the recipe registry
# (fold_jax.learn.recipes) with the races' defaults unless named here
METHODS: dict[str, tuple[str, dict[str, float]]] = {
    "adam": ("adam", {"learning_rate": 1e-3}),
    "adam_1e-2": ("adam", {"learning_rate": 1e-2}),
    "zo_gaussian": ("zo_gaussian", {}),  # 32 directions, sigma 1e-3, Adam 1e-2
    "zo_rademacher": ("zo_rademacher", {}),
    "zo_lowrank": ("zo_lowrank", {}),
    "forward_gradient": ("forward_gradient", {}),  # 8 tangents, Adam 1e-2
    "gld": ("gld", {}),
    "rso": ("rso", {}),
    "one_plus_one": ("one_plus_one", {}),
}


def _method(name: str, loss: Callable) -> methods.Method:
    recipe, hparams = METHODS[name]
    return recipes.build(recipe, loss, hparams)


def _available(name: str) -> bool:
    return name in METHODS


# ------------------------------------------------------------------------- vanishing


def vanishing(activation: str, depth: int, trained: bool, steps: int) -> list[dict]:
    task = tasks.get("digits")
    net = probes.deep_mlp(task.n_features, task.n_outputs, depth=depth, width=WIDTH,
                          activation=activation)
    loss = task.loss_fn(net.apply)
    x, y = task.x_train[:BATCH], task.y_train[:BATCH]
    norms32 = jax.jit(lambda p: probes.layer_grad_norms(loss, p, x, y))

    def norms(p):  # float64: deep sigmoid gradients underflow float32 (counted apart)
        with jax.enable_x64(True):
            p64, x64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (p, x))
            return np.asarray(jax.jit(probes.layer_grad_norms, static_argnums=0)(
                loss, p64, x64, y), np.float64)

    params = net.init(jax.random.key(0))
    ids = dict(task="digits", activation=activation, depth=depth, width=WIDTH,
               method="adam")
    stages = [("init", params, None)]
    if trained:
        m = recipes.build("adam", loss, {"learning_rate": 1e-3})
        r = train.fit(m, params, task, apply=net.apply, steps=steps, eval_every=steps)
        stages.append(("trained", r.state.params, r.history.iloc[-1]))
    rows = []
    for stage, p, last in stages:
        n = norms(p)
        zero32 = int(np.sum(np.asarray(norms32(p)) == 0))
        rows += [_row("vanishing", "grad_norm", v, stage=stage, layer=i, **ids)
                 for i, v in enumerate(n)]
        metrics = task.evaluate(net.apply, p) if last is None else {
            "accuracy": last["test_accuracy"], "loss": last["test_loss"]}
        rows += [_row("vanishing", "test_accuracy", metrics["accuracy"], stage=stage, **ids),
                 _row("vanishing", "test_loss", metrics["loss"], stage=stage, **ids),
                 _row("vanishing", "zero_layers_f32", zero32, stage=stage, **ids),
                 _row("vanishing", "ratio_first_last", n[0] / n[-1] if n[-1] > 0 else math.nan,
                      stage=stage, **ids)]
    return rows


def zo_cosine(activation: str, depth: int, method: str) -> list[dict]:
    from fold_jax.estimators import zo

    task = tasks.get("digits")
    net = probes.deep_mlp(task.n_features, task.n_outputs, depth=depth, width=WIDTH,
                          activation=activation)
    loss = task.loss_fn(net.apply)
    x, y = task.x_train[:BATCH], task.y_train[:BATCH]
    params = net.init(jax.random.key(0))
    if method == "zo_gaussian":
        vg = zo.value_and_grad(loss, num_directions=64)
    elif method == "zo_lowrank":
        vg = zo.value_and_grad(loss, num_directions=64, rank=1)
    elif method == "forward_gradient":
        vg = zo.forward_value_and_grad(loss, num_directions=64)
    else:
        raise ValueError(f"method={method!r}; allowed: zo_gaussian, zo_lowrank, "
                         f"forward_gradient")
    true = jax.grad(loss)(params, x, y)

    @jax.jit
    def cosines(key):
        _, g = vg(params, key, x, y)
        return probes.layer_cosines(g, true), probes.tree_cosine(g, true)

    per_layer, overall = zip(*(cosines(k) for k in jax.random.split(jax.random.key(1),
                                                                     REPEATS)), strict=True)
    per_layer = np.nanmean(np.stack([np.asarray(c) for c in per_layer]), axis=0)
    ids = dict(task="digits", activation=activation, depth=depth, width=WIDTH, stage="init",
               method=method)
    norms = np.asarray(probes.layer_norms(true), np.float64)
    rows = [_row("zo_cosine", "cosine", c, layer=i, **ids) for i, c in enumerate(per_layer)]
    rows += [_row("zo_cosine", "grad_share", v / np.linalg.norm(norms), layer=i, **ids)
             for i, v in enumerate(norms)]
    n_params = nets.count_params(params)
    rows.append(_row("zo_cosine", "n_params", n_params, **ids))
    if method != "zo_lowrank":  # P iid isotropic directions: E cos ~ sqrt(P / (P + d + 1))
        pairs = 32 if method == "zo_gaussian" else 64
        rows.append(_row("zo_cosine", "expected_cosine_all",
                         math.sqrt(pairs / (pairs + n_params + 1)), **ids))
    rows.append(_row("zo_cosine", "cosine_all", np.mean([float(c) for c in overall]), **ids))
    return rows


def deep_training(activation: str, method: str, steps: int, budget_s: float) -> list[dict]:
    """``steps`` steps of ``method`` on a depth-16 net (``budget_s``: wall-clock cap)."""
    task = tasks.get("digits")
    net = probes.deep_mlp(task.n_features, task.n_outputs, depth=16, width=WIDTH,
                          activation=activation)
    m = _method(method, task.loss_fn(net.apply))
    r = train.fit(m, net.init(jax.random.key(0)), task, apply=net.apply, budget_s=budget_s,
                  steps=steps, eval_every=50)
    h = r.history
    ids = dict(task="digits", activation=activation, depth=16, width=WIDTH, stage="trained",
               method=method)
    values = {"init_test_accuracy": h["test_accuracy"].iloc[0],
              "best_test_accuracy": h["test_accuracy"].max(),
              "train_loss": h["train_loss"].iloc[-1], "steps": h["step"].iloc[-1],
              "evals": h["evals"].iloc[-1], "elapsed_s": h["elapsed_s"].iloc[-1],
              "compile_s": r.compile_s, "budget_s": budget_s, "max_steps": steps,
              "capped": float(h["step"].iloc[-1] < steps),
              "test_accuracy": h["test_accuracy"].iloc[-1]}
    return [_row("deep_sigmoid_training", k, v, **ids) for k, v in values.items()]


# ----------------------------------------------------------------------------- heads


def _train_head(task, loss, steps: int):
    net = nets.mlp((task.n_features, WIDTH, WIDTH, task.n_outputs), "relu")
    m = recipes.build("adam", loss(net.apply), {"learning_rate": 1e-3})
    r = train.fit(m, net.init(jax.random.key(0)), task, apply=net.apply, steps=steps,
                  eval_every=steps)
    return net, r.state.params


def head_rows(task_name: str, steps: int) -> list[dict]:
    task = tasks.get(task_name)
    kind = task.kind
    name = {"binary": "sigmoid", "multiclass": "softmax", "multilabel": "sigmoid"}[kind]
    ids = dict(task=task_name, activation="relu", depth=2, width=WIDTH, stage="trained")
    net, params = _train_head(task, task.loss_fn, steps)
    logits = net.apply(params, task.x_test)
    rows = [_row("heads", f"test_{k}", v, method=name, **ids)
            for k, v in task.head.metrics(logits, task.y_test).items()]
    if kind != "multilabel":
        return rows
    y = task.y_test
    soft_net, soft = _train_head(task, probes.softmax_multilabel_loss, steps)
    soft_logits = soft_net.apply(soft, task.x_test)
    head = heads.Head("multilabel")
    for t in THRESHOLDS:
        sig = head.metrics(logits, y, t)
        sig_on = head.predict(logits, t).sum(-1).mean()
        pred = probes.softmax_label_predictions(soft_logits, threshold=t)
        m = probes.label_metrics(pred, y)
        for method, em, f1, on in (("sigmoid", sig["accuracy"], sig["micro_f1"], sig_on),
                                   ("softmax", m["exact_match"], m["micro_f1"],
                                    pred.sum(-1).mean())):
            rows += [_row("threshold", "exact_match", em, method=method, threshold=t, **ids),
                     _row("threshold", "micro_f1", f1, method=method, threshold=t, **ids),
                     _row("threshold", "labels_on", on, method=method, threshold=t, **ids)]
    rows.append(_row("threshold", "labels_on", y.sum(-1).mean(), method="truth", **ids))
    for method, k in (("softmax_top1", 1), ("softmax_top2", 2),
                      ("softmax_topk_oracle", y.sum(-1))):
        m = probes.label_metrics(probes.softmax_label_predictions(soft_logits, k=k), y)
        rows += [_row("heads", f"test_{n}", v, method=method, **ids) for n, v in m.items()]
    m = probes.label_metrics(probes.softmax_label_predictions(soft_logits, threshold=0.5), y)
    rows += [_row("heads", "test_exact_match", m["exact_match"], method="softmax", **ids),
             _row("heads", "test_micro_f1", m["micro_f1"], method="softmax", **ids)]
    return rows


# --------------------------------------------------------------------------- regions


def region_counts(params, activation: str, resolution: int) -> dict[str, float]:
    """Mean exact line counts over ``SEGMENTS`` and grid counts on [-BOX - .5, BOX + .5]^2."""
    lines = [regions.line_regions(params, a, b, activation=activation) for a, b in SEGMENTS]
    grid = regions.grid_regions(params, *regions.box_plane([-BOX - 0.5] * 2, [BOX + 0.5] * 2),
                                activation=activation, resolution=resolution)
    return {"regions": np.mean([r.n_regions for r in lines]),
            "pieces": np.mean([r.n_pieces for r in lines]),
            "patterns": grid.n_patterns, "components": grid.n_components}


def _region_rows(counts, **ids) -> list[dict]:
    rows = [_row("regions_line", k, counts[k], **ids) for k in ("pieces", "regions")]
    return rows[:1] + [_row("regions_grid", k, counts[k], **ids)
                       for k in ("patterns", "components")] + rows[1:]


def regions_init(activation: str, depth: int, width: int, resolution: int) -> list[dict]:
    net = probes.deep_mlp(2, 1, depth=depth, width=width, activation=activation)
    counts = region_counts(net.init(jax.random.key(0)), activation, resolution)
    return _region_rows(counts, task="spirals", activation=activation, depth=depth,
                        width=width, stage="init", method=None)


def regions_trained(activation: str, depth: int, method: str, steps: int,
                    resolution: int) -> list[dict]:
    task = tasks.get("spirals")
    net = probes.deep_mlp(2, 1, depth=depth, width=32, activation=activation)
    m = _method(method, task.loss_fn(net.apply))
    r = train.fit(m, net.init(jax.random.key(0)), task, apply=net.apply, steps=steps,
                  eval_every=steps)
    ids = dict(task="spirals", activation=activation, depth=depth, width=32,
               stage="trained", method=method)
    counts = region_counts(r.state.params, activation, resolution)
    accuracy = r.history["test_accuracy"].iloc[-1]
    return [_row("regions_line", "test_accuracy", accuracy, **ids), *_region_rows(counts, **ids)]


def _map_ids() -> dict[str, Any]:
    return dict(task="spirals", activation=MAP["activation"], depth=MAP["depth"],
                width=MAP["width"], stage="trained", method="adam_1e-2")


def region_map(steps: int = MAP["steps"], resolution: int = MAP["resolution"]
               ) -> dict[str, list[dict]]:
    """Train ``MAP``'s net on spirals (Adam, seed 0) and grid its activation regions.

    Args:
        steps: Adam steps.
        resolution: grid cells per side.

    Returns:
        ``{"region_maps": rows, "probes": rows}``: per grid row the pattern ids and the
        predicted classes (run-length encoded), the training points of each class, and
        the map's summary in probes.csv rows (probe ``region_map``).
    """
    from fold_jax.report.probes import encode_points, encode_runs

    task = tasks.get("spirals")
    net = probes.deep_mlp(2, 1, depth=MAP["depth"], width=MAP["width"],
                          activation=MAP["activation"])
    m = recipes.build("adam", task.loss_fn(net.apply),
                      {"learning_rate": MAP["learning_rate"]})
    r = train.fit(m, net.init(jax.random.key(0)), task, apply=net.apply, steps=steps,
                  eval_every=steps)
    box = MAP["box"]
    origin, u, v = regions.box_plane([-box, -box], [box, box])
    grid = regions.grid_regions(r.state.params, origin, u, v, activation=MAP["activation"],
                                resolution=resolution)
    s = np.linspace(0, 1, resolution)
    xx, yy = np.meshgrid(origin[0] + s * u[0], origin[1] + s * v[1])
    points = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32)
    classes = (np.asarray(net.apply(r.state.params, points)).reshape(resolution, resolution)
               > 0).astype(np.int64)
    name = f"spirals_{MAP['activation']}_d{MAP['depth']}_w{MAP['width']}"
    common = dict(map=name, resolution=resolution, box=box)
    maps = [dict(common, grid=kind, row=i, values=encode_runs(cells[i]))
            for kind, cells in (("pattern", grid.pattern_ids), ("class", classes))
            for i in range(resolution)]
    x, y = np.asarray(task.x_train), np.asarray(task.y_train).ravel()
    maps += [dict(common, grid=f"points_{label}", row=0, values=encode_points(x[y == label]))
             for label in (0, 1)]
    summary = {"test_accuracy": float(r.history["test_accuracy"].iloc[-1]), "steps": steps,
               "learning_rate": MAP["learning_rate"], "resolution": resolution,
               "patterns": grid.n_patterns, "components": grid.n_components}
    return {"region_maps": maps,
            "probes": [_row("region_map", k, val, **_map_ids()) for k, val in summary.items()]}


def tent(activation: str, depth: int) -> list[dict]:
    _, params = regions.tent_net(depth, activation)
    r = regions.line_regions(params, [0.0], [1.0], activation=activation)
    ids = dict(task=None, activation=activation, depth=depth,
               width=1 if activation == "abs" else 2, stage="constructed", method=None)
    return [_row("tent", "expected", 2.0**depth, **ids),
            _row("tent", "regions", r.n_regions, **ids),
            _row("tent", "pieces", r.n_pieces, **ids)]


# ------------------------------------------------------------------------------ jobs


HEALTH_SHAPE = (316, 317)  # a linear layer: d = 316 * 317 + 317 = 100,489 parameters


def estimator_health(noise: str, prng: str, rank: int | None, chunk: int | None,
                     forward: bool = False) -> list[dict]:
    """Non-finite estimates and dropped directions per 1000 calls at d = 1e5 (4
    directions a call, a least-squares linear layer through perturb.matmul)."""
    from fold_jax.estimators import perturb, zo

    n_in, n_out = HEALTH_SHAPE
    x = jax.random.normal(jax.random.key(20), (8, n_in)) / n_in**0.5
    params = {"w": jax.random.normal(jax.random.key(21), HEALTH_SHAPE) / n_in**0.5,
              "b": jnp.zeros(n_out)}

    def loss(p, x):
        return jnp.mean((perturb.matmul(x, p["w"]) + p["b"]) ** 2)

    if forward:
        vg = zo.forward_value_and_grad(loss, num_directions=4, prng=prng)
    else:
        vg = zo.value_and_grad(loss, num_directions=4, sigma=1e-2, noise=noise, prng=prng,
                               rank=rank, chunk_size=chunk)
    health = probes.estimator_health(vg, params, x, calls=1000)
    ids = dict(task="linear_d100489", width=n_in * n_out + n_out, stage="init",
               method=_health_label(noise, prng, rank, chunk, forward))
    return [_row("estimator_health", "non_finite_per_1000", health["non_finite"], **ids),
            _row("estimator_health", "dropped_per_1000", health["dropped_directions"], **ids)]


def _health_label(noise, prng, rank, chunk, forward) -> str:
    if forward:
        return f"forward_gradient/{prng}"
    return f"{noise}/{prng}/rank{rank or 'full'}/chunk{chunk or 'all'}"


def _health_grid(profile: str) -> list[tuple]:
    full = profile == "full"
    grid = [(n, p, r, c, False) for n in ("gaussian", "rademacher", "sphere")
            for p in ("hash", "threefry") for r in ((None, 4) if full or n == "gaussian"
                                                    else (None,))
            for c in ((None, 2) if full else (None,)) if not (n == "sphere" and r)]
    return grid + [("gaussian", p, None, None, True) for p in ("hash", "threefry")]


def _job(run: Callable[[], list[dict]], last: dict, label: str, cost: float) -> Job:
    """A job whose key is its ``last`` row (written by ``run``)."""
    return Job(_key(last), run, label, cost)


def jobs(profile: str) -> Iterator[Job]:
    p = PROFILE[check_profile(profile)]
    for config in _health_grid(profile):
        last = _row("estimator_health", "dropped_per_1000", 0, task="linear_d100489",
                    width=HEALTH_SHAPE[0] * HEALTH_SHAPE[1] + HEALTH_SHAPE[1], stage="init",
                    method=_health_label(*config))
        yield _job(lambda a=config: estimator_health(*a), last,
                   f"health/{_health_label(*config)}", 7)
    for activation in ACTIVATIONS:
        for depth in p["vanishing_depths"]:  # quick skips 32: its float64 compile is slow
            trained = depth in p["trained_depths"]
            last = _row("vanishing", "ratio_first_last", 0, task="digits",
                        activation=activation, depth=depth, width=WIDTH,
                        stage="trained" if trained else "init", method="adam")
            yield _job(lambda a=(activation, depth, trained, p["train_steps"]): vanishing(*a),
                       last, f"vanishing/{activation}/d{depth}", 1 + 4 * trained)
    for tent_activation in ("abs", "relu"):
        for depth in p["tent_depths"]:
            last = _row("tent", "pieces", 0, activation=tent_activation, depth=depth,
                        width=1 if tent_activation == "abs" else 2, stage="constructed")
            yield _job(lambda a=(tent_activation, depth): tent(*a), last,
                       f"tent/{tent_activation}/d{depth}", 0.05)
    for activation in ("relu", "abs"):
        for depth in DEPTHS:
            for width in p["region_widths"]:
                last = _row("regions_line", "regions", 0, task="spirals", activation=activation,
                            depth=depth, width=width, stage="init")
                yield _job(lambda a=(activation, depth, width, p["grid_resolution"]):
                           regions_init(*a), last, f"regions/{activation}/d{depth}/w{width}", 0.5)
    last = _row("region_map", "components", 0, **_map_ids())
    yield _job(lambda: region_map(MAP["steps"], MAP["resolution"]), last, "region_map", 5)
    for task_name in ("breast_cancer", "digits", "digit_attributes"):
        name = "softmax" if task_name != "breast_cancer" else "sigmoid"
        last = _row("heads", "test_micro_f1" if task_name == "digit_attributes" else
                    "test_accuracy", 0, task=task_name, activation="relu", depth=2, width=WIDTH,
                    stage="trained", method=name)
        yield _job(lambda a=(task_name, p["head_steps"]): head_rows(*a), last,
                   f"heads/{task_name}", 3)
    if not _available("zo_gaussian"):
        print("probes: skipping zo_cosine and zeroth-order runs (no fold_jax.zo)")
    for activation, depth, method in p["zo_grid"]:
        if not _available(method):
            continue
        last = _row("zo_cosine", "cosine_all", 0, task="digits", activation=activation,
                    depth=depth, width=WIDTH, stage="init", method=method)
        yield _job(lambda a=(activation, depth, method): zo_cosine(*a), last,
                   f"zo_cosine/{activation}/d{depth}/{method}", 2 + depth / 4)
    for activation, depth in p["region_trained"]:
        for method in p["region_methods"]:
            if not _available(method):
                continue
            last = _row("regions_line", "regions", 0, task="spirals", activation=activation,
                        depth=depth, width=32, stage="trained", method=method)
            yield _job(lambda a=(activation, depth, method, p["region_steps"],
                                 p["grid_resolution"]): regions_trained(*a), last,
                       f"regions/{activation}/d{depth}/{method}", 4)
    for activation in p["sigmoid_activations"]:
        for method in p["sigmoid_methods"] or tuple(METHODS):
            if not _available(method):
                continue
            last = _row("deep_sigmoid_training", "test_accuracy", 0, task="digits",
                        activation=activation, depth=16, width=WIDTH, stage="trained",
                        method=method)
            steps = p["deep_steps"].get(method, p["deep_steps"]["default"])
            yield _job(lambda a=(activation, method, steps, p["sigmoid_budget_s"]):
                       deep_training(*a), last, f"deep/{activation}/{method}", 6)
