"""Rows in and out of the store: atomic resumable appends, done keys, loading.

Layout of a results folder (``results/`` by default)::

    runs/<run_id>/run.json            the run's record and metadata (once per run)
    runs/<run_id>/fingerprint.json.gz what its code computes (fold_jax.results.fingerprint)
    runs/<run_id>/<file>.csv.gz       its rows of each results file (kernels, races, ...)
    reference/<kind>/reference.json   the promoted reference of one machine kind
    reference/<kind>/<file>.csv.gz    (fold_jax.results.reference)

A run's tables are tidy CSVs, gzip-compressed, one row per measurement. The metadata
every row carries (``META``: run id, commit, host, cpu, backend, device, versions) is
stored once, in ``run.json``; a metadata column is written into the rows only where some
row's value differs from the run's (``timestamp_utc``, or the scaling suite's forced
host devices). :func:`load` joins it back, so every frame has the wide rows and columns
it always had.

:func:`append` adds rows to their run's directory: rows whose key is already there are
dropped (or replace the old ones with ``replace=True``); the new rows go in as one more
gzip member, atomically (a process killed at any moment leaves the old or the new file);
resumed with the same run id the same keys are skipped, so nothing is duplicated and
nothing written is lost. Resuming only looks at the current run's directory
(:func:`done_keys`), so a new run measures everything again.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fold_jax.results import fingerprint as fp
from fold_jax.results.catalog import canonical, check_key, check_name, normalize_key, validate
from fold_jax.results.columns import META_COLUMNS
from fold_jax.results.files import SCHEMA, SCHEMAS
from fold_jax.results.io import (
    append_table,
    check_writable,
    file_stem,
    gzip_bytes,
    locked,
    not_writer,
    read_csv,
    write_bytes_if_changed,
    write_table,
)
from fold_jax.results.runinfo import (
    ALL_RUNS,
    MANIFEST,
    REFERENCE_DIR,
    REGISTRY,
    RUN_FILE,
    RUNS_DIR,
    machine_kind,
    metadata,
    now,
    read_json,
    read_run,
    run_dir,
    run_id,
    write_json,
)

__all__ = ["FINGERPRINT_FILE", "TABLE_SUFFIX", "append", "done", "done_keys", "ensure_run",
           "load", "order", "read_table", "run_meta", "stored_columns", "tables"]

TABLE_SUFFIX = ".csv.gz"
FINGERPRINT_FILE = "fingerprint.json.gz"
_LEGACY_RUN_FIELDS = ("run_id", "timestamp_utc")  # per row, never in a run's "meta"


def _to_bool(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return pd.NA
    return str(value) in ("True", "1", "1.0")


def order(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame``'s columns in the file's order: metadata, the schema's, then others.

    Args:
        frame: rows of results file ``name``.
        name: the file's stem.

    Returns:
        The reordered frame.
    """
    described = [c.name for c in SCHEMA[name].columns] if name in SCHEMA else []
    # dict.fromkeys: a schema may repeat a metadata column (scaling's n_devices)
    first = [c for c in dict.fromkeys((*META_COLUMNS, *SCHEMAS.get(name, {}), *described))
             if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def _finish(frame: pd.DataFrame, path: Path, name: str) -> pd.DataFrame:
    """Validate (ValueError naming ``path``) and give bool columns the nullable dtype."""
    validate(frame, path, name)
    for column, kind in SCHEMAS.get(name, {}).items():
        if kind == "bool" and column in frame.columns and frame[column].dtype != bool:
            frame[column] = frame[column].map(_to_bool).astype("boolean")
    return frame


def run_meta(record: Mapping[str, Any], run: str) -> dict[str, Any]:
    """The metadata columns a run's rows share: ``run_id`` and the record's ``meta``.

    Args:
        record: a run record (``run.json``, or a reference's copy of it).
        run: the run id.

    Returns:
        ``{column: value}``.
    """
    meta = record.get("meta") if isinstance(record.get("meta"), Mapping) else {}
    return {"run_id": run, **{c: meta[c] for c in META_COLUMNS if c in meta}}


def _join(frame: pd.DataFrame, meta: Mapping[str, Any]) -> pd.DataFrame:
    """Add the metadata columns ``frame`` lacks, from ``meta`` (NaN where empty)."""
    for column, value in meta.items():
        if column not in frame.columns:
            frame[column] = np.nan if value in (None, "") else value
    return frame


def read_table(path: Path, meta: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """A stored table with its run's metadata joined back, validated.

    Args:
        path: a ``<file>.csv.gz`` (or legacy ``<file>.csv``).
        meta: the run's shared metadata (:func:`run_meta`; None: the table is whole).

    Returns:
        The rows, metadata first.
    """
    name = file_stem(path)
    frame = read_csv(path, low_memory=False)
    if meta:
        frame = order(_join(frame, meta), name)
    return _finish(frame, path, name)


def tables(directory: Path) -> dict[str, Path]:
    """The results tables in a run or reference directory (or a legacy flat folder).

    Args:
        directory: the folder.

    Returns:
        ``{file stem: path}``, sorted by stem; the legacy registry ``runs.csv`` excluded.
    """
    found = [p for p in directory.glob("*.csv*") if not p.name.startswith(".")
             and p.name.endswith((".csv", TABLE_SUFFIX)) and file_stem(p) != REGISTRY]
    return {file_stem(p): p for p in sorted(found, key=lambda p: p.name)}


def _run_frames(directory: Path) -> dict[str, pd.DataFrame]:
    meta = run_meta(read_run(directory), directory.name)
    return {name: read_table(p, meta) for name, p in tables(directory).items()}


def _reference_frames(directory: Path) -> dict[str, pd.DataFrame]:
    manifest = read_json(directory / MANIFEST)
    files, records = manifest.get("files") or {}, manifest.get("runs") or {}
    out = {}
    for name, path in tables(directory).items():
        rid = files.get(name)
        if rid is None:
            raise ValueError(f"{path}: not listed in {directory / MANIFEST} (files: "
                             f"{sorted(files)})")
        out[name] = read_table(path, run_meta(records.get(rid, {}), rid))
    return out


def _concat(parts: Sequence[dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    names = sorted({n for p in parts for n in p})
    return {n: order(pd.concat([p[n] for p in parts if n in p], ignore_index=True), n)
            for n in names}


def load(path: str | os.PathLike = "results", *, kind: str | None = None,
         run: str | None = None) -> dict[str, pd.DataFrame] | pd.DataFrame:
    """Validated results, every row with its metadata columns.

    For a folder, a dict of DataFrames by file stem: a run directory's tables; a
    reference directory's; for a results folder, the run ``run`` (``ALL_RUNS``: every
    run under ``runs/``), else the reference of machine kind ``kind`` (None: the
    default, :func:`fold_jax.results.reference.default_kind`), else, without a reference,
    the rows of every run under ``runs/``, else its flat ``*.csv`` files (the layout
    before runs had directories). {} when the folder does not exist. For a file path,
    one DataFrame: the table itself, or, where no such file exists, ``load(folder)[stem]``
    (so ``load("results/races.csv")`` is the reference's races). Raises ValueError
    naming the file (and row) when a file is malformed.

    Args:
        path: a results folder, a run or reference directory, or one table.
        kind: the reference's machine kind (results folders only).
        run: a run id, or ``ALL_RUNS`` (results folders only).

    Returns:
        ``{stem: DataFrame}`` for a folder, a DataFrame for a file.
    """
    from fold_jax.results import reference

    path = Path(path)
    if path.is_file():
        parent = path.parent
        if (parent / RUN_FILE).exists():
            return read_table(path, run_meta(read_run(parent), parent.name))
        if (parent / MANIFEST).exists():
            return _reference_frames(parent)[file_stem(path)]
        return read_table(path)
    if path.name.endswith((".csv", ".gz")):
        frames = load(path.parent, kind=kind, run=run)
        if file_stem(path) not in frames:
            raise FileNotFoundError(f"no results file at {path} (nor rows of "
                                    f"{file_stem(path)!r} in {path.parent})")
        return frames[file_stem(path)]
    if not path.is_dir():
        return {}
    if (path / RUN_FILE).exists():
        return _run_frames(path)
    if (path / MANIFEST).exists():
        return _reference_frames(path)
    runs_dir = path / RUNS_DIR
    if run == ALL_RUNS:
        return _concat([_run_frames(d) for d in sorted(runs_dir.glob("*")) if d.is_dir()])
    if run is not None:
        return _run_frames(run_dir(path, run))
    chosen = reference.default_kind(path) if kind is None else kind
    if chosen is not None:
        directory = path / REFERENCE_DIR / chosen
        if not (directory / MANIFEST).exists():
            raise ValueError(f"no reference of kind {chosen!r} in {path / REFERENCE_DIR}; "
                             f"known: {reference.kinds(path)}")
        return _reference_frames(directory)
    if runs_dir.is_dir():
        return load(path, run=ALL_RUNS)
    return {name: read_table(p) for name, p in tables(path).items()}


def _table(results_dir: str | os.PathLike, name: str, run: str) -> Path:
    return run_dir(results_dir, run) / f"{name}{TABLE_SUFFIX}"


def done_keys(name: str, key: Sequence[str], results_dir: str | os.PathLike = "results", *,
              run: str | None = None) -> set[tuple[str, ...]]:
    """The normalized keys (see :func:`normalize_key`) that run ``run`` (by default the
    current one, :func:`run_id`; ``ALL_RUNS`` for every run under ``runs/``) wrote to
    file ``name``.

    Args:
        name: the file's stem.
        key: the key columns.
        results_dir: the results folder.
        run: the run id (None: the current run; ``ALL_RUNS``: every run).

    Returns:
        The set of normalized key tuples (empty when the file or a key column is missing).
    """
    check_name(name)
    key = check_key(key)
    wanted = run_id() if run is None else run
    if wanted == ALL_RUNS:
        dirs = sorted(p for p in (Path(results_dir) / RUNS_DIR).glob("*") if p.is_dir())
    else:
        dirs = [run_dir(results_dir, wanted)]
    out: set[tuple[str, ...]] = set()
    for d in dirs:
        path = d / f"{name}{TABLE_SUFFIX}"
        if not path.exists():
            continue
        frame = read_table(path, run_meta(read_run(d), d.name))
        if all(k in frame.columns for k in key):
            out |= {normalize_key(r, key) for r in frame[key].to_dict("records")}
    return out


def done(name: str, key: Mapping[str, Any], results_dir: str | os.PathLike = "results", *,
         run: str | None = None) -> bool:
    """Whether run ``run`` (by default the current one) already wrote a row with these
    key values to file ``name``; rows of other runs never count.

    Args:
        name: the file's stem.
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


def ensure_run(directory: Path, meta: Mapping[str, Any], *, current: bool) -> dict[str, Any]:
    """The record of the run in ``directory``, given its shared metadata (``meta``,
    ``kind``, ``started_utc``) and, for the current process's run, the fingerprint of
    the code measuring it (``fingerprint`` and ``fingerprint.json.gz``) where it has none
    yet. Call under the directory's lock.

    Args:
        directory: the run's directory (created).
        meta: metadata of the run's rows (:func:`fold_jax.results.metadata`).
        current: whether the run is this process's (its code is the imported package).

    Returns:
        The record.
    """
    directory.mkdir(parents=True, exist_ok=True)
    record = read_run(directory)
    before = dict(record)
    if not isinstance(record.get("meta"), Mapping):
        record["meta"] = {c: meta[c] for c in META_COLUMNS
                          if c in meta and c not in _LEGACY_RUN_FIELDS}
        record["kind"] = machine_kind(record["meta"])
    record.setdefault("run_id", directory.name)
    record.setdefault("started_utc", now())
    if current and not record.get("fingerprint"):
        code = fp.current()
        write_bytes_if_changed(directory / FINGERPRINT_FILE, gzip_bytes(fp.to_json(code).encode()))
        record["fingerprint"] = fp.digest(code)
    if record != before:
        write_json(directory / RUN_FILE, record)
    return record


def stored_columns(frame: pd.DataFrame, meta: Mapping[str, Any]) -> list[str]:
    """The columns of ``frame`` to store: all but ``run_id`` and the metadata columns
    whose every value equals the run's (``meta``; None, NaN and "" are equal).

    Args:
        frame: rows of one run, metadata included.
        meta: the run's shared metadata (:func:`run_meta`).

    Returns:
        The column names, in ``frame``'s order.
    """
    def shared(column: str) -> bool:
        if column == "run_id":
            return True
        if column not in META_COLUMNS or column not in meta:
            return False
        value = canonical(meta[column])
        return bool((frame[column].map(canonical) == value).all())

    return [c for c in frame.columns if not shared(c)]


def _write_run(directory: Path, name: str, rows: list[dict], key: list[str], replace: bool,
               current: bool, machine: Mapping[str, Any]) -> int:
    """Add one run's rows to its table, under the run directory's lock. ``machine``: the
    metadata a new run record takes (this process's for the current run, so a suite
    whose rows override a column, e.g. scaling's forced host devices, does not set the
    run's machine kind)."""
    with locked(directory):
        record = ensure_run(directory, machine, current=current)
        meta = run_meta(record, directory.name)
        path = directory / f"{name}{TABLE_SUFFIX}"
        for stale in directory.glob(f".{path.name}.*.tmp"):  # left by a killed writer
            with contextlib.suppress(OSError):
                stale.unlink()
        old = read_table(path, meta) if path.exists() else pd.DataFrame()
        new, seen = [], set()
        for row in reversed(rows) if replace else rows:  # replace: the last row wins
            k = normalize_key(row, key)
            if k not in seen:
                seen.add(k)
                new.append(row)
        if replace:
            new.reverse()
        dropped = False
        if len(old) and all(k in old.columns for k in key):
            old_keys = [normalize_key(r, key) for r in old[key].to_dict("records")]
            if replace:
                hit = np.array([k in seen for k in old_keys], dtype=bool)
                old, dropped = old[~hit], bool(hit.any())
            else:
                existing = set(old_keys)
                new = [r for r in new if normalize_key(r, key) not in existing]
        if not new:
            return 0
        added = pd.DataFrame(new)
        if len(old) and not dropped:
            header = list(read_csv(path, nrows=0).columns)
            shared = {c for c in META_COLUMNS if c == "run_id" or (c in meta and all(
                canonical(r.get(c)) == canonical(meta[c]) for r in new))}
            if set(added.columns) - shared <= set(header):
                append_table(added.reindex(columns=header), path)  # the header holds
                return len(new)
        frame = order(added if old.empty and not len(old.columns)
                      else pd.concat([old, added], ignore_index=True), name)
        write_table(frame[stored_columns(frame, meta)], path)
    return len(new)


def append(name: str, rows: Iterable[Mapping[str, Any]], *, key: Sequence[str],
           results_dir: str | os.PathLike = "results", replace: bool = False) -> int:
    """Atomically add ``rows`` to results file ``name`` of their run; returns rows written.

    Metadata columns (:func:`metadata`) are added where a row lacks them; each row goes
    to the directory of its ``run_id`` (``<results_dir>/runs/<run_id>/<name>.csv.gz``).
    Rows whose ``key`` columns match a row already written by the same run (or an earlier
    new row) are dropped, so a resumed run writes no duplicates; with ``replace=True``
    they replace that run's old rows instead. Rows of other runs are never dropped or
    replaced. Raises ValueError for rows missing key or core columns (nothing is
    written), ValueError when the existing file is malformed or ``name`` is the legacy
    registry, and PermissionError / OSError naming the path when the folder cannot be
    written. In a multi-host run only process 0 writes (the others return 0).

    Args:
        name: the file's stem (not "runs").
        rows: the rows, mappings of column -> value.
        key: the columns that identify a row within a run.
        results_dir: the results folder.
        replace: replace this run's rows with matching keys instead of dropping the new ones.

    Returns:
        The number of rows written.
    """
    check_name(name)
    key = [k for k in check_key(key) if k != "run_id"]
    if name == REGISTRY:
        raise ValueError(f"{REGISTRY!r} names the run registry; write runs with record_run")
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
        lacking = [c for c in (*key, *required) if c not in row and c not in meta]
        if lacking:
            raise ValueError(f"rows[{i}] for {name} lacks columns {lacking}")
        for column, value in meta.items():
            row.setdefault(column, value)
    if not rows or not_writer():
        return 0
    root = check_writable(results_dir)
    by_run: dict[str, list[dict]] = {}
    for row in rows:
        by_run.setdefault(canonical(row["run_id"]), []).append(row)
    written = 0
    for rid, group in by_run.items():
        directory = run_dir(root, rid)
        directory.mkdir(parents=True, exist_ok=True)
        current = rid == meta["run_id"]
        written += _write_run(directory, name, group, key, replace, current,
                              meta if current else group[0])
    return written
