"""fold_jax.report: builds REPORT.md and figures from small synthetic CSVs in a tmp dir."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fold_jax import report, results
from fold_jax.report import _common, races

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


def test_build_writes_report_and_figures(filled):
    (filled / "figures").mkdir()
    (filled / "figures" / "stale_from_an_old_build.png").write_bytes(b"old")
    path = report.build(filled, verbose=False)
    assert path == filled / "REPORT.md"
    text = path.read_text()
    for heading in ("## Kernels", "## Time-to-target races", "### Performance profiles",
                    "### Dense vs binarized vs pruned", "## Scaling"):
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
    assert "_Skipped: no scaling data._" in text or "## Scaling\n\n_Skipped" in text
    assert not list(filled.glob(".report.*"))  # temporary build dir cleaned up
    assert "stale_from_an_old_build.png" not in figures


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


def test_missing_sections_and_data_are_reported(tmp_path):
    _, curves = _races()
    results.append("curves", curves[:3], key=[*RACE_KEY, "step"], results_dir=tmp_path)
    assert report.main(["--results-dir", str(tmp_path)]) == 0  # the command-line entry
    text = (tmp_path / "REPORT.md").read_text()
    assert "| curves.csv | 3 | 1 |" in text
    assert "_Skipped: no kernels data._" in text and "_Skipped: no races data._" in text
    assert "_Skipped: no scaling data._" in text


def test_malformed_results_stop_the_build_with_the_file_named(filled):
    path = filled / "races.csv"
    frame = pd.read_csv(path).astype({"seed": object})
    frame.loc[1, "seed"] = "one"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"races\.csv: row 2 \(line 3\): column 'seed'"):
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


def test_report_describes_the_host_that_wrote_the_newest_row():
    old = pd.DataFrame({"host": ["a", "b"], "timestamp_utc": ["2026-01-03T00:00:00",
                                                              "2026-01-02T00:00:00"], "v": [1, 2]})
    other = pd.DataFrame({"host": ["b"], "timestamp_utc": ["2026-01-01T00:00:00"], "v": [3]})
    plain = pd.DataFrame({"v": [4]})  # no metadata: kept
    kept, others = report.newest_host({"x": old, "y": other, "z": plain})
    assert list(kept["x"]["v"]) == [1] and kept["y"].empty and list(kept["z"]["v"]) == [4]
    assert others == ["b"]
    assert report.newest_host({"z": plain}) == ({"z": plain}, [])
