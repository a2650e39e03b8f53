"""Results files: schema, machine metadata, atomic resumable appends, validated loading.

Every benchmark writes tidy CSVs under ``results_dir`` (``results/`` by default):
one file per kind (``kernels``, ``races``, ``curves``, ``variants``, ``probes``,
``scaling``). Each row carries the metadata of :func:`metadata` (``META_COLUMNS``)
and at least the core columns of its file (``SCHEMAS``); extra columns are welcome.

Writes are atomic: :func:`append` reads the current file, drops new rows whose key
is already there, writes the whole new file to a temporary file in the same
directory, fsyncs it and ``os.replace``-s it over the old one. A process killed at
any moment leaves either the old or the new file, never a torn one; rerun, the
same keys are skipped, so nothing is duplicated and nothing written is lost.
Writers in several processes are serialised by an advisory ``flock`` on the results
directory (POSIX); where that is unavailable, one writer at a time is assumed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import platform
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "MACHINE_KEY",
    "META_COLUMNS",
    "SCHEMAS",
    "append",
    "check_writable",
    "done",
    "done_keys",
    "load",
    "metadata",
    "normalize_key",
    "run_id",
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
# the metadata that names the machine: in every resume key, so a rerun skips only the
# rows this machine wrote
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
}
_META_TYPES = {"n_devices": "int"}

_RUN_ID: str | None = None
_STATIC_META: dict[str, Any] | None = None


def run_id() -> str:
    """The id shared by every row this process writes (``$FOLD_JAX_RUN_ID`` if set)."""
    global _RUN_ID
    if _RUN_ID is None:
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        _RUN_ID = os.environ.get("FOLD_JAX_RUN_ID") or f"{stamp}-{uuid.uuid4().hex[:6]}"
    return _RUN_ID


def _git_commit() -> str:
    for cwd in (Path.cwd(), Path(__file__).resolve().parent):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                 text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return "unknown"


def metadata() -> dict[str, Any]:
    """Machine metadata for a row: run_id, timestamp_utc (now), git_commit, host
    (``platform.node()``: resuming only skips rows this machine wrote), backend,
    device_kind, n_devices, jax_version, jaxlib_version."""
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
    """The canonical tuple identifying ``row`` by the columns ``key``."""
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
    ``*.csv`` in it; {} when it does not exist), or one DataFrame for a CSV path.

    Raises ValueError naming the file (and row) when a file is malformed.
    """
    path = Path(path)
    if path.suffix == ".csv" or path.is_file():
        if not path.exists():
            raise FileNotFoundError(f"no results file at {path}")
        return _read(path)
    if not path.exists():
        return {}
    return {p.stem: _read(p) for p in sorted(path.glob("*.csv")) if not p.name.startswith(".")}


def done_keys(name: str, key: Sequence[str], results_dir: str | os.PathLike = "results"
              ) -> set[tuple[str, ...]]:
    """The normalized keys (see :func:`normalize_key`) already in ``<name>.csv``."""
    _check_name(name)
    key = _check_key(key)
    path = Path(results_dir) / f"{name}.csv"
    if not path.exists():
        return set()
    frame = _read(path)
    if any(k not in frame.columns for k in key):
        return set()
    return {normalize_key(r, key) for r in frame[key].to_dict("records")}


def done(name: str, key: Mapping[str, Any], results_dir: str | os.PathLike = "results") -> bool:
    """Whether a row with these key values is already in ``<results_dir>/<name>.csv``."""
    if not isinstance(key, Mapping) or not key:
        raise TypeError(f"key must be a non-empty dict of column -> value, got {key!r}")
    columns = list(key)
    return normalize_key(key, columns) in done_keys(name, columns, results_dir)


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
    be written."""
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; results are for sharing
        with os.fdopen(fd, "w", newline="") as f:
            frame.to_csv(f, index=False)
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
    ``key`` columns match a row already in the file (or an earlier new row) are dropped,
    so a resumed run writes no duplicates; with ``replace=True`` they replace the old
    rows instead. Raises ValueError for rows missing key or core columns (nothing is
    written), ValueError when the existing file is malformed, and PermissionError /
    OSError naming the path when the directory cannot be written. In a multi-host
    run only process 0 writes (the others return 0).
    """
    _check_name(name)
    key = _check_key(key)
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
        new, seen = [], set()
        for row in reversed(rows) if replace else rows:  # replace: the last row wins
            k = normalize_key(row, key)
            if k not in seen:
                seen.add(k)
                new.append(row)
        if replace:
            new.reverse()
        if len(old) and all(k in old.columns for k in key):
            old_keys = [normalize_key(r, key) for r in old[key].to_dict("records")]
            if replace:
                old = old[[k not in seen for k in old_keys]]
            else:
                existing = set(old_keys)
                new = [r for r in new if normalize_key(r, key) not in existing]
        if not new:
            return 0
        added = pd.DataFrame(new)
        frame = added if old.empty and not len(old.columns) else pd.concat(
            [old, added], ignore_index=True)
        _write_atomic(_order(frame, name), path)
    return len(new)
