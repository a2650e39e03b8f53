"""Runs: ids, machine metadata and kind, the run record, resume marks, git.

Every row carries the ``run_id`` of the run that wrote it (:func:`run_id`, shared with
child processes through ``$FOLD_JAX_RUN_ID``). A run lives in its own directory
``<results_dir>/runs/<run_id>/`` (:func:`run_dir`); its record ``run.json``
(:func:`record_run`, :func:`read_run`) holds, once for the run, its status (running /
interrupted / failed / finished), times, profile and parts, and the metadata of its rows
(``META``: commit, host, cpu, backend, device, versions), its machine kind
(:func:`machine_kind`) and its code fingerprint (:mod:`fold_jax.results.fingerprint`).
:func:`runs` tabulates every run a results folder knows: those under ``runs/``, those
of the promoted references, and those marked resumable. ``fold_jax.bench.run`` marks a run it
may continue with ``<results_dir>/.partial/<run_id>.json`` (:func:`mark_resumable`),
which git ignores: a fresh clone has no run to continue.
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
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fold_jax.results.io import check_writable, locked, not_writer, replace_atomic

__all__ = ["ALL_RUNS", "CODE_PATHS", "MANIFEST", "REFERENCE_DIR", "REGISTRY", "RUNS_DIR",
           "RUN_COLUMNS", "RUN_FILE", "check_run_id", "clear_resumable", "code_changed",
           "cpu_model", "git", "git_commit", "machine_kind", "mark_resumable", "metadata",
           "new_run_id", "now", "read_json", "read_run", "record_run", "resumable", "run_dir",
           "run_id", "runs", "set_run_id", "text", "write_json"]

RUNS_DIR = "runs"  # <results_dir>/runs/<run_id>/: one directory per run (git-ignored)
REFERENCE_DIR = "reference"  # <results_dir>/reference/<kind>/: the promoted reference
RUN_FILE = "run.json"  # a run's record and metadata, in its directory
MANIFEST = "reference.json"  # a reference's files -> run ids, and those runs' records
# the legacy run registry <results_dir>/runs.csv (read by the migration only)
REGISTRY = "runs"
RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "status", "started_utc", "updated_utc", "finished_utc", "git_commit", "host",
    "cpu_model", "backend", "device_kind", "n_devices", "jax_version", "profile", "parts",
    "filter", "attempts", "pid", "command",
)
ALL_RUNS = "*"  # done_keys(..., run=ALL_RUNS): rows of every run
# code_changed's default paths (git pathspecs: ":(exclude)" drops a path); the report
# judges staleness by fingerprint (fold_jax.results.fingerprint), not by this diff
CODE_PATHS: tuple[str, ...] = ("fold_jax", "bench", ":(exclude)fold_jax/report",
                               ":(exclude)fold_jax/results")
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



def git(args: Sequence[str], cwd: str | os.PathLike | None = None
        ) -> subprocess.CompletedProcess | None:
    """``git args`` run in ``cwd`` (else the current directory, then the package's
    directory), in the first of them inside a git work tree.

    Args:
        args: git's arguments.
        cwd: a folder in the repository (None: the current directory, else the package's).

    Returns:
        The finished process (its output as text), or None without git.
    """
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
    out = git(["rev-parse", "HEAD"], cwd)
    if out is not None and out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    return "unknown"


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
    top = [p.replace(":(exclude)", ":(top,exclude)") if p.startswith(":(exclude)")
           else f":(top){p}" for p in paths]
    out = git(["diff", "--quiet", str(commit), str(head), "--", *top], cwd)
    if out is None or out.returncode not in (0, 1):
        return None
    return out.returncode == 1


def cpu_model(cpuinfo: str | None = None) -> str:
    """The host CPU in one line: model name, architecture, logical cores and
    ``avx512`` when the CPU has AVX-512 (timings and some float roundings depend on it),
    e.g. ``"AMD EPYC 7B13 (x86_64, 2 cores)"``.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (None: read it; on a system without it
            the model comes from ``platform.processor()``).

    Returns:
        The description ("unknown" parts where the system does not say).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip().lower(), value.strip())
    model = (fields.get("model name") or fields.get("hardware") or fields.get("cpu model")
             or platform.processor() or "unknown")
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    extras = [platform.machine() or "unknown", f"{os.cpu_count() or 0} cores"]
    if "avx512f" in flags:
        extras.append("avx512")
    return f"{' '.join(model.split())} ({', '.join(extras)})"


def metadata() -> dict[str, Any]:
    """Metadata for a row: run_id (:func:`run_id`), timestamp_utc (now), git_commit,
    host (``platform.node()``), cpu_model (:func:`cpu_model`), backend, device_kind,
    n_devices, jax_version, jaxlib_version.

    Returns:
        A dict of the metadata columns and their values.
    """
    global _STATIC_META
    if _STATIC_META is None:
        import jax
        import jaxlib

        devices = jax.devices()
        _STATIC_META = {
            "git_commit": git_commit(),
            "host": platform.node() or "unknown",
            "cpu_model": cpu_model(),
            "backend": jax.default_backend(),
            "device_kind": devices[0].device_kind if devices else "unknown",
            "n_devices": jax.device_count(),
            "jax_version": jax.__version__,
            "jaxlib_version": getattr(jaxlib, "__version__", "unknown"),
        }
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return {"run_id": run_id(), "timestamp_utc": now, **_STATIC_META}



def machine_kind(meta: Mapping[str, Any]) -> str:
    """The machine kind of a run's metadata: a slug of backend, device kind (when it is
    not just the backend's name), CPU model and device count, e.g.
    ``cpu-intel-xeon-processor-x86-64-2-cores-avx512-1dev``. References are kept per
    kind: timings are only comparable within one.

    Args:
        meta: the metadata (backend, device_kind, cpu_model, n_devices; missing or empty
            fields count as ``unknown``).

    Returns:
        The slug: lowercase letters, digits and ``-``; at most 100 characters (a longer
        one is cut and ends in a hash of the whole).
    """
    def field(name: str) -> str:
        value = text(meta.get(name)).strip()
        return value or "unknown"

    backend, device = field("backend"), field("device_kind")
    cpu = re.sub(r"\((r|tm)\)", "", field("cpu_model"), flags=re.IGNORECASE)
    devices = text(meta.get("n_devices")).strip()
    with contextlib.suppress(ValueError):
        devices = str(int(float(devices)))
    parts = [backend] + ([device] if device.lower() != backend.lower() else [])
    slug = "-".join([*parts, cpu, f"{devices or 'unknown'}dev"]).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", slug).strip("-")
    if len(slug) > 100:
        import hashlib

        slug = f"{slug[:91]}-{hashlib.sha256(slug.encode()).hexdigest()[:8]}"
    return slug


def now() -> str:
    """The current UTC time, ISO 8601 to the second.

    Returns:
        The time stamp.
    """
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def text(value: Any) -> str:
    """``value`` as record text: ``""`` for None and NaN.

    Args:
        value: any value.

    Returns:
        Its text.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` ({} when the file does not exist); ValueError naming
    it when it is not a JSON object.

    Args:
        path: the file.

    Returns:
        The object.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def write_json(path: Path, data: Mapping[str, Any]) -> bool:
    """Atomically write ``data`` as sorted, indented JSON, unless ``path`` holds it already.

    Args:
        path: the file.
        data: a JSON-able mapping.

    Returns:
        Whether the file was written.
    """
    out = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if path.exists() and path.read_text() == out:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomic(path, lambda f: f.write(out))
    return True


def run_dir(results_dir: str | os.PathLike, run: str) -> Path:
    """``<results_dir>/runs/<run>``: the directory of run ``run`` (not created).

    Args:
        results_dir: the results folder.
        run: a run id.

    Returns:
        The path.
    """
    return Path(results_dir) / RUNS_DIR / check_run_id(run)


def read_run(path: str | os.PathLike) -> dict[str, Any]:
    """The record ``run.json`` of the run directory ``path`` ({} when there is none).

    Args:
        path: a run directory.

    Returns:
        The record: text fields (RUN_COLUMNS and others), ``meta`` (the rows' metadata),
        ``kind`` and ``fingerprint`` where known.
    """
    return read_json(Path(path) / RUN_FILE)


def record_run(results_dir: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Create or update the record of run ``record["run_id"]`` (``runs/<id>/run.json``,
    atomically, under the run directory's lock): the given fields replace the old ones,
    the others are kept; ``updated_utc`` is set to now. In a multi-host run only process
    0 writes.

    Args:
        results_dir: the results folder.
        record: the run's fields (text); must hold a valid ``run_id``.
    """
    rid = check_run_id(record.get("run_id", ""))
    if not_writer():
        return
    directory = run_dir(check_writable(results_dir), rid)
    directory.mkdir(parents=True, exist_ok=True)
    fields = {k: text(v) for k, v in record.items()} | {"updated_utc": now()}
    with locked(directory):
        write_json(directory / RUN_FILE, read_run(directory) | fields)


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
    if not_writer():
        return
    directory = _partial_dir(check_writable(results_dir))
    directory.mkdir(exist_ok=True)
    body = json.dumps({k: text(v) for k, v in record.items()}, indent=1, sort_keys=True)
    replace_atomic(directory / f"{rid}.json", lambda f: f.write(body + "\n"))


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
            out.append({k: text(v) for k, v in record.items()})
    return sorted(out, key=lambda r: (r.get("started_utc", ""), r["run_id"]))


def _flat(record: Mapping[str, Any]) -> dict[str, str]:
    """A run record as one table row: its text fields, its metadata where the record
    lacks them, and its kind."""
    meta = record.get("meta") if isinstance(record.get("meta"), Mapping) else {}
    row = {k: text(v) for k, v in record.items() if not isinstance(v, Mapping | list)}
    for column in RUN_COLUMNS:
        if not row.get(column) and text(meta.get(column)):
            row[column] = text(meta[column])
    if meta and not row.get("kind"):
        row["kind"] = machine_kind(meta)
    return row


def runs(results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """Every run the results folder knows: the records of ``runs/*/run.json``, of the
    runs behind each promoted reference (column ``reference``: its kind, "" for others)
    and the runs known only from their resume mark; a bool column ``resumable`` (this
    checkout may continue the run). A run with rows but no recorded status (written
    outside ``fold_jax.bench.run``) is not listed: the report counts such runs as finished. Text
    columns, ``""`` where empty; ``RUN_COLUMNS`` first. Raises ValueError when a record
    is malformed.

    Args:
        results_dir: the results folder.

    Returns:
        A DataFrame, one row per run (a run both local and in a reference: the local
        record).
    """
    root = Path(results_dir)
    rows: dict[str, dict[str, str]] = {}
    for path in sorted((root / REFERENCE_DIR).glob(f"*/{MANIFEST}")):
        manifest = read_json(path)
        for rid, record in (manifest.get("runs") or {}).items():
            rows[rid] = _flat({"run_id": rid, **record}) | {"reference": path.parent.name}
    for path in sorted((root / RUNS_DIR).glob(f"*/{RUN_FILE}")):
        record = read_json(path)
        rid = text(record.get("run_id")) or path.parent.name
        if not record.get("status") and rid not in rows:
            continue  # rows but no record (written outside fold_jax.bench.run): as before records
        rows[rid] = {"reference": rows.get(rid, {}).get("reference", "")} | _flat(
            {**record, "run_id": rid})
    marks = resumable(results_dir)
    for mark in marks:
        rows.setdefault(mark["run_id"], dict(mark))
    columns = list(dict.fromkeys([*RUN_COLUMNS, "kind", "reference",
                                  *[c for r in rows.values() for c in r]]))
    frame = pd.DataFrame([rows[r] for r in sorted(rows)], columns=columns, dtype=object)
    frame = frame.fillna("")
    frame["resumable"] = frame["run_id"].isin({m["run_id"] for m in marks})
    return frame.reset_index(drop=True)
