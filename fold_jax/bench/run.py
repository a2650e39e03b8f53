"""Run the benchmarks: ``python -m fold_jax.bench [--profile quick|full] [--only SUITES]
[-k LABEL] [--imports MODULE,...] [--methods A,B] [--tasks T1,T2] [--promote]
[--results-dir results] [--no-report] [--new | --resume RUN_ID]``.

A researcher's own methods: ``--imports mypkg.methods`` imports modules that call
:func:`fold_jax.learn.recipes.register` before anything is planned; ``--methods mine,adam``
and ``--tasks digits,spirals`` choose what the suites that honour them (``SELECTS``:
the races) run, each method under the same tuning budget, seeds, step budget and
evaluation interval as the shipped recipes on that task. Given without ``--only`` they
run only those suites. ``--promote`` hands a finished run to
``fold_jax.results.promote`` (the machine's reference rows).

Parts: every suite ``fold_jax/bench/suites/<name>.py`` (see :mod:`fold_jax.bench.common`),
the kernel micro-benchmarks (``kernels``, :mod:`fold_jax.bench.suites.kernels`) first;
the others in name order. Without ``--only`` a profile runs the suites whose
``DEFAULT_PROFILES`` hold it (:func:`default_parts`: the quick run leaves the hypotheses
out, and says so). Each suite's results file, key and columns come from
:data:`fold_jax.results.SCHEMA`.

Every run measures the machine it runs on. A command starts a new run (a new run id,
recorded in ``<results-dir>/runs.csv`` with its commit, host, profile and parts) unless
it continues an unfinished one: the same command (same profile, parts and ``-k``)
rerun on the same machine after an interruption, a kill or failed jobs continues the
newest such run of this checkout (``<results-dir>/.partial/<run_id>.json``, git-ignored)
if the code (``fold_jax/``, ``bench/``) has not changed since it started. A finished
run is never continued. ``--new`` always starts a new run; ``--resume RUN_ID``
continues that run (or fails saying why not). A resumed run skips only the jobs whose
rows *this run* already wrote, and says how many; rows of other runs (the committed
reference run included) are kept and never reused. Set ``$FOLD_JAX_RUN_ID`` to name a
new run.

The jobs run under a progress bar whose time estimate is weighted by ``Job.cost``, and
each job's rows are appended atomically as soon as it finishes. Ctrl-C stops after
saying what was saved (rerun the same command to resume); a failing job is reported
and the run goes on, exiting non-zero at the end (the run stays unfinished, so a rerun
retries just the failed jobs). Then the report is rebuilt (``fold_jax.report.build``)
unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fold_jax import results
from fold_jax.bench.common import PROFILES, Job, Selection
from fold_jax.bench.jobs import pending, write_rows
from fold_jax.bench.run_choice import MACHINE, RunChoiceError, describe, now_utc, select_run

SUITES = "fold_jax.bench.suites"  # the package holding the shipped suites
HERE = Path(__file__).resolve().parent / "suites"
FIRST = ("kernels",)  # parts that run before the others (timings on an idle machine)

# pending / write_rows (fold_jax.bench.jobs) and select_run (fold_jax.bench.run_choice) stay
# importable from here
__all__ = ["RunChoiceError", "default_parts", "discover", "import_modules", "main", "pending",
           "promote", "select_run", "write_rows"]


def discover() -> list[str]:
    """Suite names, from ``fold_jax/bench/suites/<name>.py``: ``FIRST`` ones first, then
    sorted.

    Returns:
        The names (module stems).
    """
    names = sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def default_parts(names: Sequence[str], profile: str, modules: Mapping[str, Any] | None = None
                  ) -> tuple[list[str], list[str]]:
    """The parts a command without ``--only`` runs under ``profile``, and those it leaves
    out: a suite runs by default in the profiles of its ``DEFAULT_PROFILES`` (all
    profiles when it has none; :mod:`fold_jax.bench.common`).

    Args:
        names: the suite names, in run order.
        profile: "quick" or "full".
        modules: name -> suite module (None or missing: imported as
            ``fold_jax.bench.suites.<name>``).

    Returns:
        ``(run, left_out)``, each in the order of ``names``.
    """
    modules = modules or {}
    run, left_out = [], []
    for name in names:
        suite = _suite(name, modules)
        (run if profile in getattr(suite, "DEFAULT_PROFILES", PROFILES) else left_out
         ).append(name)
    return run, left_out


def _message(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _split(text: str | None) -> tuple[str, ...]:
    """A comma-separated option as a tuple of its non-empty, stripped entries."""
    return tuple(x.strip() for x in (text or "").split(",") if x.strip())


def _suite(name: str, modules: Mapping[str, Any]):
    """Suite ``name``: from ``modules`` (tests) or imported from :data:`SUITES`."""
    return modules.get(name) or importlib.import_module(f"{SUITES}.{name}")


def import_modules(names: Sequence[str]) -> list[str]:
    """Import the ``--imports`` modules (a researcher's methods register themselves with
    :func:`fold_jax.learn.recipes.register` on import); the current directory is searched
    first, as ``python -m`` does.

    Args:
        names: dotted module names.

    Returns:
        The names, in order.

    Raises:
        ImportError: a module that cannot be imported (its name and the cause).
    """
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # a module that fails while registering, too
            raise ImportError(f"cannot import {name!r}: {_message(e)}") from e
    return list(names)


def promote(run_id: str, results_dir: str) -> None:
    """``--promote``: make finished run ``run_id`` this machine's reference rows
    (:func:`fold_jax.results.promote`), the rows the default report reads.

    Args:
        run_id: the finished run.
        results_dir: the results folder.
    """
    results.promote(run_id, results_dir)
    print(f"run {run_id} promoted to this machine's reference in {results_dir}/")


def main(argv: list[str] | None = None, suites: Mapping[str, Any] | None = None) -> int:
    """The command line (module docstring).

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).
        suites: name -> suite module, replacing discovery (tests).

    Returns:
        The exit status: 0 when every job and the report succeeded, 1 on failures, 2
        for a run or selection that cannot be used, 130 when interrupted.
    """
    modules = dict(suites) if suites is not None else {}
    names = list(modules) if suites is not None else discover()
    parser = argparse.ArgumentParser(prog="python -m fold_jax.bench", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="quick (default) or full")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated parts: {', '.join(names)}")
    parser.add_argument("-k", default=None, help="run only jobs whose label contains this")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--no-report", action="store_true")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--new", action="store_true",
                       help="start a new run even if this command's last run is unfinished")
    which.add_argument("--resume", metavar="RUN_ID", default=None,
                       help="continue this unfinished run (its profile, parts, -k, imports, "
                            "methods and tasks)")
    parser.add_argument("--imports", default=None, metavar="MODULE,...",
                        help="import these modules first (they register methods with "
                             "fold_jax.recipes.register)")
    parser.add_argument("--methods", default=None, metavar="A,B",
                        help="race exactly these recipes (registered ones included)")
    parser.add_argument("--tasks", default=None, metavar="T1,T2",
                        help="race on these tasks only")
    parser.add_argument("--promote", action="store_true",
                        help="promote the run, once finished, to this machine's reference "
                             "(fold_jax.results.promote)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        imported = import_modules(_split(args.imports))
    except ImportError as e:
        print(f"--imports: {_message(e)}", file=sys.stderr)
        return 2
    selection = Selection(_split(args.methods), _split(args.tasks))
    all_parts = list(names)
    parts = list(all_parts)
    selecting = [n for n in all_parts if selection
                 and getattr(_suite(n, modules), "SELECTS", ())]
    if args.only:
        chosen = [p.strip() for p in args.only.split(",") if p.strip()]
        bad = [p for p in chosen if p not in parts]
        if bad:
            parser.error(f"--only {','.join(bad)}: not known; allowed: {', '.join(parts)}")
        parts = [p for p in parts if p in chosen]
        if selection and not set(parts) & set(selecting):
            parser.error(f"--methods / --tasks: none of the parts {', '.join(parts)} takes "
                         f"them; those that do: {', '.join(selecting) or 'none'}")
    elif selection and args.resume is None:
        parts = selecting
        print(f"--methods / --tasks given: running {', '.join(parts)} (the parts that take "
              f"them; add --only to choose)")
    elif args.resume is None:
        parts, left_out = default_parts(all_parts, args.profile or "quick", modules)
        for name in left_out:
            print(f"{name}: not part of the default {args.profile or 'quick'} run (its "
                  f"suite's DEFAULT_PROFILES); run it with --only {name}")

    from fold_jax.learn import parallel

    parallel.initialize()  # multi-host: FOLD_JAX_* variables (README); no-op otherwise
    try:
        results.check_writable(args.results_dir)
    except OSError as e:
        print(f"cannot write results: {e}", file=sys.stderr)
        return 1
    options = {"profile": args.profile or "quick", "parts": ",".join(parts),
               "filter": args.k or "", "imports": ",".join(imported),
               "methods": ",".join(selection.methods), "tasks": ",".join(selection.tasks)}
    explicit = [k for k, given in (("profile", args.profile), ("parts", args.only),
                                   ("filter", args.k), ("imports", args.imports),
                                   ("methods", args.methods), ("tasks", args.tasks))
                if given is not None]
    meta = results.metadata()
    env_before = os.environ.get("FOLD_JAX_RUN_ID")
    try:
        record, rid, notes = select_run(args.results_dir, options, meta, explicit=explicit,
                                        resume=args.resume, new=args.new,
                                        requested=env_before or None)
    except (RunChoiceError, ValueError) as e:
        print(f"cannot choose the run: {e}", file=sys.stderr)
        return 2
    if record is not None:  # a resumed run keeps the command it was started with
        args.profile, args.k = record["profile"], record.get("filter") or None
        parts = [p for p in record["parts"].split(",") if p]
        unknown = [p for p in parts if p not in all_parts]
        if unknown:
            print(f"cannot resume run {rid}: its parts {unknown} are not known here",
                  file=sys.stderr)
            return 2
        try:
            import_modules(_split(record.get("imports")))
        except ImportError as e:
            print(f"cannot resume run {rid}: its --imports fail: {_message(e)}",
                  file=sys.stderr)
            return 2
        selection = Selection(_split(record.get("methods")), _split(record.get("tasks")))
    try:  # unknown methods or tasks are refused before anything runs
        for name in parts:
            if selection and getattr(_suite(name, modules), "SELECTS", ()):
                _suite(name, modules).check_selection(selection)
    except ValueError as e:
        print(f"--methods / --tasks: {e}", file=sys.stderr)
        return 2
    args.profile = args.profile or "quick"
    args.selection = selection
    args.recorded = options  # what a new run's record keeps of the command
    previous_id = results.set_run_id(rid)
    os.environ["FOLD_JAX_RUN_ID"] = rid  # child processes (scaling workers) share the run
    try:
        return _execute(args, parts, modules, record, rid, notes, meta)
    finally:
        results.set_run_id(previous_id)
        if env_before is None:
            os.environ.pop("FOLD_JAX_RUN_ID", None)
        else:
            os.environ["FOLD_JAX_RUN_ID"] = env_before


def _execute(args, parts: Sequence[str], modules: Mapping[str, Any],
             record: Mapping[str, str] | None, rid: str, notes: Sequence[str],
             meta: Mapping[str, Any]) -> int:
    """Plan, run and record the jobs of run ``rid`` (``record``: resumed, else new)."""
    from tqdm.auto import tqdm

    for note in notes:
        print(note)
    state: dict[str, Any] = {
        "run_id": rid, "status": "running", "pid": os.getpid(),
        "command": " ".join(["python -m fold_jax.bench", *args.argv]),
    }
    if record is None:
        state |= {"started_utc": now_utc(), "finished_utc": "", "attempts": 1,
                  "git_commit": meta["git_commit"], "jax_version": meta.get("jax_version", ""),
                  "profile": args.profile, "parts": ",".join(parts), "filter": args.k or "",
                  **{k: getattr(args, "recorded", {}).get(k, "") for k in
                     ("imports", "methods", "tasks")},
                  **{c: meta[c] for c in MACHINE}}
        print(f"new run {rid}: commit {str(meta['git_commit'])[:8]}, host {meta['host']} "
              f"({meta['backend']}, {meta['n_devices']} x {meta['device_kind']}), profile "
              f"{args.profile}; every job is measured (rows of other runs stay in "
              f"{args.results_dir}/ and are never reused)")
    else:
        try:
            attempts = int(record.get("attempts") or 1) + 1
        except ValueError:
            attempts = 2
        state = {**record, **state, "attempts": attempts}
        print(f"resuming run {rid} ({record.get('status') or 'unfinished'}, started "
              f"{record.get('started_utc')}, attempt {attempts}, {describe(record)}): only "
              f"the jobs this run already wrote are skipped")
    try:
        results.record_run(args.results_dir, state)
        results.mark_resumable(args.results_dir, state)
    except (OSError, ValueError) as e:
        print(f"cannot record run {rid}: {_message(e)}", file=sys.stderr)
        return 1

    def save_state(**changes: Any) -> None:
        """Record the run's status; later failures to write (a full disk) are reported
        but not fatal: the rows written are what counts."""
        state.update(changes)
        try:
            results.record_run(args.results_dir, state)
            if state["status"] == "finished":
                results.clear_resumable(args.results_dir, rid)
            else:
                results.mark_resumable(args.results_dir, state)
        except (OSError, ValueError) as e:
            print(f"(could not record run {rid} as {state['status']}: {_message(e)})",
                  file=sys.stderr)

    t_start = time.perf_counter()
    failures: list[str] = []
    plan: list[tuple[str, object, Job]] = []
    try:
        for name in parts:
            try:
                suite = _suite(name, modules)
                todo, n_done = pending(suite, args.profile, args.results_dir, args.k, rid,
                                       getattr(args, "selection", None))
            except Exception as e:
                failures.append(f"{name}: cannot list jobs: {_message(e)}")
                print(f"FAILED to load suite {name!r}: {_message(e)}", file=sys.stderr)
                continue
            print(f"{name}: {len(todo)} jobs to run, {n_done} already written by this run "
                  f"{rid} ({results.run_dir(args.results_dir, rid) / suite.FILE}.csv.gz)")
            plan += [(name, suite, job) for job in todo]
    except KeyboardInterrupt:
        save_state(status="interrupted")
        print(f"\ninterrupted before any job ran; nothing written (run {rid})",
              file=sys.stderr)
        return 130

    saved_jobs = saved_rows = 0
    total = sum(max(job.cost, 0.0) for *_, job in plan)
    bar = tqdm(total=total, unit="cost", dynamic_ncols=True, file=sys.stderr, disable=not plan,
               bar_format="{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}] {postfix}")
    current = ""
    part_s: dict[str, float] = {}
    try:
        for name, suite, job in plan:
            t_job = time.perf_counter()
            current = f"{name}:{job.label or job.key}"
            bar.set_description(current[:60])
            try:
                rows = job.run()
            except Exception as e:
                failures.append(f"{current}: {_message(e)}")
                tb = traceback.format_exc().strip().splitlines()
                tqdm.write(f"FAILED {current}: {_message(e)}\n  " + "\n  ".join(tb[-6:]),
                           file=sys.stderr)
            else:
                try:
                    saved_rows += write_rows(suite, job, rows, args.results_dir)
                    saved_jobs += 1
                except OSError as e:  # disk full, permissions: later writes would fail too
                    bar.close()
                    print(f"\nstopping: cannot write the results of {current}: "
                          f"{_message(e)}\nsaved {saved_jobs} jobs ({saved_rows} rows) this "
                          f"time in run {rid}; fix the problem and rerun the same command "
                          f"to resume.", file=sys.stderr)
                    save_state(status="interrupted")
                    return 1
            part_s[name] = part_s.get(name, 0.0) + time.perf_counter() - t_job
            bar.update(max(job.cost, 0.0))
    except KeyboardInterrupt:
        bar.close()
        save_state(status="interrupted")
        print(f"\ninterrupted during {current}: saved {saved_jobs} jobs ({saved_rows} rows) "
              f"this time in {args.results_dir}/ (run {rid}); that job was not saved. Rerun "
              f"the same command to resume.", file=sys.stderr)
        return 130
    bar.close()
    minutes = (time.perf_counter() - t_start) / 60
    print(f"ran {len(plan)} jobs in {minutes:.1f} min: {saved_jobs} saved ({saved_rows} rows), "
          f"{len(failures)} failed" + (" (" + ", ".join(
              f"{k} {v / 60:.1f} min" for k, v in part_s.items()) + ")" if part_s else ""))
    if failures:
        save_state(status="failed")
        print(f"run {rid} is unfinished: rerun the same command to retry what failed in this "
              f"run, or pass --new to start over")
    else:
        save_state(status="finished", finished_utc=now_utc())
        print(f"run {rid} finished")
        if args.promote:
            try:
                promote(rid, args.results_dir)
            except Exception as e:
                failures.append(f"promote: {_message(e)}")
                print(f"FAILED to promote run {rid}: {_message(e)}", file=sys.stderr)
    if args.promote and failures and not any(f.startswith("promote:") for f in failures):
        print(f"--promote: run {rid} is unfinished, so it was not promoted", file=sys.stderr)

    if not args.no_report:
        try:
            from fold_jax import report

            # a promoted run is the reference the default report reads; any other run's
            # report goes into its own directory, results/runs/<run_id>/REPORT.md
            promoted = args.promote and not failures
            report.build(args.results_dir, run=None if promoted else rid)
        except Exception as e:
            failures.append(f"report: {_message(e)}")
            print(f"FAILED to build the report: {_message(e)}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} failures:\n  " + "\n  ".join(f.splitlines()[0] for f in failures),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
