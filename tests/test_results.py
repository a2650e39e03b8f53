"""fold_jax.results: schema, metadata, atomic resumable appends, validated loading
(the store's layout, references, archives, fingerprints and migration:
tests/test_results_store.py)."""

from __future__ import annotations

import gzip
import inspect
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from fold_jax import results

KEY = ["task", "method", "variant", "seed", "budget_s"]


def table(results_dir, name, run=None):
    """The stored table of ``name`` in run ``run`` (default: the current one)."""
    return results.run_dir(results_dir, run or results.run_id()) / f"{name}.csv.gz"


def rewrite(path, mutate):
    """Replace the text of a gzip table by ``mutate(text)``."""
    path.write_bytes(gzip.compress(mutate(gzip.decompress(path.read_bytes()).decode()).encode()))


def race_row(seed, method="adam", **extra):
    return {"task": "digits", "method": method, "variant": "dense", "seed": seed,
            "target_metric": "accuracy", "target": 0.95, "reached": seed % 2 == 0,
            "steps_to_target": 100.0 if seed % 2 == 0 else math.inf, "evals_to_target": 100.0,
            "time_to_target_s": 0.5, "compile_s": 1.0, "final_test_metric": 0.96,
            "budget_s": 2.0, "n_params": 2410, **extra}


def test_metadata_has_every_column_and_one_run_id():
    a, b = results.metadata(), results.metadata()
    assert set(results.META_COLUMNS) <= set(a)
    assert a["run_id"] == b["run_id"] == results.run_id()
    assert a["n_devices"] >= 1 and a["backend"] in ("cpu", "gpu", "tpu", "cuda", "rocm")
    assert a["git_commit"] == "unknown" or len(a["git_commit"]) == 40


def test_cpu_model_names_the_cpu_from_any_cpuinfo():
    """x86 (model name, flags), ARM (Hardware / no model, Features) and an empty or
    missing cpuinfo: always one non-empty line with the architecture and core count;
    AVX-512 is named only when avx512f is among the flags."""
    import os
    import platform

    tail = f"{platform.machine() or 'unknown'}, {os.cpu_count() or 0} cores"
    x86 = "processor : 0\nmodel name : AMD  EPYC 7B13\nflags : fpu avx2 avx512bw\n"
    assert results.cpu_model(x86) == f"AMD EPYC 7B13 ({tail})"  # avx512bw is not avx512f
    assert results.cpu_model(x86 + "model name : ignored\nflags : avx512f\n") == (
        f"AMD EPYC 7B13 ({tail})")  # the first processor's fields
    avx = "model name\t: Intel(R) Xeon(R)\nflags\t\t: sse avx512f avx512dq\n"
    assert results.cpu_model(avx) == f"Intel(R) Xeon(R) ({tail}, avx512)"
    assert results.cpu_model("Hardware : BCM2711\nFeatures : fp asimd\n") == f"BCM2711 ({tail})"
    for text in ("", "garbage without colons\n", ":\n"):
        line = results.cpu_model(text)
        assert line.endswith(f"({tail})") and line.split(" (")[0]
    assert results.metadata()["cpu_model"] == results.cpu_model()


def test_append_load_round_trip_with_metadata(tmp_path):
    assert results.append("races", [race_row(0), race_row(1)], key=KEY,
                          results_dir=tmp_path) == 2
    frame = results.load(tmp_path)["races"]
    assert list(frame.columns[: len(results.META_COLUMNS)]) == list(results.META_COLUMNS)
    assert len(frame) == 2 and frame["seed"].tolist() == [0, 1]
    assert frame["steps_to_target"].iloc[1] == math.inf
    assert frame["reached"].tolist() == [True, False]
    assert isinstance(results.load(tmp_path / "races.csv"), pd.DataFrame)
    results.append("races", [race_row(2, reached=None)], key=KEY, results_dir=tmp_path)
    reached = results.load(tmp_path)["races"]["reached"]
    assert reached.dtype == "boolean" and reached.isna().tolist() == [False, False, True]


def test_duplicates_are_dropped_across_and_within_appends(tmp_path):
    results.append("races", [race_row(0), race_row(0), race_row(1)], key=KEY,
                   results_dir=tmp_path)
    # same keys with other spellings: 2.0 vs "2", 0 vs 0.0
    again = [race_row(0.0, budget_s="2"), race_row(2)]
    assert results.append("races", again, key=KEY, results_dir=tmp_path) == 1
    frame = results.load(tmp_path)["races"]
    assert sorted(frame["seed"]) == [0, 1, 2]
    assert results.done("races", {"task": "digits", "method": "adam", "seed": 2},
                        results_dir=tmp_path)
    assert not results.done("races", {"task": "digits", "method": "sgd", "seed": 2},
                            results_dir=tmp_path)
    assert not results.done("races", {"task": "x"}, results_dir=tmp_path / "none")


def test_none_and_nan_keys_match(tmp_path):
    row = {"bench": "b", "method": "m", "variant": "dense", "n_params": 10, "batch_size": 4,
           "num_directions": None, "rank": None, "sparsity": None, "dtype": "float32",
           **{c: 1.0 for c in ("compile_s", "step_median_s", "step_iqr_s", "rounds",
                               "evals_per_s", "flops", "mem_bytes", "inference_equiv_s",
                               "frac_of_inference")}}
    key = ["bench", "method", "num_directions", "rank", "sparsity"]
    assert results.append("kernels", [row], key=key, results_dir=tmp_path) == 1
    assert results.append("kernels", [{**row, "rank": float("nan")}], key=key,
                          results_dir=tmp_path) == 0
    assert results.done("kernels", {"bench": "b", "rank": None}, results_dir=tmp_path)


def test_replace_keeps_one_row_per_key_with_the_new_values(tmp_path):
    results.append("races", [race_row(0), race_row(1)], key=KEY, results_dir=tmp_path)
    results.append("races", [race_row(1, n_params=7)], key=KEY, results_dir=tmp_path,
                   replace=True)
    frame = results.load(tmp_path)["races"]
    assert sorted(frame["seed"]) == [0, 1]
    assert frame.set_index("seed").loc[1, "n_params"] == 7


def test_new_columns_extend_old_rows_with_nan(tmp_path):
    results.append("races", [race_row(0)], key=KEY, results_dir=tmp_path)
    results.append("races", [race_row(1, extra_col=3.5)], key=KEY, results_dir=tmp_path)
    frame = results.load(tmp_path)["races"]
    assert math.isnan(frame["extra_col"].iloc[0]) and frame["extra_col"].iloc[1] == 3.5


def test_bad_rows_raise_before_writing(tmp_path):
    with pytest.raises(ValueError, match="lacks columns"):
        results.append("races", [race_row(0), {"task": "digits"}], key=KEY,
                       results_dir=tmp_path)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(TypeError, match="key"):
        results.append("races", [race_row(0)], key="task", results_dir=tmp_path)
    with pytest.raises(ValueError, match="name"):
        results.append("../x", [race_row(0)], key=KEY, results_dir=tmp_path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda text: text.replace("final_test_metric", "final_metric"),
         r"races\.csv\.gz: missing core columns \['final_test_metric'\]"),
        (lambda text: text + "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r,s,t,u,v,w,x,y,z,aa,bb\n",
         r"races\.csv\.gz: unparsable rows.*line 4"),
        (lambda text: text.replace(",2410", ",many", 2).replace(",many", ",2410", 1),
         r"races\.csv\.gz: row 2 \(line 3\): column 'n_params' must be num, got 'many'"),
        (lambda text: text.replace(",True,", ",maybe,", 1),
         r"races\.csv\.gz: row 1 \(line 2\): column 'reached' must be bool"),
        (lambda text: "", r"races\.csv\.gz: empty file"),
    ],
)
def test_malformed_file_names_file_and_row(tmp_path, mutate, message):
    results.append("races", [race_row(0), race_row(1)], key=KEY, results_dir=tmp_path)
    path = table(tmp_path, "races")
    rewrite(path, mutate)
    with pytest.raises(ValueError, match=message):
        results.load(tmp_path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=message):  # append refuses to build on it
        results.append("races", [race_row(5)], key=KEY, results_dir=tmp_path)
    assert path.read_bytes() == before


def test_unwritable_results_dir_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match=r"cannot create results directory .*file"):
        results.append("races", [race_row(0)], key=KEY, results_dir=blocker / "sub")
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="locked"):
            results.append("races", [race_row(0)], key=KEY, results_dir=locked)


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    results.append("races", [race_row(0)], key=KEY, results_dir=tmp_path)
    path = table(tmp_path, "races")
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        results.append("races", [race_row(1)], key=KEY, results_dir=tmp_path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "fingerprint.json.gz", "races.csv.gz", "run.json"]  # no temporary file left


def write_steps(out, start, stop, pause):
    """Append steps ``start..stop-1`` of a curve (3 rows each) one append at a time,
    skipping the steps this run already holds; run in a child process by
    :func:`_writer` and in the test's own process to resume or to write beside one."""
    import time

    from fold_jax import results

    have = results.done_keys("curves", ["seed", "step"], out)
    for step in range(start, stop):
        if ("0", str(step)) in have:
            continue
        rows = [{"task": "t", "method": "m", "variant": "dense", "seed": 0, "step": step,
                 "evals": step, "elapsed_s": 0.1 * step, "split": "test", "metric": "acc",
                 "value": 0.5, "pad": "x" * 2000} for _ in range(3)]
        results.append("curves", rows, key=["seed", "step"], results_dir=out)
        time.sleep(pause)


# the child runs write_steps itself (its source, not an import of this test module)
WRITER = (inspect.getsource(write_steps) + textwrap.dedent("""
    import sys
    write_steps(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    print("finished", flush=True)
"""))
WRITER_RUN = "20260101T000000Z-writer"


def _writer(out, start, stop, pause, run=WRITER_RUN):
    """A writer process (a Python + jax import each: the tests start as few as show the
    behaviour); its run id comes from ``$FOLD_JAX_RUN_ID``."""
    return subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(start), str(stop),
                             str(pause)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "FOLD_JAX_RUN_ID": run})


def _rows_on_disk(path):
    try:
        return len(results.load(path))
    except (FileNotFoundError, ValueError):
        return 0


def test_killed_writer_resumes_without_loss_or_duplicates(tmp_path, as_run):
    """SIGKILL at a random moment of a stream of appends (SIGINT: see test_bench_runner);
    the resume and a later run write from this process, under the run ids the child
    took from ``$FOLD_JAX_RUN_ID`` and another one."""
    path = tmp_path / "curves.csv"
    proc = _writer(tmp_path, 0, 40, 0.0)
    deadline = time.time() + 60
    while _rows_on_disk(path) < 10 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    seen = results.load(path)  # never torn, whatever the moment of the kill
    saved = set(seen["step"])
    assert len(seen) == len(saved) and len(saved) >= 10
    assert set(seen["run_id"]) == {WRITER_RUN}  # the child's id came from the environment
    as_run(WRITER_RUN)  # resuming: the same run
    write_steps(tmp_path, 0, 40, 0.0)
    final = results.load(path)
    assert sorted(final["step"]) == list(range(40))  # nothing lost, nothing doubled
    kept = final[final["step"].isin(saved)]
    assert (kept["run_id"] == seen.set_index("step").loc[kept["step"], "run_id"].values).all()
    as_run("20260101T000001Z-other")  # another run
    write_steps(tmp_path, 0, 40, 0.0)
    final = results.load(path)  # measured everything again, beside the first run's rows
    assert final.groupby("run_id")["step"].nunique().to_dict() == {
        WRITER_RUN: 40, "20260101T000001Z-other": 40}


@pytest.fixture
def as_run():
    """``as_run(id)`` makes ``id`` the current run id; the old one is restored after."""
    previous = results.set_run_id(None)
    results.set_run_id(previous)
    yield results.set_run_id
    results.set_run_id(previous)


def test_resume_keys_belong_to_one_run(tmp_path, as_run):
    as_run("20260101T000000Z-aaaaaa")
    assert results.append("races", [race_row(0), race_row(1)], key=KEY,
                          results_dir=tmp_path) == 2
    key = {"task": "digits", "method": "adam", "seed": 0}
    assert results.done("races", key, tmp_path)
    as_run("20260102T000000Z-bbbbbb")  # same host, same keys: another run's rows never count
    assert not results.done("races", key, tmp_path)
    assert results.done_keys("races", ["seed"], tmp_path) == set()
    assert results.done("races", key, tmp_path, run="20260101T000000Z-aaaaaa")
    assert results.done_keys("races", ["seed"], tmp_path, run=results.ALL_RUNS) == {
        ("0",), ("1",)}
    # nor are they dropped as duplicates or replaced: each run keeps its own rows
    assert results.append("races", [race_row(0), race_row(0)], key=KEY,
                          results_dir=tmp_path) == 1
    assert results.append("races", [race_row(1, n_params=7)], key=KEY, results_dir=tmp_path,
                          replace=True) == 1
    frame = results.load(tmp_path)["races"]
    by_run = frame.groupby("run_id")["seed"].apply(sorted).to_dict()
    assert by_run == {"20260101T000000Z-aaaaaa": [0, 1], "20260102T000000Z-bbbbbb": [0, 1]}
    assert frame.set_index(["run_id", "seed"])["n_params"].to_dict() == {
        ("20260101T000000Z-aaaaaa", 0): 2410, ("20260101T000000Z-aaaaaa", 1): 2410,
        ("20260102T000000Z-bbbbbb", 0): 2410, ("20260102T000000Z-bbbbbb", 1): 7}
    assert results.metadata()["run_id"] == "20260102T000000Z-bbbbbb"
    with pytest.raises(ValueError, match="run id"):
        as_run("../x")


def test_run_registry_and_resume_marks(tmp_path):
    rid = results.new_run_id()
    assert results.check_run_id(rid) == rid
    results.record_run(tmp_path, {"run_id": rid, "status": "running", "profile": "quick",
                                  "started_utc": "2026-01-01T00:00:00.000+00:00"})
    results.record_run(tmp_path, {"run_id": rid, "status": "finished", "attempts": 2})
    results.record_run(tmp_path, {"run_id": "20260102T000000Z-second", "status": "failed"})
    results.mark_resumable(tmp_path, {"run_id": "20260102T000000Z-second", "status": "failed",
                                      "profile": "quick"})
    results.mark_resumable(tmp_path, {"run_id": "20260103T000000Z-markonly",
                                      "status": "running"})
    (tmp_path / ".partial" / "20260104T000000Z-broken.json").write_text("{not json")
    table = results.runs(tmp_path).set_index("run_id")
    assert list(table.columns[: len(results.RUN_COLUMNS) - 1]) == list(results.RUN_COLUMNS[1:])
    assert table.loc[rid, ["status", "profile", "attempts"]].tolist() == ["finished", "quick",
                                                                         "2"]
    assert table.loc[rid, "started_utc"] == "2026-01-01T00:00:00.000+00:00"  # kept
    assert table["resumable"].to_dict() == {rid: False, "20260102T000000Z-second": True,
                                            "20260103T000000Z-markonly": True}
    assert [r["run_id"] for r in results.resumable(tmp_path)] == [
        "20260102T000000Z-second", "20260103T000000Z-markonly"]
    assert json.loads((tmp_path / ".partial" / "20260102T000000Z-second.json").read_text())[
        "profile"] == "quick"
    for run in ("20260102T000000Z-second", "20260103T000000Z-markonly",
                "20260104T000000Z-broken", "20260105T000000Z-none"):
        results.clear_resumable(tmp_path, run)
    assert not (tmp_path / ".partial").exists() and results.resumable(tmp_path) == []
    results.append("races", [race_row(0)], key=KEY, results_dir=tmp_path)
    assert set(results.load(tmp_path)) == {"races"}  # the record is not a results file
    table = results.runs(tmp_path).set_index("run_id")
    assert results.run_id() not in table.index  # rows, no record of its status
    assert table.loc[rid, "kind"] == ""  # recorded, no rows: metadata unknown
    results.record_run(tmp_path, {"run_id": results.run_id(), "status": "finished"})
    table = results.runs(tmp_path).set_index("run_id")
    assert table.loc[results.run_id(), "kind"] == results.machine_kind(results.metadata())
    with pytest.raises(ValueError, match="run registry"):
        results.append("runs", [{"run_id": "x"}], key=["run_id"], results_dir=tmp_path)
    with pytest.raises(ValueError, match="run id"):
        results.record_run(tmp_path, {"status": "running"})
    (results.run_dir(tmp_path, rid) / "run.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"run\.json: not a JSON object"):
        results.runs(tmp_path)


def test_code_changed_compares_the_code_paths(tmp_path, git_repo):
    repo = git_repo.path
    first = git_repo.commit("fold_jax/a.py", "x = 1\n", "one")
    git_repo.commit("README.md", "docs\n", "docs only")
    assert results.git_commit(repo) != first and len(results.git_commit(repo)) == 40
    assert results.code_changed(first, cwd=repo) is False  # only README changed
    git_repo.commit("fold_jax/report/view.py", "y = 1\n", "report only")
    assert results.code_changed(first, cwd=repo) is False  # the report reads, writes no rows
    git_repo.commit("fold_jax/a.py", "x = 2\n", "code")
    assert results.code_changed(first, cwd=repo) is True
    assert results.code_changed("0" * 40, cwd=repo) is None  # a commit git does not know
    assert results.code_changed("unknown", cwd=repo) is None
    assert results.code_changed(first, cwd=tmp_path) is None  # no git there
    assert results.git_commit(tmp_path) == "unknown"


def test_concurrent_writers_lose_nothing(tmp_path, as_run):
    """A child process and this one append to the same table at the same time (this one
    starts once the child has written, and both pause between appends so that they
    interleave)."""
    as_run(WRITER_RUN)
    path = tmp_path / "curves.csv"
    proc = _writer(tmp_path, 0, 15, 0.02)
    deadline = time.time() + 60
    while _rows_on_disk(path) == 0 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    write_steps(tmp_path, 15, 30, 0.02)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert sorted(results.load(path)["step"]) == list(range(30))


def test_a_schema_column_that_is_also_metadata_is_written_once(tmp_path):
    rows = [{"method": "zo", "throughput": 1.0, "devices": 1}]
    for _ in range(2):  # the second append reads the file back and rewrites it
        results.append("scaling", rows, key=["method", "devices"], results_dir=tmp_path)
        rows = [{"method": "zo", "throughput": 2.0, "devices": 2}]
    header = gzip.decompress(table(tmp_path, "scaling").read_bytes()).decode().split("\n")[0]
    # stored once, in the run's metadata: the rows share it
    assert "n_devices" not in header.split(",")
    frame = results.load(tmp_path)["scaling"]
    assert len(frame) == 2 and list(frame.columns).count("n_devices") == 1
    assert frame["n_devices"].tolist() == [results.metadata()["n_devices"]] * 2


# ------------------------------------------------------------------------------ schema

ROOT = Path(__file__).resolve().parents[1]


def test_every_schema_describes_its_key_once_with_valid_dtypes():
    assert {"kernels", "races", "curves", "tuning", "variants", "probes", "region_maps",
            "scaling", "bbob"} <= set(results.SCHEMA)
    meta = {c.name for c in results.META}
    assert tuple(c.name for c in results.META) == results.META_COLUMNS
    for name, s in results.SCHEMA.items():
        assert s.file == name and s.row and s.key
        names = [c.name for c in s.columns]
        assert len(names) == len(set(names)), name
        assert not set(names) & meta, name  # metadata is described once, in META
        assert results.undescribed(name, s.key) == [], name
        for c in (*results.META, *s.columns):
            assert c.dtype in results.DTYPES and c.description.strip(), (name, c)
        assert results.SCHEMAS[name].items() >= s.core.items()
        assert results.key(name) == list(s.key) and results.key(name) is not s.key
    assert results.undescribed("kernels", ["bench", "run_id", "nonsense"]) == ["nonsense"]
    with pytest.raises(ValueError, match="known"):
        results.schema("nonsense")


def test_tuning_and_race_columns_of_the_tuning_protocol_are_described():
    tuning = results.schema("tuning")
    assert tuning.key == ("task", "method", "variant", "trial", "seed", "max_steps",
                          *results.MACHINE_KEY)  # a row per trial and seed
    kinds = {c.name: c.dtype for c in tuning.columns}
    assert kinds["hparams"] == "str" and kinds["selected"] == "bool"
    assert kinds["reached"] == "bool" and kinds["score"] == "num" and kinds["trial"] == "int"
    races = {c.name: c.dtype for c in results.schema("races").columns}
    assert {"library": "str", "recipe": "str", "hparams": "str", "trial": "int",
            "n_trials": "int"}.items() <= races.items()


REFERENCE_TABLES = sorted((ROOT / "results" / "reference").glob("*/*.csv.gz"))


def test_the_reference_is_committed():
    assert REFERENCE_TABLES, "no reference tables under results/reference/<kind>/"


@pytest.mark.parametrize("path", REFERENCE_TABLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_results_are_described_and_typed(path):
    frame = results.load(path)  # metadata joined back from reference.json
    name = path.name.removesuffix(".csv.gz")
    s = results.schema(name)
    assert results.undescribed(name, frame.columns) == []
    assert frame["run_id"].nunique() == 1 and frame["git_commit"].str.len().eq(40).all()
    results.check_types(frame, {c.name: c.dtype for c in (*results.META, *s.columns)}, path)


def test_check_types_names_the_row_and_column():
    frame = pd.DataFrame({"a": [1, 2.5], "b": ["x", "y"], "c": ["True", "maybe"]})
    results.check_types(frame, {"a": "num", "b": "str", "missing": "int"})
    with pytest.raises(ValueError, match=r"row 2 \(line 3\): column 'a' must be int"):
        results.check_types(frame, {"a": "int"})
    with pytest.raises(ValueError, match="column 'c' must be bool"):
        results.check_types(frame, {"c": "bool"})


def test_committed_column_dictionary_is_generated_from_the_schema(tmp_path):
    text = results.columns_markdown()
    assert (ROOT / "results" / "COLUMNS.md").read_text() == text, (
        "results/COLUMNS.md is stale: run python -m fold_jax.report --columns")
    for name, s in results.SCHEMA.items():
        assert f"## {name}.csv" in text
        assert all(f"| `{c.name}` |" in text for c in s.columns)
    path = results.write_columns(tmp_path / "sub" / "COLUMNS.md")
    assert path.read_text() == text


def test_append_reads_only_the_new_rows_runs_files(tmp_path, as_run, monkeypatch):
    """Each run has its own directory, so an append never reads another run's rows (in
    the flat files each append read every run's: 4 s an append to a 196,000-row
    curves.csv, growing with each committed run)."""
    from fold_jax.results import store

    as_run("20260101T000000Z-aaaaaa")
    results.append("races", [race_row(s) for s in range(2000)], key=KEY,
                   results_dir=tmp_path)
    as_run("20260102T000000Z-bbbbbb")
    results.append("races", [race_row(0)], key=KEY, results_dir=tmp_path)
    read = []
    real = store.read_table
    monkeypatch.setattr(store, "read_table", lambda p, *a: read.append(p) or real(p, *a))
    assert results.append("races", [race_row(0), race_row(1)], key=KEY,
                          results_dir=tmp_path) == 1
    assert results.append("races", [race_row(1, n_params=7)], key=KEY, results_dir=tmp_path,
                          replace=True) == 1
    assert read and {p.parent.name for p in read} == {"20260102T000000Z-bbbbbb"}
    frame = results.load(tmp_path)["races"]
    assert frame.groupby("run_id").size().to_dict() == {
        "20260101T000000Z-aaaaaa": 2000, "20260102T000000Z-bbbbbb": 2}
    assert set(frame.loc[frame["n_params"] == 7, "run_id"]) == {"20260102T000000Z-bbbbbb"}


def test_an_append_keeps_the_old_text_and_adds_rows_in_the_files_column_order(tmp_path):
    """An append copies the file's bytes and adds the new rows as one more gzip member
    (no re-render of old rows), and a row lacking a column leaves it empty."""
    results.append("races", [race_row(0), race_row(1, extra_col=2.5)], key=KEY,
                   results_dir=tmp_path)
    path = table(tmp_path, "races")
    before = path.read_bytes()
    assert results.append("races", [race_row(2), race_row(3, n_params=7)], key=KEY,
                          results_dir=tmp_path) == 2
    after = path.read_bytes()
    old_text, new_text = (gzip.decompress(b).decode() for b in (before, after))
    assert after.startswith(before) and new_text.startswith(old_text)
    assert new_text.count("\n") == old_text.count("\n") + 2
    frame = results.load(tmp_path)["races"]
    assert list(frame["seed"]) == [0, 1, 2, 3]
    assert frame["extra_col"].isna().tolist() == [True, False, True, True]
    assert frame["n_params"].tolist() == [2410, 2410, 2410, 7]
    assert frame["reached"].tolist() == [True, False, True, False]
    # a new column rewrites the whole file, old rows gaining an empty cell
    assert results.append("races", [race_row(4, other=1.0)], key=KEY,
                          results_dir=tmp_path) == 1
    assert results.load(tmp_path)["races"]["other"].isna().sum() == 4
