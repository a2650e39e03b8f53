"""fold_jax.report.races: the race figures' styles by library (one colour family each,
the best of each library strong, the rest faint), on synthetic rows."""

from __future__ import annotations

import math

import matplotlib
import pandas as pd

from fold_jax.report import races as report_races


def _races():
    """Two tasks; per method the evaluations to target on each (3 seeds, +1% a seed)."""
    evals = {  # method: (library, digits, spirals)
        "adam": ("optax", 100.0, 50.0), "sgd": ("optax", 200.0, 40.0),
        "snes8": ("fold_jax", 900.0, 700.0), "gld": ("fold_jax", 800.0, math.inf),
        "zo_gaussian": ("fold_jax", 2000.0, 1000.0),
        "evosax_open_es": ("evosax", 1200.0, 600.0), "evosax_ars": ("evosax", 5000.0, 900.0),
        "mine": ("user", 300.0, 300.0),
    }
    rows = []
    for method, (library, *costs) in evals.items():
        for task, e in zip(("digits", "spirals"), costs, strict=True):
            for seed in range(3):
                rows.append({"task": task, "variant": "dense", "method": method,
                             "library": library, "seed": seed, "reached": math.isfinite(e),
                             "evals_to_target": e * (1 + 0.01 * seed),
                             "time_to_target_s": e / 100, "steps_to_target": e / 10,
                             "final_test_metric": 0.96, "n_params": 100})
    return pd.DataFrame(rows)


def test_best_of_each_library_wins_the_most_problems_then_the_geomean():
    best = report_races.best_of_library(_races())
    # optax: adam best on digits, sgd on spirals: one win each; geo-mean of evals over
    # the library's best: adam sqrt(1 * 50/40) = 1.118 < sgd sqrt(2 * 1) = 1.414
    # fold_jax: gld best on digits (800 < 900) but missed spirals, snes8 best there
    # (one win each); geo-mean over finite ratios: gld 1 (only digits) < snes8
    # sqrt(900/800 * 1) -> gld; evosax: open_es best on both
    assert best == {"optax": "adam", "fold_jax": "gld", "evosax": "evosax_open_es",
                    "user": "mine"}


def test_one_colour_family_per_library_best_strong_rest_faint():
    races = _races()
    styles = report_races.library_styles(races)
    assert set(styles) == set(races["method"])
    libs = report_races.library_order(races)
    assert libs == ["optax", "fold_jax", "evosax", "user"]  # registry order, then others
    for i, library in enumerate(libs):
        cmap = matplotlib.colormaps[report_races.FAMILIES[i]]
        members = {m: s for m, s in styles.items() if s["library"] == library}
        strong = [m for m, s in members.items() if s["strong"]]
        assert len(strong) == 1  # exactly one strong line per library
        assert members[strong[0]]["color"] == cmap(0.85)
        assert members[strong[0]]["lw"] > max(
            (s["lw"] for m, s in members.items() if m != strong[0]), default=0)
        assert all(s["alpha"] < 1 for m, s in members.items() if m != strong[0])
        # no colour is shared across libraries (the old palette gave adam and
        # evosax_ars the same blue)
        others = {tuple(s["color"]) for s in styles.values() if s["library"] != library}
        assert not others & {tuple(s["color"]) for s in members.values()}
    assert styles["adam"]["color"] != styles["evosax_ars"]["color"]


def test_race_section_draws_the_library_figures(tmp_path):
    races = _races()
    curves = pd.DataFrame([
        {"task": r["task"], "method": r["method"], "variant": "dense", "seed": r["seed"],
         "step": s, "evals": s * 10, "elapsed_s": s / 10, "split": "test",
         "metric": "accuracy", "value": 0.5 + 0.04 * s, "budget_s": 60.0,
         "backend": "cpu", "device_kind": "cpu"}
        for r in races.to_dict("records") for s in range(1, 11)])
    races = races.assign(target_metric="accuracy", target=0.9, budget_s=60.0,
                         backend="cpu", device_kind="cpu", max_steps=100)
    text = report_races.section({"races": races, "curves": curves}, tmp_path)
    assert "One colour family per library" in text
    assert (tmp_path / "races_metric_vs_evals.png").exists()
    assert (tmp_path / "races_performance_profiles.png").exists()
