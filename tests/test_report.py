"""fold_jax.report: builds REPORT.md and figures from small synthetic CSVs in a tmp dir."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fold_jax import report, results
from fold_jax.learn import recipes
from fold_jax.report import _common, kernels, probes, races

KERNEL_KEY = ["bench", "method", "n_params", "batch_size", "num_directions"]
RACE_KEY = ["task", "method", "variant", "seed"]


def _kernels(n_dirs=(8, 32), n_params=(1000, 10000)):
    rows = []
    for n in n_params:
        for nd in n_dirs:
            inference = 1e-6 * nd * n / 100
            step = 2 * inference * (nd / 8) ** 0.0  # twice inference: frac 0.5
            rows.append({"bench": "zo_step", "method": "zo", "variant": "dense", "n_params": n,
                         "batch_size": 32, "num_directions": nd, "rank": None,
                         "sparsity": None, "dtype": "float32", "compile_s": 0.5,
                         "step_median_s": step, "step_iqr_s": 0.1 * step, "rounds": 10,
                         "evals_per_s": nd * 32 / step, "flops": 2.0 * n * nd,
                         "mem_bytes": 4.0 * n * nd, "inference_equiv_s": inference,
                         "frac_of_inference": 0.5})
    return rows


def _races():
    rows, curves = [], []
    time_to = {"adam": 1.0, "zo_gaussian": 10.0, "gld": math.inf}
    for method, t in time_to.items():
        for variant in ("dense", "pruned"):
            for seed in (0, 1):
                rows.append({"task": "digits", "method": method, "variant": variant,
                             "seed": seed, "target_metric": "accuracy", "target": 0.9,
                             "reached": math.isfinite(t), "steps_to_target": 100 * t,
                             "evals_to_target": 1000 * t, "time_to_target_s": t,
                             "compile_s": 1.0, "final_test_metric": 0.95 if t < 99 else 0.5,
                             "budget_s": 20.0, "n_params": 2410})
                for step in (0, 10, 20):
                    curves.append({"task": "digits", "method": method, "variant": variant,
                                   "seed": seed, "budget_s": 20.0, "step": step,
                                   "evals": 10 * step, "elapsed_s": 0.1 * step,
                                   "split": "test", "metric": "accuracy",
                                   "value": 0.5 + step / 50})
    return rows, curves


@pytest.fixture
def filled(tmp_path):
    results.append("kernels", _kernels(), key=KERNEL_KEY, results_dir=tmp_path)
    rows, curves = _races()
    results.append("races", rows, key=RACE_KEY, results_dir=tmp_path)
    results.append("curves", curves, key=[*RACE_KEY, "step", "split", "metric"],
                   results_dir=tmp_path)
    return tmp_path


@pytest.fixture
def text_only(monkeypatch):
    """Figures drawn but not rendered: ``Figure.savefig`` writes an empty file. For the
    tests that read only the report's text and the figures' names; rendering the
    PNGs is most of a build's time, and test_build_writes_report_and_figures renders
    (and checks) every one of them."""
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", lambda self, path, **kw: Path(path).write_bytes(b""))


def _text(summary: Path) -> str:
    """The whole report: the summary, then each section's page and the runs page."""
    pages = summary.parent / report.PAGES_DIR
    return "\n".join([summary.read_text(), *(
        (pages / f"{name}.md").read_text() for name in (*report.SECTIONS, "runs"))])


def test_build_writes_report_and_figures(filled):
    (filled / "figures").mkdir()
    (filled / "figures" / "stale_from_an_old_build.png").write_bytes(b"old")
    path = report.build(filled, verbose=False)
    assert path == filled / "REPORT.md"
    text = _text(path)
    for heading in ("# Kernels", "# Time-to-target races", "### Performance profiles",
                    "### Dense vs binarized vs pruned", "# Scaling"):
        assert heading in text
    figures = {p.name for p in (filled / "figures").glob("*.png")}
    assert {"kernels_time_vs_directions.png", "kernels_time_vs_params.png",
            "races_metric_vs_time.png", "races_metric_vs_evals.png",
            "races_performance_profiles.png", "races_variants.png"} <= figures
    for name in figures:  # every figure is linked and is a real PNG
        assert f"figures/{name}" in text
        assert (filled / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the synthetic kernel doubles in time per x10 params and per x4 directions... slope 1
    assert "| num_directions | zo_step | zo | 2 | 1 | 1 | 1 |" in text
    assert "_Skipped: no scaling data._" in text
    assert not list(filled.glob(".report.*"))  # temporary build dir cleaned up
    assert "stale_from_an_old_build.png" not in figures
    # a rebuild from the same rows leaves every figure's bytes (and file) alone: nothing
    # to re-commit; the PNGs carry no software version
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns)
              for p in (filled / "figures").glob("*.png")}
    assert all(b"Matplotlib" not in data for data, _ in before.values())
    report.build(filled, verbose=False)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns)
            for p in (filled / "figures").glob("*.png")} == before


def test_ratios_and_profiles_follow_the_definitions(filled):
    frame = results.load(filled)["races"]
    s = races.summary(frame)
    zo = s[(s["method"] == "zo_gaussian") & (s["variant"] == "dense")].iloc[0]
    assert zo["time / adam"] == pytest.approx(10.0) and zo["evals / adam"] == pytest.approx(10)
    vs = races.versus_adam(s).set_index("method")
    assert vs.loc["gld", "missed where adam reached"] == 2
    assert vs.loc["zo_gaussian", "time / adam (geo-mean)"] == pytest.approx(10.0)
    profile = races.performance_profile(frame, "time_to_target_s")
    taus, rho = profile["adam"]
    assert rho[0] == 1.0  # adam is best on every problem
    taus, rho = profile["zo_gaussian"]
    assert rho[0] == 0.0 and rho[-1] == 1.0 and taus[-1] == pytest.approx(10.0)
    assert profile["gld"][1].max() == 0.0


def test_missing_sections_and_data_are_reported(tmp_path, text_only):
    _, curves = _races()
    results.append("curves", curves[:3], key=[*RACE_KEY, "step"], results_dir=tmp_path)
    assert report.main(["--results-dir", str(tmp_path)]) == 0  # the command-line entry
    text = _text(tmp_path / "REPORT.md")
    assert f"| curves.csv | `{results.run_id()}` | no record | 3 of 3 |" in text
    assert "_Skipped: no kernels data._" in text and "_Skipped: no races data._" in text
    assert "_Skipped: no scaling data._" in text


def test_malformed_results_stop_the_build_with_the_file_named(filled):
    path = results.run_dir(filled, results.run_id()) / "races.csv.gz"
    frame = pd.read_csv(path).astype({"seed": object})
    frame.loc[1, "seed"] = "one"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"races\.csv\.gz: row 2 \(line 3\): column 'seed'"):
        report.build(filled, verbose=False)


def test_missing_results_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.build(tmp_path / "nope")


def test_helpers():
    assert _common.fmt(math.inf) == "inf" and _common.fmt(float("nan")) == "-"
    assert _common.fmt(2410.0) == "2410" and _common.fmt(0.123456) == "0.123"
    assert _common.loglog_slope([1, 10, 100], [2, 20, 200]) == pytest.approx(1.0)
    assert math.isnan(_common.loglog_slope([1, 1], [2, 3]))
    x = np.array([1.0, 2.0, 4.0])
    assert _common.loglog_slope(x, x**-0.5) == pytest.approx(-0.5)


def _as(rows, run, when, **meta):
    """``rows`` as written by run ``run`` at ``when`` (other metadata: this machine's)."""
    return [{**r, "run_id": run, "timestamp_utc": when, **meta} for r in rows]


def _section(text, title):
    start = text.index(f"\n# {title}\n")  # a section's page (see _text)
    end = text.find("\n# ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_each_file_shows_one_run_and_says_which(tmp_path, text_only):
    old, new, broken = ("20260101T000000Z-old000", "20260102T000000Z-new000",
                        "20260103T000000Z-broken")
    rows, curves = _races()
    for run, day in ((old, "01"), (new, "02"), (broken, "03")):
        when = f"2026-01-{day}T00:00:00+00:00"
        slower = [{**r, "time_to_target_s": r["time_to_target_s"] * int(day)} for r in rows]
        results.append("races", _as(slower, run, when), key=RACE_KEY, results_dir=tmp_path)
        results.append("curves", _as(curves, run, when),
                       key=[*RACE_KEY, "step", "split", "metric"], results_dir=tmp_path)
        results.record_run(tmp_path, {"run_id": run, "started_utc": when,
                                      "status": "failed" if run == broken else "finished"})
    results.append("kernels", _as(_kernels(), old, "2026-01-01T00:00:00+00:00"),
                   key=KERNEL_KEY, results_dir=tmp_path)
    kept, sources = report.select_runs(results.load(tmp_path), results.runs(tmp_path))
    assert set(kept["races"]["run_id"]) == set(kept["curves"]["run_id"]) == {new}
    assert (kept["races"]["time_to_target_s"] == [r["time_to_target_s"] * 2 for r in rows]
            ).all()
    assert set(kept["kernels"]["run_id"]) == {old}  # the newest finished run with kernels
    races_source = sources["races"]
    assert races_source.newer == (broken,) and races_source.other_runs == 2
    assert (races_source.rows, races_source.rows_in_file) == (len(rows), 3 * len(rows))

    text = _text(report.build(tmp_path, verbose=False))
    races = _section(text, "Time-to-target races")
    meta = results.metadata()
    assert f"_Source: run `{new}`, commit `{meta['git_commit'][:8]}`, host {meta['host']}" in races
    assert "2026-01-02 00:00 UTC" in races
    assert f"{len(rows)} of {3 * len(rows)} rows of races.csv" in races
    assert f"Newer unfinished runs with rows here are not shown: `{broken}`" in races
    assert f"run `{old}`" in _section(text, "Kernels") and old not in races
    assert f"| races.csv | `{new}` | finished | {len(rows)} of {3 * len(rows)} |" in text
    assert "3 runs in the rows read" in text


def test_select_runs_prefers_finished_runs_then_the_newest():
    frame = pd.DataFrame({"run_id": ["a", "a", "b", "c", None],
                          "timestamp_utc": ["2026-01-01T00:00:00+00:00"] * 2
                          + ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00", None],
                          "v": [1, 2, 3, 4, 5]})
    registry = pd.DataFrame({"run_id": ["a", "c"], "status": ["finished", "interrupted"],
                             "started_utc": ["2026-01-01T00:00:00+00:00",
                                             "2026-01-03T00:00:00+00:00"],
                             "filter": ["", "digits"], "profile": ["full", "quick"]})
    plain = pd.DataFrame({"v": [9]})  # no metadata: kept whole
    only_c = frame[frame["run_id"] == "c"]
    kept, sources = report.select_runs({"x": frame, "y": only_c, "z": plain}, registry)
    # b has no record (rows from before runs were recorded): counts as finished, and is newest
    assert list(kept["x"]["v"]) == [3] and sources["x"].status == "unrecorded"
    assert sources["x"].newer == ("c",) and sources["x"].other_runs == 2
    assert list(kept["y"]["v"]) == [4] and sources["y"].status == "interrupted"
    assert "**interrupted**" in sources["y"].describe()
    assert sources["y"].describe().endswith("only jobs matching `-k digits`")
    # a quick run's numbers are said to be quick ones, where the report names the run
    assert "**quick profile**" in sources["y"].describe()
    assert "quick" not in report.select_runs({"x": frame[frame["run_id"] == "a"]},
                                             registry)[1]["x"].describe()
    assert kept["z"] is plain and "z" not in sources
    assert report.select_runs({}, None) == ({}, {})


def test_rows_measured_on_changed_code_are_flagged_stale(tmp_path, git_repo, text_only):
    repo = git_repo.path
    first = git_repo.commit("fold_jax/a.py", "x = 1\n")
    second = git_repo.commit("bench/b.py", "y = 1\n")  # the code changed since the first
    head = git_repo.commit("README.md", "docs\n")  # only docs changed since the second
    out = repo / "results"
    rows, curves = _races()
    when = "2026-01-01T00:00:00+00:00"
    results.append("races", _as(rows, "20260101T000000Z-first0", when, git_commit=first),
                   key=RACE_KEY, results_dir=out)
    results.append("curves", _as(curves, "20260101T000000Z-nogit0", when, git_commit="f" * 40),
                   key=[*RACE_KEY, "step", "split", "metric"], results_dir=out)
    results.append("kernels", _as(_kernels(), "20260102T000000Z-second", when,
                                  git_commit=second), key=KERNEL_KEY, results_dir=out)
    text = _text(report.build(out, verbose=False))  # the checkout holding results/
    races = _section(text, "Time-to-target races")
    assert (f"> **Stale:** races.csv: it was measured at commit `{first[:8]}`; the code that "
            f"produces it has changed since in what it computes (HEAD `{head[:8]}`") in races
    assert "curves.csv: measured at commit `ffffffff`, which this checkout cannot" in races
    assert "Stale" not in _section(text, "Kernels")  # README changes do not count
    assert f"| {first[:8]} (stale) |" in text and f"| {second[:8]} |" in text
    assert f"Checkout at commit `{head[:8]}`" in text

    plain = tmp_path / "plain"  # no git at all: nothing flagged, nothing fails
    shutil.copytree(out, plain, ignore=shutil.ignore_patterns("REPORT.md", "figures"))
    text = _text(report.build(plain, verbose=False, repo=plain))
    assert "Stale" not in text and "cannot compare" not in text and "Checkout at" not in text
    assert f"_Source: run `20260101T000000Z-first0`, no run record, commit `{first[:8]}`" in text


def test_staleness_is_judged_by_the_code_fingerprint(tmp_path, monkeypatch):
    """Rows of a run with a fingerprint are stale when what the code computes changed,
    whatever git says: a checkout at another commit with the same code is not stale."""
    from fold_jax.results import fingerprint as fp

    rows, _ = _races()
    results.append("races", rows, key=RACE_KEY, results_dir=tmp_path)  # fingerprinted
    commit = results.metadata()["git_commit"]

    def source():
        frames = results.load(tmp_path)
        return report.select_runs(frames, results.runs(tmp_path), head="0" * 40,
                                  results_dir=tmp_path)[1]["races"]

    assert source().stale == () and source().unchecked == ()
    code = fp.current()
    edited = {**code, "zo": {**code["zo"], "value_and_grad": "0" * 16}}
    monkeypatch.setattr(fp, "current", lambda: edited)
    assert source().stale == (commit,)
    assert results.code_changes(tmp_path, results.run_id()) == ["zo.value_and_grad"]


# ----------------------------------------------------- statistics, profiles, figures


def _race(task, method, seed, t, variant="dense"):
    """A race row of cost ``t`` (seconds; steps = 10 t, evals = 100 t; inf = a miss)."""
    return {"task": task, "variant": variant, "method": method, "seed": seed,
            "reached": math.isfinite(t), "time_to_target_s": t, "steps_to_target": 10 * t,
            "evals_to_target": 100 * t}


def _profile_frame():
    """Three solvable problems and one nobody solves; sgd runs on the first only."""
    inf = math.inf
    rows = [_race("a", "adam", 0, 2.0), _race("a", "adam", 1, 2.0), _race("a", "sgd", 0, 1.0),
            _race("a", "zo", 0, 3.0), _race("a", "zo", 1, 5.0),  # median 4
            _race("b", "adam", 0, 2.0), _race("b", "zo", 0, inf),
            *[_race("c", "zo", s, t) for s, t in enumerate((3.0, 3.0, inf))],  # median 3
            _race("c", "adam", 0, 2.0),
            _race("d", "adam", 0, inf), _race("d", "zo", 0, inf)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("measure", list(races.MEASURES))
def test_profile_scores_every_method_on_the_union_of_problems(measure):
    frame = _profile_frame()
    ratios, unsolved = races.profile_ratios(frame, measure)
    assert list(ratios.index) == [("a", "dense"), ("b", "dense"), ("c", "dense")]
    assert unsolved == [("d", "dense")]  # no method reached the target: left out
    assert ratios.loc[("b", "dense"), "sgd"] == math.inf  # not run there: a miss
    profile = races.performance_profile(frame, measure)
    # best costs per problem: a 1 (sgd), b 2 (adam), c 2 (adam)
    # sgd: ratios 1, inf, inf -> it wins its only problem, yet rho stays at 1/3
    np.testing.assert_allclose(profile["sgd"][0], [1.0])
    np.testing.assert_allclose(profile["sgd"][1], [1 / 3])
    # adam: ratios 2, 1, 1
    np.testing.assert_allclose(profile["adam"][0], [1.0, 2.0])
    np.testing.assert_allclose(profile["adam"][1], [2 / 3, 1.0])
    # zo: medians over seeds 4, inf, 3 -> ratios 4, inf, 1.5
    np.testing.assert_allclose(profile["zo"][0], [1.0, 1.5, 4.0])
    np.testing.assert_allclose(profile["zo"][1], [0.0, 1 / 3, 2 / 3])


def test_bootstrap_median_intervals():
    median, low, high, n = _common.bootstrap_median([1.0, 2.0, 3.0, 4.0, 5.0])
    # P(resampled median == 1) = P(>= 3 of 5 draws are 1) = 0.058 > 2.5%: the bounds are
    # the extremes
    assert (median, low, high, n) == (3.0, 1.0, 5.0, 5)
    assert _common.bootstrap_median([5.0, 1.0, 4.0, 2.0, 3.0]) == (median, low, high, n)
    wide = _common.bootstrap_median(np.arange(100.0))
    assert wide[1] < wide[0] == 49.5 < wide[2] and wide[2] - wide[1] < 30
    # misses are +inf and stay in: the median and the bounds may be inf, never NaN
    assert _common.bootstrap_median([1.0, 2.0, math.inf]) == (2.0, 1.0, math.inf, 3)
    assert _common.bootstrap_median([math.inf] * 3) == (math.inf,) * 3 + (3,)
    # one seed: the value, no interval (not a zero-width one); NaN is no measurement
    for one in ([7.0], [math.nan, 7.0]):
        median, low, high, n = _common.bootstrap_median(one)
        assert (median, n) == (7.0, 1) and math.isnan(low) and math.isnan(high)
        assert _common.interval_text(low, high, n) == "n=1, no interval"
    assert _common.interval_text(1.0, math.inf, 3) == "[1, inf]"
    assert _common.interval_text(math.nan, math.nan, 0) == "-"


def test_method_styles_are_fixed_and_distinct():
    known = _common.KNOWN_METHODS
    assert known == recipes.names() and len(known) >= 17  # every recipe owns a slot
    names = [*known, "my_new_method"]
    styles = _common.method_styles(names)
    pairs = {(tuple(s["color"]), s["marker"]) for s in styles.values()}
    assert len(pairs) == len(names)  # distinct colour-marker pairs
    # up to 20 recipes the colours alone differ (tab20: 20 colours)
    assert len({tuple(styles[m]["color"]) for m in known}) == min(len(known), 20)
    # a method keeps its style whatever else is plotted (and in whatever order)
    for subset in (["adam"], ["sgd", "my_new_method"], names[::-1]):
        assert _common.method_styles(subset) == {m: styles[m] for m in subset}
    unknown = [f"method_{i}" for i in range(12)]
    u = _common.method_styles(unknown)
    assert len({(tuple(s["color"]), s["marker"]) for s in u.values()}) == 12
    assert _common.method_styles(unknown[::-1]) == u


def test_save_moves_axes_legends_outside(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8, 3))
    ax.plot([1, 2], [1, 2], label="a line")
    ax.legend(loc="best")
    ax2.bar([0, 1], [1, 2], label="bars")
    twin = ax2.twinx()
    twin.plot([0, 1], [10, 1000], color="r", label="twin")
    twin.set_yscale("log")
    twin.set_ylabel("a twin axis label")
    ax2.legend()
    link = _common.save(fig, tmp_path, "outside")
    assert link == "![outside](figures/outside.png)\n"
    assert (tmp_path / "outside.png").read_bytes()[:4] == b"\x89PNG"
    renderer = fig.canvas.get_renderer()
    assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
    assert (ax2.get_legend().get_window_extent(renderer).x0
            >= twin.get_tightbbox(renderer).x1 - 1)  # past the twin's ticks and label
    plt.close(fig)


def test_race_section_shows_intervals_seeds_and_the_problem_set(tmp_path, text_only):
    import matplotlib

    matplotlib.use("Agg")
    rows, curves = _races()
    extra = {"target_metric": "accuracy", "target": 0.9, "compile_s": 1.0,
             "final_test_metric": 0.95, "budget_s": 20.0, "n_params": 2410,
             "backend": "cpu", "device_kind": "cpu"}
    frame = pd.DataFrame([{**r, "backend": "cpu", "device_kind": "cpu"} for r in rows]
                         + [{**_race("digits", "sgd", 0, 0.5), **extra},
                            {**_race("digits", "adam", 2, 1.5), **extra}])
    curve_frame = pd.DataFrame([{**c, "backend": "cpu", "device_kind": "cpu"} for c in curves])
    curve_frame.loc[curve_frame["seed"] == 1, "value"] += 0.05  # a band to draw
    text = races.section({"races": frame, "curves": curve_frame}, tmp_path)
    lines = text.splitlines()

    def row(start):
        return next(line for line in lines if line.startswith(start))

    header = row("| task | method | seeds")
    for column in ("time 95% CI", "steps 95% CI", "evals 95% CI", "final metric 95% CI"):
        assert column in header
    assert "| 1 | [1, 1.5] |" in row("| digits | adam | 3 | 3/3 |")  # 1, 1, 1.5: median 1
    sgd = row("| digits | sgd | 1 | 1/1 |")
    assert "n=1, no interval" in sgd and "[" not in sgd
    gld = row("| digits | gld | 2 | 0/2 |")
    assert "| inf | [inf, inf] |" in gld
    assert "Problems: the 2 (task, variant) pairs raced" in text
    assert "`digits/dense`, `digits/pruned`" in text
    assert "Not run on every problem (each missing one counts as a miss): sgd 1/2." in text
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "races_metric_vs_time.png", "races_metric_vs_evals.png",
        "races_performance_profiles.png", "races_variants.png"}


def _region_rows(res=4):
    patterns = np.arange(res * res).reshape(res, res) // 3
    classes = (np.add.outer(np.arange(res), np.arange(res)) >= res).astype(int)
    common = dict(map="spirals_relu_d4_w32", resolution=res, box=2.5)
    maps = [dict(common, grid=kind, row=i, values=probes.encode_runs(cells[i]))
            for kind, cells in (("pattern", patterns), ("class", classes)) for i in range(res)]
    maps += [dict(common, grid=f"points_{k}", row=0,
                  values=probes.encode_points([[0.1 * k, -0.2], [1.0, 1.5]])) for k in (0, 1)]
    ids = dict(probe="region_map", task="spirals", activation="relu", depth=4, width=32,
               stage="trained", method="adam_1e-2", layer=None, threshold=None)
    summary = [dict(ids, metric=m, value=v) for m, v in (
        ("test_accuracy", 0.99), ("steps", 2000), ("learning_rate", 0.01),
        ("patterns", int(patterns.max()) + 1), ("components", 7))]
    return maps, summary


def test_the_report_is_a_pure_view_and_draws_the_region_map_from_rows(tmp_path, monkeypatch):
    from fold_jax.estimators import methods
    from fold_jax.learn import train

    def refuse(*args, **kwargs):
        raise AssertionError("the report must not train")

    monkeypatch.setattr(train, "fit", refuse)
    monkeypatch.setattr(methods, "gradient", refuse)
    maps, summary = _region_rows()
    results.append("region_maps", maps, key=results.key("region_maps"), results_dir=tmp_path)
    results.append("probes", summary, key=results.key("probes"), results_dir=tmp_path)
    text = _text(report.build(tmp_path, verbose=False))
    assert "Region map: a ReLU net of depth 4, width 32" in text
    assert "reaches test accuracy 0.99" in text and "6 activation patterns in 7" in text
    assert (tmp_path / "figures" / "probes_spirals_regions.png").stat().st_size > 0
    assert (tmp_path / "COLUMNS.md").read_text() == results.columns_markdown()


def test_without_region_map_rows_the_report_says_which_job_makes_them(tmp_path, text_only):
    _, summary = _region_rows()
    results.append("probes", summary, key=results.key("probes"), results_dir=tmp_path)
    text = _text(report.build(tmp_path, verbose=False))
    assert "-k region_map" in text and not (tmp_path / "figures" /
                                            "probes_spirals_regions.png").exists()


@given(st.lists(st.integers(0, 5), max_size=60))
def test_run_length_codes_round_trip(values):
    assert probes.decode_runs(probes.encode_runs(values)).tolist() == values
    assert len(probes.encode_runs(values).split()) <= len(values)


def test_points_round_trip_to_the_decimals_kept():
    xy = np.array([[0.12345, -1.5], [2.0, 3.25]])
    np.testing.assert_allclose(probes.decode_points(probes.encode_points(xy)), xy, atol=5e-4)
    assert probes.decode_points("").shape == (0, 2)


def test_old_kernel_rows_are_read_in_todays_column_meanings():
    frame = pd.DataFrame([
        {"bench": "xnor_matmul", "method": "xnor_packed", "frac_of_inference": 4.6,
         "inference_equiv_s": 1e-3, "num_directions": math.nan, "chunk_size": math.nan},
        {"bench": "zo_fused_lowrank", "method": "zo", "frac_of_inference": 1.1,
         "inference_equiv_s": 1e-3, "num_directions": 128, "chunk_size": 16}])
    out = kernels.harmonize(frame)
    assert out["speedup_vs_dense"].iloc[0] == 4.6 and math.isnan(out["frac_of_inference"].iloc[0])
    assert out["dense_median_s"].iloc[0] == 1e-3
    assert out["frac_of_inference"].iloc[1] == 1.1 and math.isnan(out["speedup_vs_dense"].iloc[1])
    assert "frac_of_inference" in frame and frame["frac_of_inference"].iloc[0] == 4.6  # a copy
    row = {"method": "zo", "num_directions": 128, "rank": 4}
    assert kernels.label({**row, "chunk_size": 128}) == "zo r=4"  # one chunk: not chunked
    assert kernels.label({**row, "chunk_size": 16}) == "zo r=4 chunk=16"
    assert kernels.label({**row, "chunk_size": 0, "rank": 0}) == "zo"  # old spelling
