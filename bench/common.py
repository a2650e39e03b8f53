"""What a benchmark suite looks like to the runner (:mod:`bench.run`).

A suite is a module ``bench/suite_<name>.py`` with

- ``FILE``: the results file stem its jobs write (``"races"`` -> ``results/races.csv``);
- ``KEY``: the key columns identifying a row of ``FILE`` within a run (a job is done
  when the current run already wrote a row with its ``Job.key`` values; rows of other
  runs never count, see :mod:`bench.run`);
- optionally ``KEYS``: ``{file_stem: key_columns}`` for other files its jobs write
  (e.g. ``{"curves": [...]}``);
- ``jobs(profile) -> Iterable[Job]`` for ``profile`` in ``PROFILES``.

``Job.run()`` returns either a list of rows (dicts) for ``FILE`` or a dict
``{file_stem: rows}`` for several files. The runner writes the other files first
(replacing this run's rows with the same key: they belong to an earlier attempt of the
job) and ``FILE`` last, so a job interrupted between the writes is simply not done and
reruns cleanly. Metadata columns (run_id, git commit, backend, ...) are added by
:func:`fold_jax.results.append`; a row should nonetheless carry the key columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = ["PROFILES", "TUNING_SEED", "Job", "Rows", "check_profile"]

PROFILES = ("quick", "full")
TUNING_SEED = 1000  # tuning trial i trains with seed TUNING_SEED + i (apart from any final seed)

Rows = list[dict[str, Any]] | Mapping[str, list[dict[str, Any]]]


class Job(NamedTuple):
    """One unit of benchmark work: ``run() -> rows`` identified by ``key``.

    ``label`` names it on the progress bar; ``cost`` is its expected run time in
    seconds on a 2-core CPU (calibrated on the quick profile), which weights the
    progress bar's time estimate.
    """

    key: dict[str, Any]
    run: Callable[[], Rows]
    label: str = ""
    cost: float = 1.0


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is not known; allowed: {list(PROFILES)}")
    return profile
