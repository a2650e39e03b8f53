"""fold_jax.bench.run (runs, resume, interrupts, failures) and the races suite (the kernels suite:
tests/test_suite_kernels.py)."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from fold_jax import results
from fold_jax.bench import run
from fold_jax.bench.common import Job
from fold_jax.bench.suites import races as suite_races

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import signal, sys, time, types
    # Ctrl-C as in a terminal: a shell without job control starts background commands
    # with SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from fold_jax.bench import run
    from fold_jax.bench.common import Job
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
    assert "1 jobs to run, 5 already written by this run" in capsys.readouterr().out
    _check_complete(tmp_path, 6)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path, capsys, sig):
    """A child process runs the suite and is interrupted (a signal needs a process of its
    own); the resume runs here, in the test's process, as a rerun of the same command
    would (a second child would only add a Python + jax import)."""
    proc = _start(tmp_path, n=12, pause=0.15)
    deadline = time.time() + 60
    while _count(tmp_path / "fake.csv") < 3 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    first = results.load(tmp_path / "fake.csv")
    saved, (rid,) = set(first["i"]), set(first["run_id"])
    assert 3 <= len(saved) < 12
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "interrupted during fake:job" in err and "Rerun the same command" in err
        assert _registry(tmp_path)[rid] == "interrupted"
    else:
        assert _registry(tmp_path)[rid] == "running"  # killed: no chance to say more
    assert run.main(["--results-dir", str(tmp_path), "--no-report"],
                    suites={"fake": _fake_suite(12)}) == 0
    out = capsys.readouterr().out
    assert f"resuming run {rid}" in out
    assert f"{12 - len(saved)} jobs to run, {len(saved)} already written by this run {rid}" in out
    _check_complete(tmp_path, 12)
    assert set(results.load(tmp_path / "fake.csv")["run_id"]) == {rid}
    assert _registry(tmp_path) == {rid: "finished"} and results.resumable(tmp_path) == []


def _registry(out) -> dict[str, str]:
    """run id -> status, from runs.csv."""
    return dict(zip(*(results.runs(out)[c] for c in ("run_id", "status")), strict=True))


def _foreign_rows(out, n, run="20250101T000000Z-ref000"):
    """Rows of every job written by another run on this very machine (same host, backend,
    devices): the committed reference run on a machine named like the reference's."""
    meta = results.metadata()
    rows = [{**meta, "run_id": run, "i": i, "v": -1} for i in range(n)]
    results.append("fake", rows, key=["i"], results_dir=out)
    return run


def test_resume_continues_only_the_interrupted_run(tmp_path, capsys):
    argv = ["--results-dir", str(tmp_path), "--no-report"]
    ref = _foreign_rows(tmp_path, 6)
    assert run.main(argv, suites={"fake": _fake_suite(6, fail_at=3)}) == 1
    out = capsys.readouterr().out
    assert "new run" in out and "6 jobs to run, 0 already written by this run" in out
    (rid,) = set(_registry(tmp_path))
    assert _registry(tmp_path) == {rid: "failed"}
    assert [r["run_id"] for r in results.resumable(tmp_path)] == [rid]
    assert run.main(argv, suites={"fake": _fake_suite(6)}) == 0
    out = capsys.readouterr().out
    assert f"resuming run {rid}" in out
    assert f"1 jobs to run, 5 already written by this run {rid}" in out
    assert f"run {rid} finished" in out
    frame = results.load(tmp_path / "fake.csv")
    assert frame.groupby("run_id")["i"].apply(sorted).to_dict() == {ref: list(range(6)),
                                                                     rid: list(range(6))}
    assert (frame[frame["run_id"] == ref]["v"] == -1).all()  # the other run's rows untouched
    record = results.runs(tmp_path).set_index("run_id").loc[rid]
    assert record["status"] == "finished" and record["attempts"] == "2"
    assert record["profile"] == "quick" and record["parts"] == "fake"
    assert record["host"] == results.metadata()["host"] and record["finished_utc"]
    assert results.resumable(tmp_path) == [] and not (tmp_path / ".partial").exists()


def test_a_new_run_after_a_finished_one_measures_everything(tmp_path, capsys):
    argv = ["--results-dir", str(tmp_path), "--no-report"]
    assert run.main(argv, suites={"fake": _fake_suite(4)}) == 0
    capsys.readouterr()
    assert run.main(argv, suites={"fake": _fake_suite(4)}) == 0  # same command, same host
    out = capsys.readouterr().out
    assert "resuming" not in out and "new run" in out
    assert "4 jobs to run, 0 already written by this run" in out
    frame = results.load(tmp_path / "fake.csv")
    assert frame.groupby("run_id")["i"].apply(sorted).tolist() == [[0, 1, 2, 3]] * 2
    assert len(set(frame["host"])) == 1
    assert sorted(_registry(tmp_path).values()) == ["finished", "finished"]


def test_the_committed_reference_rows_are_never_skipped(tmp_path, monkeypatch):
    """The bug: on a machine named like the reference's ("vm"), resume skipped every job
    the committed results held. Only the current run's rows count: the committed runs'
    rows, and a reference run that holds a row for every current job, on this very
    machine, leave a new run with everything to do."""
    shutil.copytree(ROOT / "results" / "reference", tmp_path / "reference")
    committed = results.load(tmp_path)["races"]
    machine = committed.iloc[0][list(results.MACHINE_KEY)].to_dict()
    real = results.metadata
    monkeypatch.setattr(results, "metadata", lambda: {**real(), **machine})
    jobs = list(suite_races.jobs("quick"))
    ref_run = results.new_run_id()
    previous = results.set_run_id(ref_run)
    try:
        template = {k: v for k, v in committed.iloc[0].items()
                    if k not in results.META_COLUMNS}  # a real row's other columns
        results.append("races", [{**template, **j.key, **machine} for j in jobs],
                       key=suite_races.KEY, results_dir=tmp_path)
    finally:
        results.set_run_id(previous)
    for run_id in (None, results.new_run_id()):
        todo, n_done = run.pending(suite_races, "quick", str(tmp_path), None, run_id)
        assert (len(todo), n_done) == (len(jobs), 0), run_id
    # A committed run's rows could only count if that run became the current one again:
    # a fresh clone has no resume marks, so select_run starts a new run and refuses each
    # committed id by name (finished runs are never resumed; the reference records them).
    options = {"profile": "quick", "parts": "races", "filter": ""}
    record, rid, _ = run.select_run(str(tmp_path), options, results.metadata())
    assert record is None and rid not in set(committed["run_id"])
    for run_id in set(committed["run_id"]):
        with pytest.raises(run.RunChoiceError, match=run_id):
            run.select_run(str(tmp_path), options, results.metadata(), resume=run_id)
    _, n_done = run.pending(suite_races, "quick", str(tmp_path), None, ref_run)
    assert n_done == len(jobs)  # the keys do match: what counted before was the host alone


def test_new_and_resume_choose_the_run(tmp_path, capsys):
    argv = ["--results-dir", str(tmp_path), "--no-report"]
    assert run.main(argv, suites={"fake": _fake_suite(6, fail_at=3)}) == 1
    (first,) = _registry(tmp_path)
    assert run.main([*argv, "--new"], suites={"fake": _fake_suite(6, fail_at=3)}) == 1
    out = capsys.readouterr().out
    (second,) = set(_registry(tmp_path)) - {first}
    assert "6 jobs to run, 0 already written by this run " + second in out
    assert run.main(argv, suites={"fake": _fake_suite(6)}) == 0  # the newest unfinished one
    assert f"1 jobs to run, 5 already written by this run {second}" in capsys.readouterr().out
    assert run.main([*argv, "--resume", first], suites={"fake": _fake_suite(6)}) == 0
    assert f"1 jobs to run, 5 already written by this run {first}" in capsys.readouterr().out
    assert _registry(tmp_path) == {first: "finished", second: "finished"}
    assert run.main([*argv, "--resume", first], suites={"fake": _fake_suite(6)}) == 2
    assert "a finished run is never resumed" in capsys.readouterr().err
    assert run.main([*argv, "--resume", "20200101T000000Z-nope00"],
                    suites={"fake": _fake_suite(6)}) == 2
    assert "is not known" in capsys.readouterr().err
    assert run.main([*argv, "-k", "job1"], suites={"fake": _fake_suite(6, fail_at=1)}) == 1
    (third,) = set(_registry(tmp_path)) - {first, second}
    capsys.readouterr()
    assert run.main([*argv, "--resume", third, "-k", "job2"],
                    suites={"fake": _fake_suite(6)}) == 2  # not the command it started with
    assert "was started with --profile quick --only fake -k job1" in capsys.readouterr().err
    assert run.main([*argv, "--resume", third], suites={"fake": _fake_suite(6)}) == 0
    out = capsys.readouterr().out
    assert f"1 jobs to run, 0 already written by this run {third}" in out  # -k job1 kept
    assert len(results.load(tmp_path / "fake.csv")) == 6 + 6 + 1


def test_a_run_is_not_resumed_once_the_code_changed(tmp_path, capsys):
    argv = ["--results-dir", str(tmp_path), "--no-report"]
    assert run.main(argv, suites={"fake": _fake_suite(6, fail_at=3)}) == 1
    (rid,) = _registry(tmp_path)
    mark = tmp_path / ".partial" / f"{rid}.json"
    record = json.loads(mark.read_text())
    mark.write_text(json.dumps({**record, "git_commit": "0" * 40}))  # started at other code
    capsys.readouterr()
    assert run.main(argv, suites={"fake": _fake_suite(6)}) == 0
    out = capsys.readouterr().out
    assert f"not resuming unfinished run {rid}: it started at commit 00000000" in out
    assert "6 jobs to run, 0 already written by this run" in out
    assert run.main([*argv, "--resume", rid], suites={"fake": _fake_suite(6)}) == 2
    assert f"cannot resume run {rid}: it started at commit 00000000" in capsys.readouterr().err


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


def test_a_suite_outside_a_profiles_default_run_runs_only_when_named(tmp_path, capsys):
    """DEFAULT_PROFILES: without --only the suite is left out of the quick run (saying
    how to run it) and runs in full; --only runs it under any profile, and the real
    hypotheses suite is declared so (its quick profile alone outlasts the quick run)."""
    opt_in = _fake_suite(2)
    opt_in.FILE, opt_in.KEYS, opt_in.DEFAULT_PROFILES = "optin", {}, ("full",)
    opt_in.jobs = lambda profile: [Job({"i": i}, lambda i=i: [{"v": i}], f"o{i}", 1.0)
                                   for i in range(2)]
    suites = {"fake": _fake_suite(3), "optin": opt_in}
    assert run.default_parts(list(suites), "quick", suites) == (["fake"], ["optin"])
    assert run.default_parts(list(suites), "full", suites) == (["fake", "optin"], [])
    argv = ["--results-dir", str(tmp_path), "--no-report"]
    assert run.main(argv, suites=suites) == 0
    out = capsys.readouterr().out
    assert "optin: not part of the default quick run" in out and "--only optin" in out
    assert not (tmp_path / "optin.csv").exists()
    assert sorted(results.load(tmp_path / "fake.csv")["i"]) == [0, 1, 2]
    assert run.main([*argv, "--only", "optin"], suites=suites) == 0
    assert sorted(results.load(tmp_path / "optin.csv")["i"]) == [0, 1]
    names = run.discover()
    assert run.default_parts(names, "quick")[1] == ["hypotheses", "lm"]
    assert run.default_parts(names, "full") == (names, [])
