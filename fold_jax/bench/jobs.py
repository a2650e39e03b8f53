"""A suite's jobs against the results folder (:mod:`fold_jax.bench.run`): the jobs still to
run, counting those the current run already wrote (:func:`pending`), and one job's rows
appended atomically, the suite's own file last so a half-written job is not done
(:func:`write_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping

from fold_jax import results
from fold_jax.bench.common import Job, Selection

__all__ = ["pending", "write_rows"]


def _jobs(suite, profile: str, selection: Selection | None):
    """``suite.jobs`` under ``profile``, given ``selection`` when the suite ``SELECTS``."""
    if selection and getattr(suite, "SELECTS", ()):
        return suite.jobs(profile, selection)
    return suite.jobs(profile)


def pending(suite, profile: str, results_dir: str, substring: str | None,
            run_id: str | None = None, selection: Selection | None = None
            ) -> tuple[list[Job], int]:
    """The jobs of ``suite`` still to run (filtered by ``substring``; ``selection``:
    ``--methods`` / ``--tasks`` for a suite that ``SELECTS`` them) and how many of them
    run ``run_id`` (by default the current run) already wrote; rows of other runs never
    count.

    Args:
        suite: the suite module (:mod:`fold_jax.bench.common`).
        profile: "quick" or "full".
        results_dir: the results folder.
        substring: ``-k``: keep jobs whose label contains it (None: all).
        run_id: the run whose rows count as done (None: the current run).
        selection: ``--methods`` / ``--tasks`` (None: the profile's own).

    Returns:
        ``(jobs to run, number already done)``.
    """
    meta = results.metadata()
    key_columns = list(suite.KEY)
    have = results.done_keys(suite.FILE, key_columns, results_dir, run=run_id)
    todo, n_done = [], 0
    for job in _jobs(suite, profile, selection):
        if substring and substring not in (job.label or str(job.key)):
            continue
        full = {c: job.key.get(c, meta.get(c)) for c in key_columns}
        if results.normalize_key(full, key_columns) in have:
            n_done += 1
        else:
            todo.append(job)
    return todo, n_done


def write_rows(suite, job: Job, rows, results_dir: str) -> int:
    """Append a job's rows: other files first (replacing their rows with the same key),
    the suite's ``FILE`` last, so a half-written job is not done and reruns cleanly.

    Args:
        suite: the suite module.
        job: the job that produced ``rows``.
        rows: a list of rows for ``suite.FILE`` or ``{file_stem: rows}``.
        results_dir: the results folder.

    Returns:
        The number of rows written.
    """
    by_file = dict(rows) if isinstance(rows, Mapping) else {suite.FILE: rows}
    keys = {**getattr(suite, "KEYS", {}), suite.FILE: list(suite.KEY)}
    unknown = [f for f in by_file if f not in keys]
    if unknown:
        raise ValueError(f"job {job.label!r} returned rows for {unknown}, which have no key "
                         f"columns; declare KEYS = {{file: [columns]}} in the suite")
    written = 0
    for name in [f for f in by_file if f != suite.FILE] + [suite.FILE]:
        file_rows = [dict(r) for r in by_file.get(name, [])]
        if name == suite.FILE:
            for r in file_rows:
                for column, value in job.key.items():
                    r.setdefault(column, value)
        written += results.append(name, file_rows, key=keys[name], results_dir=results_dir,
                                  replace=name != suite.FILE)
    return written
