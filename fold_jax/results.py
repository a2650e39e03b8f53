"""Results files: schema, machine metadata, runs, atomic resumable appends, loading.

Every benchmark writes tidy CSVs under ``results_dir`` (``results/`` by default):
one file per kind (``kernels``, ``races``, ``curves``, ``variants``, ``probes``,
``scaling``). Each row carries the metadata of :func:`metadata` (``META_COLUMNS``)
and at least the core columns of its file (``SCHEMAS``); extra columns are welcome.

Runs: every row carries the ``run_id`` of the run that wrote it (:func:`run_id`, shared
with child processes through ``$FOLD_JAX_RUN_ID``), and the rows of all runs live side
by side in the same files. Resuming only ever looks at the current run's rows
(:func:`done_keys` / :func:`done` match ``run_id``), so a new run measures everything
even where the files already hold rows of the same machine (another run, or the
committed reference run). ``bench.run`` records each run in ``<results_dir>/runs.csv``
(:func:`record_run`, :func:`runs`: status running / interrupted / failed / finished,
commit, host, profile, parts, times) and marks a run it may continue with a small file
``<results_dir>/.partial/<run_id>.json`` (:func:`mark_resumable`), which is git-ignored:
a fresh clone has no run to continue.

Writes are atomic: :func:`append` reads the current file, drops new rows whose key
is already there *for the same run*, writes the whole new file to a temporary file in
the same directory, fsyncs it and ``os.replace``-s it over the old one. A process
killed at any moment leaves either the old or the new file, never a torn one; resumed
(same run id), the same keys are skipped, so nothing is duplicated and nothing written
is lost. Writers in several processes are serialised by an advisory ``flock`` on the
results directory (POSIX); where that is unavailable, one writer at a time is assumed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "ALL_RUNS",
    "CODE_PATHS",
    "MACHINE_KEY",
    "META_COLUMNS",
    "REGISTRY",
    "RUN_COLUMNS",
    "SCHEMAS",
    "append",
    "check_run_id",
    "check_writable",
    "clear_resumable",
    "code_changed",
    "done",
    "done_keys",
    "git_commit",
    "load",
    "mark_resumable",
    "metadata",
    "new_run_id",
    "normalize_key",
    "record_run",
    "resumable",
    "run_id",
    "runs",
    "set_run_id",
    "validate",
]

META_COLUMNS: tuple[str, ...] = (
    "run_id",
    "timestamp_utc",
    "git_commit",
    "host",
    "backend",
    "device_kind",
    "n_devices",
    "jax_version",
    "jaxlib_version",
)
# the metadata that names the machine. Suites put it in their KEY so a row says which
# machine it measured; whether a job is done is decided by run_id (see done_keys).
MACHINE_KEY: tuple[str, ...] = ("host", "backend", "device_kind", "n_devices")

# Core columns per file (type: "num" numbers incl. inf/NaN, "int" integers,
# "str" text, "bool" True/False). Extra columns are allowed in every file.
SCHEMAS: dict[str, dict[str, str]] = {
    "kernels": {
        "bench": "str", "method": "str", "variant": "str", "n_params": "num",
        "batch_size": "num", "num_directions": "num", "rank": "num", "sparsity": "num",
        "dtype": "str", "compile_s": "num", "step_median_s": "num", "step_iqr_s": "num",
        "rounds": "num", "evals_per_s": "num", "flops": "num", "mem_bytes": "num",
        "inference_equiv_s": "num", "frac_of_inference": "num",
    },
    "races": {
        "task": "str", "method": "str", "variant": "str", "seed": "int",
        "target_metric": "str", "target": "num", "reached": "bool",
        "steps_to_target": "num", "evals_to_target": "num", "time_to_target_s": "num",
        "compile_s": "num", "final_test_metric": "num", "budget_s": "num", "n_params": "num",
    },
    "curves": {
        "task": "str", "method": "str", "variant": "str", "seed": "int", "step": "num",
        "evals": "num", "elapsed_s": "num", "split": "str", "metric": "str", "value": "num",
    },
    # variants/probes are owned by their suites; only the identifying columns are pinned.
    "variants": {"variant": "str"},
    "probes": {},
    "scaling": {"n_devices": "int"},
    # one row per BBOB function x dim x instance x method x run (bench/suite_bbob.py)
    "bbob": {
        "function": "int", "function_name": "str", "dim": "int", "instance": "int",
        "run": "int", "method": "str", "library": "str", "budget": "num",
        "evals_used": "num", "best_precision": "num", "evals_to_1e1": "num",
        "evals_to_1e-1": "num", "evals_to_1e-3": "num", "evals_to_1e-5": "num",
        "evals_to_1e-8": "num", "seconds": "num", "seed": "int",
    },
}
_META_TYPES = {"n_devices": "int"}

# the run registry <results_dir>/runs.csv (one row per run; not a results file: load()
# of a directory leaves it out, runs() reads it) and its columns
REGISTRY = "runs"
RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "status", "started_utc", "updated_utc", "finished_utc", "git_commit", "host",
    "backend", "device_kind", "n_devices", "jax_version", "profile", "parts", "filter",
    "attempts", "pid", "command",
)
ALL_RUNS = "*"  # done_keys(..., run=ALL_RUNS): rows of every run
# the code that produces results: rows measured at another commit are stale when these
# paths changed since (code_changed)
CODE_PATHS: tuple[str, ...] = ("fold_jax", "bench")
_PARTIAL = ".partial"  # <results_dir>/.partial/<run_id>.json: runs this checkout may resume
_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

_RUN_ID: str | None = None
_STATIC_META: dict[str, Any] | None = None


def new_run_id() -> str:
    """A fresh run id: UTC start time and a random suffix (``20261121T090653Z-dfb0f8``).

    Returns:
        The run id, a str.
    """
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def check_run_id(value: str) -> str:
    """``value`` if it can name a run (letters, digits, ``._-``; it names a file), else
    ValueError.

    Args:
        value: the candidate run id.

    Returns:
        ``value`` unchanged.
    """
    if not isinstance(value, str) or not _RUN_ID_RE.fullmatch(value):
        raise ValueError(f"run id {value!r} must be 1-100 letters, digits, '.', '_' or '-' "
                         f"(starting with a letter or digit)")
    return value


def run_id() -> str:
    """The id of the run this process writes rows for: the one set by
    :func:`set_run_id`, else ``$FOLD_JAX_RUN_ID``, else a new one (then fixed for the
    process).

    Returns:
        The run id, a str.
    """
    global _RUN_ID
    if _RUN_ID is None:
        _RUN_ID = os.environ.get("FOLD_JAX_RUN_ID") or new_run_id()
    return _RUN_ID


def set_run_id(value: str | None) -> str | None:
    """Make ``value`` the current run id (``None``: decide afresh on the next
    :func:`run_id` call); returns the previous one, for restoring.

    Args:
        value: the run id to use, or None.

    Returns:
        The previous run id (None if none was set yet).
    """
    global _RUN_ID
    previous, _RUN_ID = _RUN_ID, None if value is None else check_run_id(value)
    return previous


def _git(args: Sequence[str], cwd: str | os.PathLike | None = None
         ) -> subprocess.CompletedProcess | None:
    """``git args`` run in ``cwd`` (else the current directory, then the package's
    directory), in the first of them inside a git work tree; None without git."""
    dirs = [Path(cwd)] if cwd is not None else [Path.cwd(), Path(__file__).resolve().parent]
    for d in dirs:
        try:
            inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=d,
                                    capture_output=True, text=True, timeout=10, check=False)
            if inside.returncode != 0 or inside.stdout.strip() != "true":
                continue
            return subprocess.run(["git", *args], cwd=d, capture_output=True, text=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The checkout's HEAD commit (40 hex digits), or ``"unknown"`` without git.

    Args:
        cwd: a folder in the repository (None: the current directory).

    Returns:
        The commit hash, or ``"unknown"``.
    """
    out = _git(["rev-parse", "HEAD"], cwd)
    if out is not None and out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    return "unknown"


def _git_commit() -> str:
    return git_commit()


def code_changed(commit: str, head: str = "HEAD", *, cwd: str | os.PathLike | None = None,
                 paths: Sequence[str] = CODE_PATHS) -> bool | None:
    """Whether the code under ``paths`` (from the repository root) differs between
    ``commit`` and ``head`` (``git diff --quiet commit head -- paths``); None when it
    cannot be told (no git, a commit the repository does not know).

    Args:
        commit: the older commit.
        head: the newer commit.
        cwd: a folder in the repository (None: the current directory).
        paths: the code paths compared, from the repository root.

    Returns:
        True if the code differs, False if not, None if unknown.
    """
    if not commit or str(commit) in ("unknown", "nan"):
        return None
    if str(commit) == str(head):
        return False
    out = _git(["diff", "--quiet", str(commit), str(head), "--",
                *[f":(top){p}" for p in paths]], cwd)
    if out is None or out.returncode not in (0, 1):
        return None
    return out.returncode == 1


def metadata() -> dict[str, Any]:
    """Metadata for a row: run_id (:func:`run_id`), timestamp_utc (now), git_commit,
    host (``platform.node()``), backend, device_kind, n_devices, jax_version,
    jaxlib_version.

    Returns:
        A dict of the metadata columns and their values.
    """
    global _STATIC_META
    if _STATIC_META is None:
        import jax
        import jaxlib

        devices = jax.devices()
        _STATIC_META = {
            "git_commit": _git_commit(),
            "host": platform.node() or "unknown",
            "backend": jax.default_backend(),
            "device_kind": devices[0].device_kind if devices else "unknown",
            "n_devices": jax.device_count(),
            "jax_version": jax.__version__,
            "jaxlib_version": getattr(jaxlib, "__version__", "unknown"),
        }
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return {"run_id": run_id(), "timestamp_utc": now, **_STATIC_META}


# ----------------------------------------------------------------------------- keys


def _norm(value: Any) -> str:
    """Canonical text of a key value, so 64, 64.0, "64" and None/NaN/"" compare equal."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        if value in ("True", "False"):
            return value
        try:
            value = float(value)
        except ValueError:
            return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return ""
    if math.isfinite(number) and number.is_integer():
        return str(int(number))
    return repr(number)


def normalize_key(row: Mapping[str, Any], key: Sequence[str]) -> tuple[str, ...]:
    """The canonical tuple identifying ``row`` by the columns ``key``.

    Args:
        row: the row, a mapping of column -> value.
        key: the key columns (missing ones count as None).

    Returns:
        A tuple of normalized strings, one per key column.
    """
    return tuple(_norm(row.get(k)) for k in key)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name={name!r} must be a file stem such as 'kernels' or 'races'")


def _check_key(key) -> list[str]:
    if isinstance(key, str) or not isinstance(key, Sequence) or not key:
        raise TypeError(f"key must be a non-empty list of column names, got {key!r}")
    return list(key)


# ---------------------------------------------------------------------------- reading


def validate(frame: pd.DataFrame, path: str | os.PathLike, name: str | None = None) -> None:
    """Raise ValueError naming ``path`` (and the row) when ``frame`` breaks the schema.

    Rows are numbered from 1 after the header (file line = row + 1).

    Args:
        frame: the rows read from the file.
        path: the file's path (named in errors).
        name: the schema's name (None: the stem of ``path``; no schema: no check).
    """
    name = Path(path).stem if name is None else name
    schema = SCHEMAS.get(name)
    if schema is None:
        return
    required = {**{c: _META_TYPES.get(c, "str") for c in META_COLUMNS}, **schema}
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing core columns {missing} (file kind {name!r})")
    for column, kind in required.items():
        if kind == "str":
            continue
        series = frame[column]
        if kind == "bool":
            ok = series.isna() | series.astype(str).isin(["True", "False", "1", "0", "1.0",
                                                          "0.0"])
        else:
            numbers = pd.to_numeric(series, errors="coerce")
            ok = numbers.notna() | series.isna()
            if kind == "int":
                ok &= numbers.isna() | (numbers.abs() == float("inf")) | (numbers % 1 == 0)
        if not bool(ok.all()):
            i = int((~ok.to_numpy()).nonzero()[0][0])
            raise ValueError(f"{path}: row {i + 1} (line {i + 2}): column {column!r} must be "
                             f"{kind}, got {series.iloc[i]!r}")


def _to_bool(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return pd.NA
    return str(value) in ("True", "1", "1.0")


def _read(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, on_bad_lines="error", low_memory=False)
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"{path}: empty file (no header row)") from e
    except pd.errors.ParserError as e:
        raise ValueError(f"{path}: unparsable rows: {e}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text CSV: {e}") from e
    validate(frame, path)
    for column, kind in SCHEMAS.get(Path(path).stem, {}).items():
        if kind == "bool" and column in frame.columns and frame[column].dtype != bool:
            frame[column] = frame[column].map(_to_bool).astype("boolean")
    return frame


def load(path: str | os.PathLike = "results") -> dict[str, pd.DataFrame] | pd.DataFrame:
    """Validated results: a dict of DataFrames by file stem for a directory (every
    ``*.csv`` in it but the run registry ``runs.csv``, which :func:`runs` reads; {} when
    it does not exist), or one DataFrame for a CSV path.

    Raises ValueError naming the file (and row) when a file is malformed.

    Args:
        path: a results folder or one CSV file.

    Returns:
        ``{stem: DataFrame}`` for a folder, a DataFrame for a CSV file.
    """
    path = Path(path)
    if path.suffix == ".csv" or path.is_file():
        if not path.exists():
            raise FileNotFoundError(f"no results file at {path}")
        return _read(path)
    if not path.exists():
        return {}
    return {p.stem: _read(p) for p in sorted(path.glob("*.csv"))
            if not p.name.startswith(".") and p.stem != REGISTRY}


def done_keys(name: str, key: Sequence[str], results_dir: str | os.PathLike = "results", *,
              run: str | None = None) -> set[tuple[str, ...]]:
    """The normalized keys (see :func:`normalize_key`) that run ``run`` (by default the
    current one, :func:`run_id`; ``ALL_RUNS`` for every run) wrote to ``<name>.csv``.

    Args:
        name: the CSV's stem.
        key: the key columns.
        results_dir: the results folder.
        run: the run id (None: the current run; ``ALL_RUNS``: every run).

    Returns:
        The set of normalized key tuples (empty when the file or a key column is missing).
    """
    _check_name(name)
    key = _check_key(key)
    path = Path(results_dir) / f"{name}.csv"
    if not path.exists():
        return set()
    frame = _read(path)
    if any(k not in frame.columns for k in key):
        return set()
    wanted = run_id() if run is None else run
    if wanted != ALL_RUNS:
        if "run_id" not in frame.columns:
            return set()
        frame = frame[frame["run_id"].astype(str) == str(wanted)]
    return {normalize_key(r, key) for r in frame[key].to_dict("records")}


def done(name: str, key: Mapping[str, Any], results_dir: str | os.PathLike = "results", *,
         run: str | None = None) -> bool:
    """Whether run ``run`` (by default the current one) already wrote a row with these
    key values to ``<results_dir>/<name>.csv``; rows of other runs never count.

    Args:
        name: the CSV's stem.
        key: the key columns and their values.
        results_dir: the results folder.
        run: the run id (None: the current run, :func:`run_id`).

    Returns:
        True when such a row exists.
    """
    if not isinstance(key, Mapping) or not key:
        raise TypeError(f"key must be a non-empty dict of column -> value, got {key!r}")
    columns = list(key)
    return normalize_key(key, columns) in done_keys(name, columns, results_dir, run=run)


# ---------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _locked(directory: Path):
    """Advisory exclusive lock on the directory itself (no lock file to litter it)."""
    try:
        import fcntl
    except ImportError:  # single-writer assumption off POSIX
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def check_writable(results_dir: str | os.PathLike) -> Path:
    """Create ``results_dir`` if needed; PermissionError / OSError naming it if it cannot
    be written.

    Args:
        results_dir: the folder.

    Returns:
        The folder as a ``Path``.
    """
    directory = Path(results_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise type(e)(e.errno, f"cannot create results directory {directory}: "
                      f"{e.strerror}", str(directory)) from e
    if not directory.is_dir():
        raise NotADirectoryError(f"results directory {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"results directory {directory} is not writable")
    return directory


def _order(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    # dict.fromkeys: a schema may repeat a metadata column (scaling's n_devices)
    first = [c for c in dict.fromkeys((*META_COLUMNS, *SCHEMAS.get(name, {})))
             if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def _file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    _replace_atomic(path, lambda f: frame.to_csv(f, index=False))


def _replace_atomic(path: Path, write: Callable[[Any], Any]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, fsync it and
    ``os.replace`` it into place (never a torn file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; results are for sharing
        with os.fdopen(fd, "w", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _not_writer() -> bool:
    """In a multi-host run (``jax.distributed``) only process 0 writes results."""
    import jax

    return jax.process_count() > 1 and jax.process_index() != 0


def append(
    name: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    key: Sequence[str],
    results_dir: str | os.PathLike = "results",
    replace: bool = False,
) -> int:
    """Atomically add ``rows`` to ``<results_dir>/<name>.csv``; returns rows written.

    Metadata columns (:func:`metadata`) are added where a row lacks them. Rows whose
    ``key`` columns and ``run_id`` match a row already in the file (or an earlier new
    row) are dropped, so a resumed run writes no duplicates; with ``replace=True`` they
    replace that run's old rows instead. Rows of other runs are never dropped or
    replaced: each run keeps its own rows. Raises ValueError for rows missing key or
    core columns (nothing is written), ValueError when the existing file is malformed
    or ``name`` is the run registry, and PermissionError / OSError naming the path when
    the directory cannot be written. In a multi-host run only process 0 writes (the
    others return 0).

    Args:
        name: the CSV's stem (not "runs").
        rows: the rows, mappings of column -> value.
        key: the columns that identify a row within a run.
        results_dir: the results folder.
        replace: replace this run's rows with matching keys instead of dropping the new ones.

    Returns:
        The number of rows written.
    """
    _check_name(name)
    key = _check_key(key)
    if name == REGISTRY:
        raise ValueError(f"{REGISTRY}.csv is the run registry; write it with record_run")
    if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Iterable):
        raise TypeError(f"rows must be an iterable of dicts, got {type(rows).__name__}")
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows[{i}] must be a dict, got {type(row).__name__}")
    rows = [dict(r) for r in rows]
    meta = metadata()
    required = [c for c in SCHEMAS.get(name, {}) if c not in META_COLUMNS]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"rows[{i}] must be a dict, got {type(row).__name__}")
        lacking = [c for c in (*key, *required) if c not in row and c not in meta]
        if lacking:
            raise ValueError(f"rows[{i}] for {name}.csv lacks columns {lacking}")
        for column, value in meta.items():
            row.setdefault(column, value)
    if not rows or _not_writer():
        return 0
    directory = check_writable(results_dir)
    path = directory / f"{name}.csv"
    with _locked(directory):
        for stale in directory.glob(f".{name}.csv.*.tmp"):  # left by a killed writer
            with contextlib.suppress(OSError):
                stale.unlink()
        old = _read(path) if path.exists() else pd.DataFrame()
        match = key if "run_id" in key else [*key, "run_id"]  # one row per key per run
        new, seen = [], set()
        for row in reversed(rows) if replace else rows:  # replace: the last row wins
            k = normalize_key(row, match)
            if k not in seen:
                seen.add(k)
                new.append(row)
        if replace:
            new.reverse()
        if len(old) and all(k in old.columns for k in match):
            old_keys = [normalize_key(r, match) for r in old[match].to_dict("records")]
            if replace:
                old = old[[k not in seen for k in old_keys]]
            else:
                existing = set(old_keys)
                new = [r for r in new if normalize_key(r, match) not in existing]
        if not new:
            return 0
        added = pd.DataFrame(new)
        frame = added if old.empty and not len(old.columns) else pd.concat(
            [old, added], ignore_index=True)
        _write_atomic(_order(frame, name), path)
    return len(new)


# ------------------------------------------------------------------------------- runs


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _read_registry(path: Path) -> pd.DataFrame:
    """``runs.csv`` as text columns (``""`` for empty), ``RUN_COLUMNS`` first."""
    if not path.exists():
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="error")
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"{path}: empty file (no header row)") from e
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: unparsable run registry: {e}") from e
    if "run_id" not in frame.columns:
        raise ValueError(f"{path}: missing column 'run_id' (run registry)")
    for column in RUN_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    return frame[[*RUN_COLUMNS, *[c for c in frame.columns if c not in RUN_COLUMNS]]]


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def record_run(results_dir: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Create or update the row of ``record["run_id"]`` in ``<results_dir>/runs.csv``
    (atomically, under the directory lock): the given fields replace the old ones, the
    others are kept; ``updated_utc`` is set to now. In a multi-host run only process 0
    writes.

    Args:
        results_dir: the results folder.
        record: the run's fields; must hold a valid ``run_id``.
    """
    rid = check_run_id(record.get("run_id", ""))
    if _not_writer():
        return
    directory = check_writable(results_dir)
    path = directory / f"{REGISTRY}.csv"
    fields = {k: _text(v) for k, v in record.items()}
    fields["updated_utc"] = _now()
    with _locked(directory):
        frame = _read_registry(path)
        for column in fields:
            if column not in frame.columns:
                frame[column] = ""
        hit = frame["run_id"] == rid
        if hit.any():
            for column, value in fields.items():
                frame.loc[hit, column] = value
        else:
            row = {c: "" for c in frame.columns} | fields
            frame = pd.concat([frame, pd.DataFrame([row])], ignore_index=True)
        _write_atomic(frame, path)


def _partial_dir(results_dir: str | os.PathLike) -> Path:
    return Path(results_dir) / _PARTIAL


def mark_resumable(results_dir: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Write ``<results_dir>/.partial/<run_id>.json`` (``record`` as JSON, atomically):
    this checkout may continue that run. The folder is git-ignored, so a fresh clone
    never continues a run.

    Args:
        results_dir: the results folder.
        record: the run's record; must hold a valid ``run_id``.
    """
    rid = check_run_id(record.get("run_id", ""))
    if _not_writer():
        return
    directory = _partial_dir(check_writable(results_dir))
    directory.mkdir(exist_ok=True)
    text = json.dumps({k: _text(v) for k, v in record.items()}, indent=1, sort_keys=True)
    _replace_atomic(directory / f"{rid}.json", lambda f: f.write(text + "\n"))


def clear_resumable(results_dir: str | os.PathLike, run: str) -> None:
    """Remove the mark of :func:`mark_resumable` (and the ``.partial`` folder once
    empty); no error when there is none.

    Args:
        results_dir: the results folder.
        run: the run id.
    """
    directory = _partial_dir(results_dir)
    with contextlib.suppress(FileNotFoundError):
        (directory / f"{check_run_id(run)}.json").unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()  # only when empty


def resumable(results_dir: str | os.PathLike = "results") -> list[dict[str, str]]:
    """The records of the runs this checkout may continue (``.partial/*.json``), oldest
    start first; unreadable marks are skipped.

    Args:
        results_dir: the results folder.

    Returns:
        A list of records, dicts of str -> str.
    """
    directory = _partial_dir(results_dir)
    out = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("run_id") == path.stem:
            out.append({k: _text(v) for k, v in record.items()})
    return sorted(out, key=lambda r: (r.get("started_utc", ""), r["run_id"]))


def runs(results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """Every recorded run: the rows of ``<results_dir>/runs.csv`` (text columns, ``""``
    where empty; ``RUN_COLUMNS`` first) plus runs known only from their resume mark, and
    a bool column ``resumable`` (this checkout may continue the run). Raises ValueError
    when the registry is malformed.

    Args:
        results_dir: the results folder.

    Returns:
        A DataFrame, one row per run.
    """
    frame = _read_registry(Path(results_dir) / f"{REGISTRY}.csv")
    marks = resumable(results_dir)
    extra = [m for m in marks if m["run_id"] not in set(frame["run_id"])]
    if extra:
        frame = pd.concat([frame, pd.DataFrame(extra)], ignore_index=True).fillna("")
    frame["resumable"] = frame["run_id"].isin({m["run_id"] for m in marks})
    return frame.reset_index(drop=True)
