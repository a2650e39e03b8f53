"""Which run a benchmark command writes (:mod:`fold_jax.bench.run`): a new run, or an
unfinished one it continues (:func:`select_run`): the same command on the same machine and
code continues the newest unfinished run of this checkout; ``--resume RUN_ID`` continues
exactly that run or fails saying why (:class:`RunChoiceError`); ``--new`` never continues.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

from fold_jax import results

__all__ = ["MACHINE", "OPTIONS", "RunChoiceError", "describe", "now_utc", "select_run"]

# one machine a run: the results' machine key and the CPU (a run resumes only on its CPU)
MACHINE = ("cpu_model", *results.MACHINE_KEY)
# the command a run was started with (a resumed run keeps them)
OPTIONS = ("profile", "parts", "filter", "imports", "methods", "tasks")


class RunChoiceError(Exception):
    """The requested run cannot be continued (the message says why)."""


def now_utc() -> str:
    """UTC now, to the millisecond (orders runs started in the same second).

    Returns:
        An ISO 8601 timestamp.
    """
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _pid_alive(record: Mapping[str, str]) -> bool:
    """Whether another process on this host that is still alive holds ``record``'s run."""
    try:
        pid = int(record.get("pid", ""))
    except ValueError:
        return False
    if record.get("host") != platform.node() or pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def describe(record: Mapping[str, str]) -> str:
    """The command-line options a run record was started with, as text.

    Args:
        record: a run record (profile, parts, filter, imports, methods, tasks).

    Returns:
        E.g. ``"--profile quick --only races -k digits"``.
    """
    options = f"--profile {record.get('profile')} --only {record.get('parts')}"
    if record.get("filter"):
        options += f" -k {record['filter']}"
    for name in ("imports", "methods", "tasks"):
        if record.get(name):
            options += f" --{name} {record[name]}"
    return options


def _continuable(record: Mapping[str, str], current: Mapping[str, Any]) -> str | None:
    """Why the run of ``record`` cannot be continued here (None when it can)."""
    machine = {c: str(current[c]) for c in MACHINE}
    theirs = {c: record.get(c, "") for c in MACHINE}
    if theirs != machine:
        return (f"it measured another machine ({', '.join(f'{c}={v}' for c, v in theirs.items())}"
                f"; this is {', '.join(f'{c}={v}' for c, v in machine.items())})")
    commit, head = record.get("git_commit", ""), str(current["git_commit"])
    changed = False if commit == head else results.code_changed(commit, head)
    if changed is not False:
        since = ("has changed since" if changed else "cannot be compared with it")
        return (f"it started at commit {commit[:8]} and the code (fold_jax/, bench/) {since} "
                f"(checkout at {head[:8]}); its rows would mix code versions")
    if record.get("status") == "running" and _pid_alive(record):
        return f"it is still running (pid {record['pid']})"
    return None


def select_run(results_dir: str, options: Mapping[str, str], current: Mapping[str, Any], *,
               explicit: Sequence[str] = (), resume: str | None = None, new: bool = False,
               requested: str | None = None) -> tuple[dict[str, str] | None, str, list[str]]:
    """Decide which run this command writes: ``(record, run_id, notes)`` where ``record``
    is the resumable record of the run to continue (None: a new run ``run_id``) and
    ``notes`` say why an unfinished run is not continued.

    ``options``: this command's profile, parts (comma-joined) and filter (``-k`` or
    ``""``); ``explicit``: those given on the command line; ``current``: this machine's
    :func:`fold_jax.results.metadata`. ``resume``: continue exactly that run
    (RunChoiceError when it is unknown, finished, not from this checkout, of another
    machine or code, or when an ``explicit`` option differs from its own).
    ``requested``: an id from ``$FOLD_JAX_RUN_ID`` (continued when resumable, else the
    id of the new run). ``new``: never continue. Otherwise the newest resumable run
    with the same ``options`` and machine is continued when the code has not changed
    since it started.

    Args:
        results_dir: the results folder.
        options: this command's run options (:data:`OPTIONS`).
        current: this machine's metadata.
        explicit: the options given on the command line.
        resume: ``--resume RUN_ID`` (None: not given).
        new: ``--new``.
        requested: ``$FOLD_JAX_RUN_ID`` (None: unset).

    Returns:
        ``(record or None, run_id, notes)``.

    Raises:
        RunChoiceError: the requested run cannot be continued (the message says why).
    """
    marks = {r["run_id"]: r for r in results.resumable(results_dir)}
    target = resume or (requested if requested in marks and not new else None)
    if target is not None:
        record = marks.get(target)
        if record is None:
            known = results.runs(results_dir)
            row = known[known["run_id"] == target]
            if len(row) and row.iloc[0]["status"] == "finished":
                raise RunChoiceError(f"run {target} finished at {row.iloc[0]['finished_utc']};"
                                     f" a finished run is never resumed (drop --resume for a "
                                     f"new run)")
            where = "was not started from this checkout" if len(row) else "is not known"
            hint = (f"; resumable here: {', '.join(marks)}" if marks else
                    "; no run is resumable here")
            raise RunChoiceError(f"run {target} {where} (no {results_dir}/.partial/"
                                 f"{target}.json){hint}")
        why = _continuable(record, current)
        if why:
            raise RunChoiceError(f"cannot resume run {target}: {why}; start a new run instead")
        theirs = {k: record.get(k, "") for k in OPTIONS}
        if any(theirs[k] != options.get(k, "") for k in explicit):
            raise RunChoiceError(f"run {target} was started with {describe(theirs)}; rerun "
                                 f"it without --profile/--only/-k or with the same ones")
        return dict(record), target, []
    if requested is not None:
        results.check_run_id(requested)
        if requested in set(results.runs(results_dir)["run_id"]):
            raise RunChoiceError(f"FOLD_JAX_RUN_ID={requested} names a run that is already "
                                 f"recorded (resumed only when unfinished, without --new); "
                                 f"unset it for a new run")
        return None, requested, []
    notes: list[str] = []
    if not new:
        wanted = {k: options.get(k, "") for k in OPTIONS}
        same = [r for r in marks.values() if {k: r.get(k, "") for k in OPTIONS} == wanted
                and {c: r.get(c, "") for c in MACHINE} == {c: str(current[c]) for c in MACHINE}]
        if same:
            newest = max(same, key=lambda r: (r.get("started_utc", ""), r["run_id"]))
            why = _continuable(newest, current)
            if why is None:
                return dict(newest), newest["run_id"], []
            notes.append(f"not resuming unfinished run {newest['run_id']}: {why}")
    return None, results.new_run_id(), notes
