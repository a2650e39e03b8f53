"""bench.run (resume, interrupts, failures), the races suite and the kernel_row fixture."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from bench import run, suite_races
from bench.common import Job
from fold_jax import results

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys, time, types
    from bench import run
    from bench.common import Job
    out, n, pause, fail_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    suite = types.ModuleType("suite_fake")
    suite.FILE, suite.KEY, suite.KEYS = "fake", ["i"], {"fakecurves": ["i", "j"]}

    def make(i):
        def job():
            time.sleep(pause)
            if i == fail_at:
                raise RuntimeError("boom")
            return {"fake": [{"v": i * i}], "fakecurves": [{"i": i, "j": j} for j in range(3)]}
        return job

    suite.jobs = lambda profile: [Job({"i": i}, make(i), f"job{i}", 1.0) for i in range(n)]
    sys.exit(run.main(["--results-dir", out, "--no-report"], suites={"fake": suite}))
""")


def _start(out, n=12, pause=0.0, fail_at=-1):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(n), str(pause),
                             str(fail_at)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _count(path):
    try:
        return len(results.load(path))
    except (FileNotFoundError, ValueError):
        return 0


def _check_complete(out, n):
    fake = results.load(out / "fake.csv")
    curves = results.load(out / "fakecurves.csv")
    assert sorted(fake["i"]) == list(range(n))
    assert (fake["v"] == fake["i"] ** 2).all()
    assert len(curves) == 3 * n
    assert not curves.duplicated(["i", "j"]).any()


def _fake_suite(n, fail_at=-1):
    suite = types.SimpleNamespace(FILE="fake", KEY=["i"], KEYS={"fakecurves": ["i", "j"]})

    def make(i):
        def job():
            if i == fail_at:
                raise RuntimeError("boom")
            return {"fake": [{"v": i * i}], "fakecurves": [{"i": i, "j": j} for j in range(3)]}

        return job

    suite.jobs = lambda profile: [Job({"i": i}, make(i), f"job{i}", 1.0) for i in range(n)]
    return suite


def test_failing_job_is_reported_and_the_rest_saved_then_resumed(tmp_path, capsys):
    argv = ["--results-dir", str(tmp_path), "--no-report"]
    assert run.main(argv, suites={"fake": _fake_suite(6, fail_at=3)}) == 1
    assert "FAILED fake:job3: RuntimeError: boom" in capsys.readouterr().err
    assert sorted(results.load(tmp_path / "fake.csv")["i"]) == [0, 1, 2, 4, 5]
    assert run.main(argv, suites={"fake": _fake_suite(6)}) == 0
    assert "1 jobs to run, 5 already in" in capsys.readouterr().out
    _check_complete(tmp_path, 6)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path, sig):
    proc = _start(tmp_path, n=12, pause=0.15)
    deadline = time.time() + 60
    while _count(tmp_path / "fake.csv") < 3 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    saved = set(results.load(tmp_path / "fake.csv")["i"])
    assert 3 <= len(saved) < 12
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "interrupted during fake:job" in err and "Rerun the same command" in err
    proc = _start(tmp_path, n=12)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"{12 - len(saved)} jobs to run, {len(saved)} already in" in out
    _check_complete(tmp_path, 12)


def test_write_rows_fills_keys_and_rejects_undeclared_files(tmp_path):
    suite = types.SimpleNamespace(FILE="fake", KEY=["i"], KEYS={})
    job = Job({"i": 1}, lambda: [])
    assert run.write_rows(suite, job, [{"v": 2}], str(tmp_path)) == 1
    assert results.load(tmp_path / "fake.csv")["i"].tolist() == [1]
    with pytest.raises(ValueError, match="declare KEYS"):
        run.write_rows(suite, job, {"fake": [], "other": [{"i": 1}]}, str(tmp_path))
    suite.jobs = lambda profile: [Job({"i": i}, lambda: [], f"job{i}") for i in range(3)]
    todo, n_done = run.pending(suite, "quick", str(tmp_path), None)
    assert n_done == 1 and [j.key["i"] for j in todo] == [0, 2]
    todo, _ = run.pending(suite, "quick", str(tmp_path), "job2")
    assert [j.key["i"] for j in todo] == [2]


def test_unknown_part_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        run.main(["--only", "nonsense"], suites={"fake": types.SimpleNamespace()})
    assert e.value.code == 2
    assert "--only nonsense: not known; allowed: fake" in capsys.readouterr().err


def test_race_suite_rows_follow_the_schema():
    jobs = list(suite_races.jobs("quick"))
    labels = [j.label for j in jobs]
    assert len(labels) == len(set(labels)) > 0
    assert all(set(j.key) <= set(suite_races.KEY) for j in jobs)
    out = suite_races.race("breast_cancer", "adam", "dense", 0, 0.3)
    (row,) = out["races"]
    assert set(results.SCHEMAS["races"]) <= set(row)
    assert row["reached"] == math.isfinite(row["time_to_target_s"])
    curves = out["curves"]
    assert curves and set(results.SCHEMAS["curves"]) <= set(curves[0])
    assert {c["split"] for c in curves} >= {"train", "test"}


def test_kernel_row_appends_once_then_skips(tmp_path, capsys):
    args = [str(ROOT / "bench" / "test_core_kernels.py"), "-q", "-p", "no:cacheprovider",
            "-k", "test_forward and 32-32", f"--results-dir={tmp_path}", "--benchmark-disable"]
    assert pytest.main(args) == 0, capsys.readouterr().out
    frame = results.load(tmp_path / "kernels.csv")
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["bench"] == "forward" and row["batch_size"] == 32 and row["step_median_s"] > 0
    assert row["flops"] > 0 and row["mem_bytes"] > 0 and row["inference_equiv_s"] > 0
    capsys.readouterr()
    assert pytest.main(args) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert len(results.load(tmp_path / "kernels.csv")) == 1


def test_unwritable_results_dir_stops_before_any_job(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = ["--results-dir", str(blocker / "results"), "--no-report"]
    assert run.main(argv, suites={"fake": _fake_suite(3)}) == 1
    err = capsys.readouterr().err
    assert "cannot write results" in err and str(blocker) in err


def test_disk_full_mid_run_stops_cleanly_and_resumes(tmp_path, capsys, monkeypatch):
    argv = ["--results-dir", str(tmp_path), "--no-report"]
    real, calls = results.append, []

    def flaky(name, rows, **kwargs):
        calls.append(name)
        if len(calls) > 4:  # jobs 0 and 1 saved (curves + fake each), then the disk is full
            raise OSError(28, "No space left on device")
        return real(name, rows, **kwargs)

    monkeypatch.setattr(results, "append", flaky)
    assert run.main(argv, suites={"fake": _fake_suite(5)}) == 1
    err = capsys.readouterr().err
    assert "stopping: cannot write the results of fake:job2" in err
    assert "No space left on device" in err and "saved 2 jobs" in err
    monkeypatch.setattr(results, "append", real)
    assert sorted(results.load(tmp_path / "fake.csv")["i"]) == [0, 1]
    assert run.main(argv, suites={"fake": _fake_suite(5)}) == 0
    _check_complete(tmp_path, 5)
