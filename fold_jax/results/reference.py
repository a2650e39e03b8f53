"""The promoted reference of each machine kind, archiving runs, and stale runs.

``<results_dir>/reference/<kind>/`` holds one table per results file
(``<file>.csv.gz``, rows as in the run that measured them), ``reference.json`` (which
run each file comes from, and those runs' records with their metadata) and
``fingerprints/<digest>.json.gz`` (the code fingerprint of each of those runs). The
report reads it by default (:func:`fold_jax.results.load`). :func:`promote` copies a
finished run's files over it: the files the run has are replaced, the others keep their
rows (a run of one suite promotes that suite). Only the references are committed;
``results/runs/`` is git-ignored, and :func:`archive` moves runs out of it into
``<run_id>.tar.gz`` files elsewhere.

:func:`code_changes` says whether a run is stale: what changed in what the code
computes between the run's fingerprint and the imported package's
(:mod:`fold_jax.results.fingerprint`).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fold_jax.results import fingerprint as fp
from fold_jax.results.io import read_csv, write_bytes_if_changed, write_table
from fold_jax.results.runinfo import (
    MANIFEST,
    REFERENCE_DIR,
    RUNS_DIR,
    clear_resumable,
    machine_kind,
    metadata,
    now,
    read_json,
    read_run,
    run_dir,
    write_json,
)
from fold_jax.results.store import FINGERPRINT_FILE, tables

__all__ = ["FINGERPRINTS", "archive", "code_changes", "default_kind", "kinds", "promote",
           "run_fingerprint", "unarchive"]

FINGERPRINTS = "fingerprints"  # reference/<kind>/fingerprints/<digest>.json.gz
_KIND_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
_PROMOTABLE = ("finished", "")  # statuses promote accepts ("": no record of its status)


def kinds(results_dir: str | os.PathLike = "results") -> list[str]:
    """The machine kinds with a promoted reference in ``results_dir``.

    Args:
        results_dir: the results folder.

    Returns:
        The kinds, sorted.
    """
    return sorted(p.parent.name for p in (Path(results_dir) / REFERENCE_DIR).glob(
        f"*/{MANIFEST}"))


def default_kind(results_dir: str | os.PathLike = "results") -> str | None:
    """The reference :func:`fold_jax.results.load` reads by default: the only one, else
    this machine's kind (:func:`machine_kind` of :func:`metadata`) when it has one, else
    the most recently promoted; None without references.

    Args:
        results_dir: the results folder.

    Returns:
        The kind, or None.
    """
    found = kinds(results_dir)
    if len(found) <= 1:
        return found[0] if found else None
    here = machine_kind(metadata())
    if here in found:
        return here
    root = Path(results_dir) / REFERENCE_DIR
    return max(found, key=lambda k: (read_json(root / k / MANIFEST).get("promoted_utc", ""), k))


def _check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
        raise ValueError(f"kind={kind!r} must be a slug of 1-100 lowercase letters, digits "
                         f"and '-' (see fold_jax.results.machine_kind)")
    return kind


def _same_rows(path: Path, data: bytes) -> bool:
    """Whether the table at ``path`` already holds the CSV text ``data`` (compared after
    decompression: zlib builds may compress the same text differently)."""
    if not path.exists():
        return False
    with gzip.open(path, "rb") as f:
        return f.read() == data


def promote(run_id: str, results_dir: str | os.PathLike = "results", kind: str | None = None,
            *, files: Iterable[str] | None = None, allow_unfinished: bool = False
            ) -> dict[str, Any]:
    """Make run ``run_id`` the reference of its machine kind for every file it wrote.

    Each table of ``runs/<run_id>/`` is copied to ``reference/<kind>/`` as one
    deterministic gzip member (a file whose rows are unchanged is not rewritten); the
    reference's other files keep their rows and runs. ``reference.json`` lists each
    file's run and keeps those runs' records; fingerprints no run uses any more are
    removed. ValueError when the run does not exist, has no rows, or did not finish
    (``allow_unfinished`` promotes it anyway).

    Args:
        run_id: the run to promote.
        results_dir: the results folder.
        kind: the reference's machine kind (None: the run's own, from its metadata).
        files: promote only these files of the run (None: every file it wrote).
        allow_unfinished: promote a run whose status is running, interrupted or failed.

    Returns:
        ``{"kind", "directory", "replaced": [files], "unchanged": [files],
        "kept": {file: run}}``.
    """
    root = Path(results_dir)
    source = run_dir(root, run_id)
    record = read_run(source)
    found = tables(source)
    if files is not None:
        wanted = set(files)
        if wanted - set(found):
            raise ValueError(f"run {run_id!r} has no rows of {sorted(wanted - set(found))} "
                             f"(it has {sorted(found)})")
        found = {n: p for n, p in found.items() if n in wanted}
    if not record or not found:
        known = sorted(p.name for p in (root / RUNS_DIR).glob("*") if p.is_dir())
        raise ValueError(f"run {run_id!r} has no rows in {source} (runs here: {known})")
    status = str(record.get("status", ""))
    if status not in _PROMOTABLE and not allow_unfinished:
        raise ValueError(f"run {run_id!r} is {status!r}, not finished; finish it (rerun its "
                         f"command) or pass allow_unfinished=True")
    kind = _check_kind(kind if kind is not None else record.get("kind")
                       or machine_kind(record.get("meta") or {}))
    target = root / REFERENCE_DIR / kind
    target.mkdir(parents=True, exist_ok=True)
    manifest = read_json(target / MANIFEST)
    listed: dict[str, str] = dict(manifest.get("files") or {})
    replaced, unchanged = [], []
    for name, path in found.items():
        frame = read_csv(path, low_memory=False, dtype=str, keep_default_na=False)
        out = target / f"{name}.csv.gz"
        if _same_rows(out, frame.to_csv(index=False, lineterminator="\n").encode()):
            unchanged.append(name)
        else:
            write_table(frame, out)
            replaced.append(name)
        listed[name] = run_id
    runs = {r: (record if r == run_id else (manifest.get("runs") or {}).get(r, {}))
            for r in sorted(set(listed.values()))}
    if record.get("fingerprint") and (source / FINGERPRINT_FILE).exists():
        write_bytes_if_changed(target / FINGERPRINTS / f"{record['fingerprint']}.json.gz",
                               (source / FINGERPRINT_FILE).read_bytes())
    used = {str(r.get("fingerprint")) for r in runs.values()}
    for old in (target / FINGERPRINTS).glob("*.json.gz"):
        if old.name.removesuffix(".json.gz") not in used:
            old.unlink()
    write_json(target / MANIFEST, {"kind": kind, "files": dict(sorted(listed.items())),
                                   "runs": runs, "promoted": run_id, "promoted_utc": now()})
    kept = {n: r for n, r in listed.items() if n not in found}
    return {"kind": kind, "directory": str(target), "replaced": replaced,
            "unchanged": unchanged, "kept": kept}


def run_fingerprint(results_dir: str | os.PathLike, run: str) -> dict | None:
    """The code fingerprint of run ``run``: from its directory, else from a reference
    that holds it; None when neither has one.

    Args:
        results_dir: the results folder.
        run: the run id.

    Returns:
        The fingerprint, or None.
    """
    root = Path(results_dir)
    candidates = [run_dir(root, run) / FINGERPRINT_FILE]
    for kind in kinds(root):
        record = (read_json(root / REFERENCE_DIR / kind / MANIFEST).get("runs") or {}).get(run)
        if record and record.get("fingerprint"):
            candidates.append(root / REFERENCE_DIR / kind / FINGERPRINTS
                              / f"{record['fingerprint']}.json.gz")
    for path in candidates:
        if path.exists():
            with gzip.open(path, "rt") as f:
                return json.load(f)
    return None


def code_changes(results_dir: str | os.PathLike, run: str,
                 current: Mapping[str, Mapping[str, str]] | None = None) -> list[str] | None:
    """What changed in what the code computes since run ``run`` measured its rows.

    Args:
        results_dir: the results folder.
        run: the run id.
        current: the fingerprint to compare with (None: the imported package's).

    Returns:
        The changed ``module.statement`` keys ([]: not stale), or None when the run has
        no fingerprint.
    """
    old = run_fingerprint(results_dir, run)
    if old is None:
        return None
    return fp.changes(old, fp.current() if current is None else current)


def archive(runs: Iterable[str], results_dir: str | os.PathLike = "results", *,
            to: str | os.PathLike) -> list[Path]:
    """Move runs out of ``<results_dir>/runs/`` into ``<to>/<run_id>.tar.gz`` (each
    holding the folder ``<run_id>/``; restore with :func:`unarchive`). A run's resume
    mark is cleared. ValueError naming a run that does not exist or is archived already.

    Args:
        runs: the run ids.
        results_dir: the results folder.
        to: the archive folder (created).

    Returns:
        The archive files written.
    """
    runs = list(runs)
    sources = [run_dir(results_dir, r) for r in runs]
    target = Path(to)
    for rid, source in zip(runs, sources, strict=True):
        if not source.is_dir():
            raise ValueError(f"no run {rid!r} in {Path(results_dir) / RUNS_DIR}")
        if (target / f"{rid}.tar.gz").exists():
            raise ValueError(f"{target / f'{rid}.tar.gz'} exists: run {rid!r} is archived")
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for rid, source in zip(runs, sources, strict=True):
        path = target / f"{rid}.tar.gz"
        tmp = target / f".{rid}.tar.gz.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(source, arcname=rid)
        os.replace(tmp, path)
        shutil.rmtree(source)
        clear_resumable(results_dir, rid)
        out.append(path)
    return out


def unarchive(path: str | os.PathLike, results_dir: str | os.PathLike = "results") -> Path:
    """Restore an archived run (a file of :func:`archive`) into ``<results_dir>/runs/``.

    Args:
        path: the ``<run_id>.tar.gz``.
        results_dir: the results folder.

    Returns:
        The run's directory.
    """
    path = Path(path)
    rid = path.name.removesuffix(".tar.gz")
    target = run_dir(results_dir, rid)
    if target.exists():
        raise ValueError(f"run {rid!r} exists already in {target.parent}")
    with tarfile.open(path, "r:gz") as tar:
        names = tar.getnames()
        if any(n != rid and not n.startswith(f"{rid}/") for n in names):
            raise ValueError(f"{path}: holds paths outside {rid}/")
        tar.extractall(target.parent, filter="data")
    return target

