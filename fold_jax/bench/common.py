"""What a benchmark suite looks like to the runner (:mod:`fold_jax.bench.run`).

A suite is a module ``fold_jax/bench/suites/<name>.py`` with

- ``FILE``: the results file stem its jobs write (``"races"`` -> ``results/races.csv``);
- ``KEY``: the key columns identifying a row of ``FILE`` within a run (a job is done
  when the current run already wrote a row with its ``Job.key`` values; rows of other
  runs never count, see :mod:`fold_jax.bench.run`);
- optionally ``KEYS``: ``{file_stem: key_columns}`` for other files its jobs write
  (e.g. ``{"curves": [...]}``);
- ``jobs(profile) -> Iterable[Job]`` for ``profile`` in ``PROFILES``;
- optionally ``DEFAULT_PROFILES``: the profiles in which a command without ``--only``
  runs the suite (default: all of ``PROFILES``); a suite left out of a profile's default
  run still runs in it when named by ``--only`` (:func:`fold_jax.bench.run.default_parts`);
- optionally ``SELECTS``: the :class:`Selection` fields its jobs honour (``("methods",
  "tasks")`` for the races); such a suite's ``jobs(profile, selection)`` takes the
  command's ``--methods`` / ``--tasks`` and its ``check_selection(selection)`` refuses
  unknown names (ValueError naming the allowed ones) before anything runs.

``Job.run()`` returns either a list of rows (dicts) for ``FILE`` or a dict
``{file_stem: rows}`` for several files. The runner writes the other files first
(replacing this run's rows with the same key: they belong to an earlier attempt of the
job) and ``FILE`` last, so a job interrupted between the writes is simply not done and
reruns cleanly. Metadata columns (run_id, git commit, backend, ...) are added by
:func:`fold_jax.results.append`; a row should nonetheless carry the key columns.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from fold_jax.checks import check_choice

__all__ = ["PROFILES", "TUNING_SEED", "Job", "Rows", "Selection", "check_profile",
           "config_jobs", "config_label", "shared_compiles"]

PROFILES = ("quick", "full")
# tuning trial i's j-th seed is TUNING_SEED + i + j * n_trials (apart from the race seeds)
TUNING_SEED = 1000

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


class Selection(NamedTuple):
    """The command line's ``--methods`` and ``--tasks`` (empty: the profile's own).

    A suite that ``SELECTS`` them runs exactly these methods (recipe names, registered
    ones included) on these tasks, under the profile's tuning budget, seeds, step
    budgets and evaluation intervals for each task.
    """

    methods: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.methods or self.tasks)


def check_profile(profile: str) -> str:
    """``profile`` if it is one of ``PROFILES``, else a ValueError naming them.

    Args:
        profile: the profile name.

    Returns:
        ``profile``.
    """
    return check_choice(profile, "profile", PROFILES)


T = TypeVar("T")


def config_jobs(items: Iterable[T], *, run: Callable[[T], Rows], label: Callable[[T], str],
                cost: Callable[[T], float],
                key: Callable[[T], Mapping[str, Any]] = dict) -> Iterator[Job]:
    """One :class:`Job` per measured configuration, the shape of the suites that measure a
    list of configurations (kernels, lm): the job's key is the configuration's key columns,
    its run measures that one item.

    Args:
        items: the configurations (or objects holding one), in run order.
        run: ``run(item) -> rows``: measures one item.
        label: ``label(item)``: the job's label (:func:`config_label` builds one).
        cost: ``cost(item)``: expected seconds on a 2-core CPU.
        key: ``key(item)``: the key columns' values (default: the item itself, a dict).

    Returns:
        An iterator of jobs, in the order of ``items``.
    """
    for item in items:
        yield Job(dict(key(item)), functools.partial(run, item), label(item), cost(item))


def config_label(config: Mapping[str, Any], columns: Sequence[tuple[str, str]],
                 sep: str = "/") -> str:
    """A job label from a configuration: ``prefix + value`` of each of ``columns`` that is
    set (not None), joined by ``sep``.

    Args:
        config: column -> value.
        columns: ``(column, prefix)`` pairs, in label order.
        sep: the separator.

    Returns:
        E.g. ``"forward/inference/w32/b256"`` or ``"tiny T64 B8 K2"``.
    """
    return sep.join(f"{prefix}{config[column]}" for column, prefix in columns
                    if config.get(column) is not None)


_CACHE_DIR: str | None = None  # this process's XLA cache for shared_compiles (removed at exit)


@contextlib.contextmanager


def shared_compiles() -> Iterator[None]:
    """Within the block, XLA executables are cached on disk (a temporary directory of
    this process, removed at exit), so the runs of one job that build the same program
    compile it once: ``fit`` builds a fresh jitted chunk per call, so a seed rerunning a
    trial's settings (or any run's evaluation program) would otherwise recompile it;
    the identical program is loaded instead, and ``compile_s`` of such a run is the
    load time. Compile times are never part of a timed training second. The cache is
    switched off again on leaving, so code outside the block is not touched.

    Yields:
        None, inside the block.
    """
    global _CACHE_DIR
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc  # public API

    if _CACHE_DIR is None:
        _CACHE_DIR = tempfile.mkdtemp(prefix="fold_jax_bench_xla_")
        atexit.register(shutil.rmtree, _CACHE_DIR, True)
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    old = {n: getattr(jax.config, n) for n in names}
    try:
        jax.config.update(names[0], _CACHE_DIR)
        jax.config.update(names[1], 0.0)
        jax.config.update(names[2], 0)
        cc.reset_cache()
        yield
    finally:
        for n, v in old.items():
            jax.config.update(n, v)
        cc.reset_cache()
