"""The one-time move of the flat results files into runs and a reference.

Before runs had directories, ``results/<file>.csv`` held the rows of every run side by
side, with the metadata repeated on every row, and ``results/runs.csv`` recorded the
runs. :func:`migrate` keeps the rows the report showed (for each file, the newest
finished run with rows in it: :func:`reference_runs`), writes each such run's rows into
``runs/<run_id>/`` (metadata once, in ``run.json``, with its registry record and the
fingerprint of the code at its commit, read from git), promotes them per file into
``reference/<kind>/`` and removes the flat files. The rows of the other runs are
dropped from the work tree (they stay in git history); the summary it returns counts
them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fold_jax.results import fingerprint as fp
from fold_jax.results.catalog import canonical
from fold_jax.results.columns import META_COLUMNS, META_TYPES
from fold_jax.results.io import gzip_bytes, read_csv, write_bytes_if_changed, write_table
from fold_jax.results.reference import promote
from fold_jax.results.runinfo import (
    REGISTRY,
    RUN_FILE,
    git,
    machine_kind,
    run_dir,
    text,
    write_json,
)
from fold_jax.results.store import FINGERPRINT_FILE, TABLE_SUFFIX, stored_columns, tables

__all__ = ["legacy_registry", "migrate", "reference_runs", "sources_at"]

_SHOWN = ("finished", "unrecorded")


def legacy_registry(directory: str | os.PathLike) -> pd.DataFrame:
    """The flat run registry ``runs.csv`` (text; an empty frame when absent).

    Args:
        directory: the flat results folder.

    Returns:
        One row per recorded run.
    """
    path = Path(directory) / f"{REGISTRY}.csv"
    if not path.exists():
        return pd.DataFrame(columns=["run_id", "status", "started_utc"])
    frame = read_csv(path, dtype=str, keep_default_na=False)
    if "run_id" not in frame.columns:
        raise ValueError(f"{path}: missing column 'run_id' (run registry)")
    return frame


def reference_runs(frames: Mapping[str, pd.DataFrame], registry: pd.DataFrame
                   ) -> dict[str, str]:
    """For each file, the run the report showed: the newest finished run with rows in it
    (a run without a record counts as finished, started at its first row), else the
    newest run.

    Args:
        frames: file stem -> rows (text), as in the flat folder.
        registry: :func:`legacy_registry`.

    Returns:
        ``{file: run_id}``.
    """
    records = {r["run_id"]: r for r in registry.to_dict("records")}
    first: dict[str, str] = {}
    for frame in frames.values():
        stamps = frame.groupby("run_id")["timestamp_utc"].min()
        for rid, stamp in stamps.items():
            first[rid] = min(first.get(rid, stamp), stamp)

    def started(rid: str) -> pd.Timestamp:
        value = records.get(rid, {}).get("started_utc") or first.get(rid, "")
        out = pd.to_datetime(value, utc=True, errors="coerce")
        return pd.Timestamp.min.tz_localize("UTC") if pd.isna(out) else out

    out = {}
    for name, frame in frames.items():
        present = sorted(set(frame["run_id"]) - {""})
        shown = [r for r in present
                 if (records.get(r, {}).get("status") or "unrecorded") in _SHOWN]
        if present:
            out[name] = max(shown or present, key=lambda r: (started(r), r))
    return out


def sources_at(commit: str, repo: str | os.PathLike | None = None) -> dict[str, str]:
    """The sources a fingerprint covers, as they were at ``commit`` (read with git).

    Args:
        commit: the commit.
        repo: a folder in the repository (None: the current directory).

    Returns:
        ``{relative path: source}``; ValueError when git cannot read the commit.
    """
    listing = git(["ls-tree", "-r", "--name-only", commit, "--", ":(top)fold_jax",
                   ":(top)bench"], repo)
    if listing is None or listing.returncode != 0:
        raise ValueError(f"git cannot list commit {commit!r}: "
                         f"{'no git' if listing is None else listing.stderr.strip()}")
    out = {}
    for path in listing.stdout.split():
        if fp.covered(path):
            shown = git(["show", f"{commit}:{path}"], repo)
            if shown is None or shown.returncode != 0:
                raise ValueError(f"git cannot read {path} at {commit}")
            out[path] = shown.stdout
    return out


def _meta(rows: list[pd.DataFrame]) -> dict[str, Any]:
    """A run's shared metadata: each column's most common value over its rows."""
    both = pd.concat(rows, ignore_index=True)
    meta: dict[str, Any] = {}
    for column in META_COLUMNS:
        if column in ("run_id", "timestamp_utc") or column not in both.columns:
            continue
        values = both[column].map(canonical)
        value = values.mode().iloc[0] if len(values) else ""
        if META_TYPES.get(column) == "int" and value != "":
            value = int(float(value))
        meta[column] = value
    return meta


def migrate(legacy_dir: str | os.PathLike = "results",
            results_dir: str | os.PathLike | None = None, *,
            reference: Mapping[str, str] | None = None, repo: str | os.PathLike | None = None,
            remove: bool = True) -> dict[str, Any]:
    """Move the flat ``<legacy_dir>/*.csv`` into runs and a reference (module docstring).

    Args:
        legacy_dir: the flat results folder.
        results_dir: the store to write (None: ``legacy_dir``).
        reference: ``{file: run_id}`` to keep (None: :func:`reference_runs`).
        repo: the git repository whose history gives each kept run's code (None: the
            current directory's).
        remove: delete the flat files and ``runs.csv`` afterwards.

    Returns:
        A summary: ``reference`` ({file: run}), ``kinds``, ``rows_kept`` and
        ``rows_dropped`` per file, ``runs_dropped`` (ids), ``bytes_before``.
    """
    legacy = Path(legacy_dir)
    store = legacy if results_dir is None else Path(results_dir)
    paths = {n: p for n, p in tables(legacy).items() if p.name.endswith(".csv")}
    if not paths:
        raise ValueError(f"no flat results files (*.csv) in {legacy}")
    frames = {n: read_csv(p, dtype=str, keep_default_na=False) for n, p in paths.items()}
    registry = legacy_registry(legacy)
    chosen = dict(reference_runs(frames, registry) if reference is None else reference)
    unknown = {n: r for n, r in chosen.items() if n not in frames or
               not (frames[n]["run_id"] == r).any()}
    if unknown:
        raise ValueError(f"reference={unknown}: no such rows in {legacy}")
    records = {r["run_id"]: r for r in registry.to_dict("records")}
    codes: dict[str, dict] = {}
    kinds = set()
    for rid in sorted(set(chosen.values())):
        rows = {n: f[f["run_id"] == rid] for n, f in frames.items() if (f["run_id"] == rid).any()}
        meta = _meta(list(rows.values()))
        directory = run_dir(store, rid)
        directory.mkdir(parents=True, exist_ok=True)
        shared = {"run_id": rid, **meta}
        for name, part in rows.items():
            write_table(part[stored_columns(part, shared)], directory / f"{name}{TABLE_SUFFIX}")
        commit = str(meta.get("git_commit", ""))
        record = {k: text(v) for k, v in records.get(rid, {}).items()}
        record |= {"run_id": rid, "meta": meta, "kind": machine_kind(meta)}
        if commit not in codes:
            codes[commit] = fp.fingerprint(sources_at(commit, repo))
        write_bytes_if_changed(directory / FINGERPRINT_FILE,
                               gzip_bytes(fp.to_json(codes[commit]).encode()))
        record["fingerprint"] = fp.digest(codes[commit])
        write_json(directory / RUN_FILE, record)
        files = [n for n, r in chosen.items() if r == rid]
        kinds.add(promote(rid, store, files=files, allow_unfinished=True)["kind"])
    kept = {n: int((f["run_id"] == chosen.get(n)).sum()) for n, f in frames.items()}
    summary = {
        "reference": chosen, "kinds": sorted(kinds), "rows_kept": kept,
        "rows_dropped": {n: len(f) - kept[n] for n, f in frames.items()},
        "runs_dropped": sorted(set().union(*[set(f["run_id"]) for f in frames.values()],
                                           set(registry["run_id"])) - set(chosen.values())),
        "bytes_before": sum(p.stat().st_size for p in paths.values()),
    }
    if remove:
        for p in paths.values():
            p.unlink()
        (legacy / f"{REGISTRY}.csv").unlink(missing_ok=True)
    return summary
