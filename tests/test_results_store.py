"""The results store's layout (one directory per run, metadata once), references,
archives, code fingerprints and the migration of the flat files."""

from __future__ import annotations

import gzip
import json
import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from fold_jax import results
from fold_jax.results import fingerprint as fp
from fold_jax.results import migrate as migration
from fold_jax.results.__main__ import main

KEY = ["task", "method", "variant", "seed", "budget_s"]
RUN_A, RUN_B = "20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb"


def race_row(seed, **extra):
    return {"task": "digits", "method": "adam", "variant": "dense", "seed": seed,
            "target_metric": "accuracy", "target": 0.95, "reached": True,
            "steps_to_target": 100.0, "evals_to_target": 100.0, "time_to_target_s": 0.5,
            "compile_s": 1.0, "final_test_metric": 0.96, "budget_s": 2.0, "n_params": 2410,
            **extra}


def curve_row(step, **extra):
    return {"task": "digits", "method": "adam", "variant": "dense", "seed": 0, "step": step,
            "evals": step, "elapsed_s": 0.1 * step, "split": "test", "metric": "accuracy",
            "value": 0.5, **extra}


@pytest.fixture
def as_run():
    previous = results.set_run_id(None)
    results.set_run_id(previous)
    yield results.set_run_id
    results.set_run_id(previous)


def header(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().split("\n")[0].split(",")


def finished_run(root, run, rows, as_run, name="races", key=KEY):
    as_run(run)
    results.append(name, rows, key=key, results_dir=root)
    results.record_run(root, {"run_id": run, "status": "finished"})


# -------------------------------------------------------------------------------- layout


def test_metadata_is_stored_once_per_run_and_joined_back(tmp_path, as_run):
    as_run(RUN_A)
    results.append("races", [race_row(0), race_row(1)], key=KEY, results_dir=tmp_path)
    directory = results.run_dir(tmp_path, RUN_A)
    record = json.loads((directory / "run.json").read_text())
    meta = results.metadata()
    assert record["meta"] == {c: meta[c] for c in results.META_COLUMNS
                              if c not in ("run_id", "timestamp_utc")}
    assert record["kind"] == results.machine_kind(meta)
    assert record["fingerprint"] == fp.digest(fp.current())
    stored = header(directory / "races.csv.gz")
    # only the per-row time stamp of the metadata is in the rows
    assert set(stored) & set(results.META_COLUMNS) == {"timestamp_utc"}
    frame = results.load(tmp_path)["races"]
    assert list(frame.columns[:len(results.META_COLUMNS)]) == list(results.META_COLUMNS)
    assert (frame["run_id"] == RUN_A).all() and (frame["host"] == meta["host"]).all()


def test_a_metadata_value_that_differs_from_the_runs_stays_in_the_rows(tmp_path, as_run):
    """The scaling suite's subprocess sees forced host devices: its rows keep their own
    device_kind and n_devices, the others share the run's."""
    as_run(RUN_A)
    results.append("curves", [curve_row(0)], key=["step"], results_dir=tmp_path)
    forced = {"method": "zo", "throughput": 1.0, "devices": 4, "device_kind": "cpu x4",
              "n_devices": 4}
    results.append("scaling", [forced], key=["method", "devices"], results_dir=tmp_path)
    directory = results.run_dir(tmp_path, RUN_A)
    assert {"device_kind", "n_devices"} <= set(header(directory / "scaling.csv.gz"))
    assert "device_kind" not in header(directory / "curves.csv.gz")
    frames = results.load(tmp_path)
    assert frames["scaling"][["device_kind", "n_devices"]].values.tolist() == [["cpu x4", 4]]
    assert frames["curves"]["device_kind"].tolist() == [results.metadata()["device_kind"]]
    # a later row with the run's own value: the column is complete in the file
    results.append("scaling", [{**forced, "devices": 1, "device_kind": results.metadata()[
        "device_kind"]}], key=["method", "devices"], results_dir=tmp_path)
    kinds = results.load(tmp_path)["scaling"]["device_kind"].tolist()
    assert kinds == ["cpu x4", results.metadata()["device_kind"]]


def test_a_run_whose_first_rows_override_the_machine_keeps_the_machines_kind(tmp_path, as_run):
    """A scaling-only run writes forced-host-device rows first: the run record's
    metadata and kind (which reference it promotes to) are still this machine's."""
    as_run(RUN_A)
    forced = {"method": "zo", "throughput": 1.0, "devices": 4, "device_kind": "cpu x4",
              "n_devices": 4}
    results.append("scaling", [forced], key=["method", "devices"], results_dir=tmp_path)
    record = json.loads((results.run_dir(tmp_path, RUN_A) / "run.json").read_text())
    meta = results.metadata()
    assert record["meta"]["device_kind"] == meta["device_kind"] != "cpu x4"
    assert record["kind"] == results.machine_kind(meta)
    assert results.load(tmp_path, run=RUN_A)["scaling"]["device_kind"].tolist() == ["cpu x4"]


def test_rows_go_to_the_directory_of_their_run_id(tmp_path, as_run):
    as_run(RUN_A)
    rows = [race_row(0), {**race_row(0), "run_id": RUN_B, "git_commit": "b" * 40}]
    assert results.append("races", rows, key=KEY, results_dir=tmp_path) == 2
    assert results.done_keys("races", ["seed"], tmp_path, run=RUN_B) == {("0",)}
    everything = results.load(tmp_path, run=results.ALL_RUNS)["races"]
    assert everything.set_index("run_id")["git_commit"][RUN_B] == "b" * 40
    assert not results.read_run(results.run_dir(tmp_path, RUN_B)).get("fingerprint")
    assert results.load(tmp_path / "races.csv").equals(results.load(tmp_path)["races"])
    with pytest.raises(FileNotFoundError, match="no results file"):
        results.load(tmp_path / "kernels.csv")


# ----------------------------------------------------------------------------- reference


def test_promote_makes_the_reference_that_load_reads_by_default(tmp_path, as_run):
    finished_run(tmp_path, RUN_A, [race_row(0), race_row(1)], as_run)
    results.append("curves", [curve_row(s) for s in range(3)], key=["step"],
                   results_dir=tmp_path)
    finished_run(tmp_path, RUN_B, [race_row(5)], as_run)
    assert sorted(results.load(tmp_path)["races"]["run_id"].unique()) == [RUN_A, RUN_B]
    out = results.promote(RUN_A, tmp_path)
    kind = results.machine_kind(results.metadata())
    assert out["kind"] == kind and sorted(out["replaced"]) == ["curves", "races"]
    loaded = results.load(tmp_path)  # the reference now
    assert set(loaded["races"]["run_id"]) == {RUN_A} and len(loaded["curves"]) == 3
    assert results.default_kind(tmp_path) == kind and results.kinds(tmp_path) == [kind]
    reference = tmp_path / "reference" / kind
    before = {p.name: p.stat().st_mtime_ns for p in reference.glob("*.csv.gz")}
    assert results.promote(RUN_A, tmp_path)["unchanged"] == ["curves", "races"]
    assert {p.name: p.stat().st_mtime_ns for p in reference.glob("*.csv.gz")} == before
    out = results.promote(RUN_B, tmp_path)  # replaces races only; curves keep run A's
    assert out["replaced"] == ["races"] and out["kept"] == {"curves": RUN_A}
    loaded = results.load(tmp_path)
    assert set(loaded["races"]["run_id"]) == {RUN_B} and set(loaded["curves"]["run_id"]) == {
        RUN_A}
    manifest = json.loads((reference / "reference.json").read_text())
    assert manifest["files"] == {"curves": RUN_A, "races": RUN_B}
    assert sorted(manifest["runs"]) == [RUN_A, RUN_B]
    table = results.runs(tmp_path).set_index("run_id")
    assert table.loc[RUN_B, "reference"] == kind
    # the reference survives the runs' directories: it is what git keeps
    results.archive([RUN_A, RUN_B], tmp_path, to=tmp_path / "archive")
    assert results.load(tmp_path)["races"]["seed"].tolist() == [5]
    assert results.code_changes(tmp_path, RUN_A) == []  # its fingerprint is kept


def test_promote_refuses_what_it_cannot_vouch_for(tmp_path, as_run):
    as_run(RUN_A)
    results.append("races", [race_row(0)], key=KEY, results_dir=tmp_path)
    results.record_run(tmp_path, {"run_id": RUN_A, "status": "interrupted"})
    with pytest.raises(ValueError, match="interrupted"):
        results.promote(RUN_A, tmp_path)
    assert results.promote(RUN_A, tmp_path, allow_unfinished=True)["replaced"] == ["races"]
    with pytest.raises(ValueError, match="no rows"):
        results.promote(RUN_B, tmp_path)
    with pytest.raises(ValueError, match="kind"):
        results.promote(RUN_A, tmp_path, kind="Not A Slug", allow_unfinished=True)
    with pytest.raises(ValueError, match="no rows of"):
        results.promote(RUN_A, tmp_path, files=["kernels"], allow_unfinished=True)
    with pytest.raises(ValueError, match="no reference of kind"):
        results.load(tmp_path, kind="gpu-other-1dev")


def test_archive_and_unarchive_through_the_command_line(tmp_path, as_run, capsys):
    finished_run(tmp_path, RUN_A, [race_row(0)], as_run)
    results.mark_resumable(tmp_path, {"run_id": RUN_A})
    rows = results.load(tmp_path, run=RUN_A)["races"]
    dest = tmp_path / "elsewhere"
    assert main(["--results-dir", str(tmp_path), "archive", RUN_A, "--to", str(dest)]) == 0
    assert not results.run_dir(tmp_path, RUN_A).exists() and results.resumable(tmp_path) == []
    with pytest.raises(ValueError, match="no run"):
        results.archive([RUN_A], tmp_path, to=dest)
    assert main(["--results-dir", str(tmp_path), "unarchive",
                 str(dest / f"{RUN_A}.tar.gz")]) == 0
    pd.testing.assert_frame_equal(results.load(tmp_path, run=RUN_A)["races"], rows)
    assert main(["--results-dir", str(tmp_path), "promote", RUN_A]) == 0
    assert main(["--results-dir", str(tmp_path), "stale"]) == 0
    assert f"{RUN_A}: current" in capsys.readouterr().out


def test_machine_kind_is_a_slug_of_the_machine():
    cpu = {"backend": "cpu", "device_kind": "cpu", "n_devices": 1,
           "cpu_model": "Intel(R) Xeon(R) Processor (x86_64, 2 cores, avx512)"}
    assert results.machine_kind(cpu) == "cpu-intel-xeon-processor-x86-64-2-cores-avx512-1dev"
    gpu = {"backend": "gpu", "device_kind": "NVIDIA H100 80GB HBM3", "n_devices": 8.0,
           "cpu_model": "AMD EPYC 7R13 (x86_64, 16 cores)"}
    assert results.machine_kind(gpu) == (
        "gpu-nvidia-h100-80gb-hbm3-amd-epyc-7r13-x86-64-16-cores-8dev")
    assert results.machine_kind({}) == "unknown-unknown-unknowndev"
    long = results.machine_kind({**gpu, "cpu_model": "x" * 300})
    assert len(long) == 100 and long != results.machine_kind({**gpu, "cpu_model": "x" * 301})


# --------------------------------------------------------------------------- fingerprint

MODULE = textwrap.dedent('''
    """A module."""
    import numpy as np
    from fold_jax import zo

    __all__ = ["step", "SCALE"]
    SCALE = 2.0  # the scale


    def step(x):
        """Docs."""
        # a comment
        return zo.f(x) * SCALE


    def unused(x):
        return x


    if np is not None:
        REGISTER = True
''')


@pytest.mark.parametrize(("edit", "stale"), [
    (lambda s: s.replace("# a comment", "# another comment"), False),
    (lambda s: s.replace('"""Docs."""', '"""Other docs, longer."""'), False),
    (lambda s: s.replace('"""A module."""', ""), False),
    (lambda s: s.replace("  # the scale", ""), False),
    (lambda s: s.replace("def unused(x):\n    return x\n", ""), False),  # dead code
    (lambda s: s + "\ndef helper():\n    return 1\n", False),  # unused addition
    (lambda s: s.replace('"step", "SCALE"', '"step"'), False),  # __all__
    (lambda s: s.replace("from fold_jax import zo", "from fold_jax.estimators import zo"),
     False),  # the module moved
    (lambda s: s.replace("\n\n\ndef step", "\n\ndef step"), False),  # blank lines
    (lambda s: s.replace("SCALE = 2.0", "SCALE = 3.0"), True),
    (lambda s: s.replace("* SCALE", "/ SCALE"), True),
    (lambda s: s.replace("REGISTER = True", "REGISTER = False"), True),  # unnamed statement
    (lambda s: s.replace("zo.f(x)", "zo.g(x)"), True),
    (lambda s: s.replace("import numpy as np", "import numpy as np\nimport jax.numpy as np"),
     True),  # the name now means another object
])
def test_fingerprint_changes_only_with_what_the_code_computes(edit, stale):
    old = fp.fingerprint({"fold_jax/mod.py": MODULE})
    new = fp.fingerprint({"fold_jax/mod.py": edit(MODULE)})
    assert bool(fp.changes(old, new)) is stale
    assert fp.changes(old, old) == []


def test_fingerprint_keys_modules_by_stem_not_path():
    before = fp.fingerprint({"bench/suite_races.py": MODULE, "bench/__init__.py": "",
                             "fold_jax/zo.py": "x = 1\n"})
    moved = fp.fingerprint({"fold_jax/bench/suite_races.py": MODULE,
                            "fold_jax/bench/__init__.py": "", "fold_jax/zo.py": "x = 1\n"})
    assert before == moved and fp.digest(before) == fp.digest(moved)
    clash = fp.fingerprint({"a/util.py": "x = 1\n", "b/util.py": "x = 2\n"})
    assert sorted(clash) == ["a/util.py", "b/util.py"]
    assert fp.changes(before, {**before, "zo": {"x": "0" * 16}}) == ["zo.x"]
    assert json.loads(fp.to_json(before)) == before


@pytest.mark.parametrize(("before", "after", "stale"), [
    ("from fold_jax import zo", "from fold_jax.estimators import zo", False),  # it moved
    ("from fold_jax.zo import f", "from fold_jax.estimators.zo import f", False),
    ("import fold_jax.zo as zo", "import fold_jax.estimators.zo as zo", False),
    ("from fold_jax import zo", "from . import zo", False),  # relative, same module
    ("from fold_jax import nets, zo", "from fold_jax.learn import nets\n    "
     "from fold_jax.estimators import zo", False),  # one import split by folder
    ("from fold_jax import nets, zo", "from fold_jax import nets\n    zo = nets", True),
    ("from fold_jax import zo", "from fold_jax import snes as zo", True),  # another one
    ("from numpy import zo", "from jax.numpy import zo", True),  # outside the package
])
def test_a_nested_import_is_hashed_without_its_package_path(before, after, stale):
    def mod(imp):
        return f"def step(x):\n    {imp}\n    return zo.f(x)\n"
    old = fp.fingerprint({"fold_jax/mod.py": mod(before)})
    new = fp.fingerprint({"fold_jax/mod.py": mod(after)})
    assert bool(fp.changes(old, new)) is stale


def test_a_moved_module_with_a_shared_stem_is_still_compared():
    # probes.py collides with bench/suites/probes.py, so both are keyed by path; moving the
    # library one into a folder changes its key, and changes() pairs it by stem
    before = fp.fingerprint({"fold_jax/probes.py": MODULE,  # relayout: keep
                             "fold_jax/zo.py": "x = 1\n",  # relayout: keep
                             "fold_jax/bench/suites/probes.py": "y = 1\n"})
    moved = fp.fingerprint({"fold_jax/analysis/probes.py": MODULE,
                            "fold_jax/analysis/__init__.py": "", "fold_jax/estimators/zo.py":
                            "x = 1\n", "fold_jax/bench/suites/probes.py": "y = 1\n"})
    assert "fold_jax/probes.py" not in moved  # relayout: keep
    assert "fold_jax/analysis/probes.py" in moved
    assert fp.changes(before, moved) == []
    edited = fp.fingerprint({"fold_jax/analysis/probes.py": MODULE.replace("2.0", "3.0"),
                             "fold_jax/bench/suites/probes.py": "y = 1\n"})
    assert fp.changes(before, edited) == ["fold_jax/analysis/probes.py.SCALE"]
    # a module that gained a stem-mate (both now keyed by path) pairs with its old key by
    # the statement names they share
    grown = fp.fingerprint({"fold_jax/estimators/zo.py": "x = 2\n",
                            "fold_jax/bench/suites/zo.py": "z = 1\n"})
    assert fp.changes(before, grown) == ["fold_jax/estimators/zo.py.x"]


def test_the_package_fingerprint_covers_the_measuring_code_only():
    files = {p.as_posix().split("/fold_jax/", 1)[-1] for p in fp.source_files()}
    names = {f.rsplit("/", 1)[-1] for f in files}  # wherever the layout puts them
    assert "zo.py" in names and "train.py" in names
    assert not any(f.startswith(("report/", "results/")) for f in files)
    assert fp.covered("bench/suite_races.py") and fp.covered("fold_jax/bench/run.py")
    assert not fp.covered("fold_jax/report/races.py") and not fp.covered("tests/test_zo.py")
    assert fp.current() is fp.current() and "zo" in fp.current()


# ----------------------------------------------------------------------------- migration


def test_migration_keeps_the_shown_runs_rows_and_drops_the_rest(git_repo):
    repo = git_repo.path
    commit = git_repo.commit("fold_jax/zo.py", "def f(x):\n    return x\n", "code")
    meta = {"git_commit": commit, "host": "vm", "cpu_model": math.nan, "backend": "cpu",
            "device_kind": "cpu", "n_devices": 1, "jax_version": "0.10.2",
            "jaxlib_version": "0.10.2"}
    flat = repo / "results"
    flat.mkdir()

    def rows(run, seeds, stamp):
        return [{"run_id": run, "timestamp_utc": f"2026-01-0{stamp}T00:00:0{s}+00:00", **meta,
                 **race_row(s)} for s in seeds]

    old, new, failed = RUN_A, RUN_B, "20260103T000000Z-cccccc"
    races = pd.DataFrame(rows(old, [0, 1], 1) + rows(new, [0, 1, 2], 2) + rows(failed, [0], 3))
    races.to_csv(flat / "races.csv", index=False)
    curves = pd.DataFrame([{"run_id": old, "timestamp_utc": "2026-01-01T00:00:00+00:00",
                            **meta, **curve_row(s)} for s in range(4)])
    curves.to_csv(flat / "curves.csv", index=False)
    pd.DataFrame({"run_id": [new, failed], "status": ["finished", "failed"],
                  "started_utc": ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]}
                 ).to_csv(flat / "runs.csv", index=False)
    summary = migration.migrate(flat, repo=repo)
    # races: the newest finished run (the failed one is newer); curves: its only run
    assert summary["reference"] == {"races": new, "curves": old}
    assert summary["rows_dropped"] == {"curves": 0, "races": 3}
    assert summary["runs_dropped"] == [failed]
    assert sorted(p.name for p in flat.iterdir()) == ["reference", "runs"]
    loaded = results.load(flat)
    got = loaded["races"].sort_values("seed").reset_index(drop=True)
    want = races[races["run_id"] == new].reset_index(drop=True)
    pd.testing.assert_frame_equal(got[list(want.columns)], want, check_dtype=False)
    assert loaded["curves"]["step"].tolist() == [0, 1, 2, 3]
    record = results.read_run(results.run_dir(flat, new))
    assert record["status"] == "finished" and record["meta"]["git_commit"] == commit
    code = fp.fingerprint(migration.sources_at(commit, repo))
    assert record["fingerprint"] == fp.digest(code) and "zo" in code
    assert results.code_changes(flat, new, current=code) == []
    edited = {**code, "zo": {"f": "0" * 16}}
    assert results.code_changes(flat, new, current=edited) == ["zo.f"]
    with pytest.raises(ValueError, match="no flat results files"):
        migration.migrate(flat, repo=repo)
