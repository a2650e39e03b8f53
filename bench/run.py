"""Run the benchmarks: ``python -m bench.run [--profile quick|full] [--only ...] [-k SUB]
[--results-dir results] [--no-report]``.

Parts: ``kernels`` (the pytest-benchmark micro-benchmarks in ``bench/test_*.py``, run
as ``pytest bench``) and every suite ``bench/suite_<name>.py`` (see
:mod:`bench.common`). Jobs whose rows are already in the results files are skipped;
the rest run under a progress bar whose time estimate is weighted by ``Job.cost``, and
each job's rows are appended atomically as soon as it finishes. Ctrl-C stops after
saying what was saved (rerun the same command to resume); a failing job is reported
and the run goes on, exiting non-zero at the end. Then the report is rebuilt
(``fold_jax.report.build``) unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.common import PROFILES, Job

HERE = Path(__file__).resolve().parent
KERNELS = "kernels"
KERNELS_COST = {"quick": 140.0, "full": 450.0}  # seconds on a 2-core CPU (time estimate)

__all__ = ["discover", "main", "pending", "write_rows"]


def discover() -> list[str]:
    """Suite names, from ``bench/suite_<name>.py``, sorted."""
    return sorted(p.stem.removeprefix("suite_") for p in HERE.glob("suite_*.py"))


def _message(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def pending(suite, profile: str, results_dir: str, substring: str | None
            ) -> tuple[list[Job], int]:
    """The jobs of ``suite`` still to run (filtered by ``substring``) and how many are done."""
    from fold_jax import results

    meta = results.metadata()
    key_columns = list(suite.KEY)
    have = results.done_keys(suite.FILE, key_columns, results_dir)
    todo, n_done = [], 0
    for job in suite.jobs(profile):
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
    the suite's ``FILE`` last, so a half-written job is not done and reruns cleanly."""
    from fold_jax import results

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


def _run_kernels(args) -> tuple[bool, str]:
    command = [sys.executable, "-m", "pytest", str(HERE), "-q", "-p", "no:cacheprovider",
               f"--profile={args.profile}", f"--results-dir={args.results_dir}",
               "--benchmark-columns=median,iqr,rounds,iterations"]
    if args.k:
        command += ["-k", args.k]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = (out.stdout + out.stderr).strip().splitlines()
    summary = lines[-1] if lines else ""
    if out.returncode in (0, 5):  # 5: nothing selected
        return True, summary
    return False, "\n".join(lines[-40:])


def main(argv: list[str] | None = None, suites: Mapping[str, Any] | None = None) -> int:
    """Command-line entry; ``suites`` (name -> suite module) replaces discovery (tests)."""
    modules = dict(suites) if suites is not None else {}
    names = list(modules) if suites is not None else discover()
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default="quick")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated parts: {', '.join([KERNELS, *names])}")
    parser.add_argument("-k", default=None, help="run only jobs whose label contains this")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    parts = names if suites is not None else [KERNELS, *names]
    if args.only:
        chosen = [p.strip() for p in args.only.split(",") if p.strip()]
        bad = [p for p in chosen if p not in parts]
        if bad:
            parser.error(f"--only {','.join(bad)}: not known; allowed: {', '.join(parts)}")
        parts = [p for p in parts if p in chosen]

    from tqdm.auto import tqdm

    from fold_jax import parallel, results

    parallel.initialize()  # multi-host: FOLD_JAX_* variables (README); no-op otherwise
    os.environ.setdefault("FOLD_JAX_RUN_ID", results.run_id())  # the pytest child shares it
    try:
        results.check_writable(args.results_dir)
    except OSError as e:
        print(f"cannot write results: {e}", file=sys.stderr)
        return 1
    t_start = time.perf_counter()
    failures: list[str] = []
    plan: list[tuple[str, object, Job]] = []
    try:
        for name in parts:
            if name == KERNELS:
                plan.append((KERNELS, None, Job({}, lambda: [], "pytest bench",
                                                 KERNELS_COST[args.profile])))
                continue
            try:
                suite = modules.get(name) or importlib.import_module(f"bench.suite_{name}")
                todo, n_done = pending(suite, args.profile, args.results_dir, args.k)
            except Exception as e:
                failures.append(f"{name}: cannot list jobs: {_message(e)}")
                print(f"FAILED to load suite {name!r}: {_message(e)}", file=sys.stderr)
                continue
            print(f"{name}: {len(todo)} jobs to run, {n_done} already in "
                  f"{Path(args.results_dir) / suite.FILE}.csv")
            plan += [(name, suite, job) for job in todo]
    except KeyboardInterrupt:
        print("\ninterrupted before any job ran; nothing written", file=sys.stderr)
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
            if name == KERNELS:
                ok, text = _run_kernels(args)
                if ok:
                    tqdm.write(f"kernels: {text}")
                else:
                    failures.append("kernels: pytest bench failed")
                    tqdm.write(f"FAILED kernels (pytest bench):\n{text}", file=sys.stderr)
            else:
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
                              f"run; fix the problem and rerun the same command to resume.",
                              file=sys.stderr)
                        return 1
            part_s[name] = part_s.get(name, 0.0) + time.perf_counter() - t_job
            bar.update(max(job.cost, 0.0))
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted during {current}: saved {saved_jobs} jobs ({saved_rows} rows) "
              f"this run in {args.results_dir}/; that job was not saved. Rerun the same "
              f"command to resume.", file=sys.stderr)
        return 130
    bar.close()
    minutes = (time.perf_counter() - t_start) / 60
    print(f"ran {len(plan)} jobs in {minutes:.1f} min: {saved_jobs} saved ({saved_rows} rows), "
          f"{len(failures)} failed" + (" (" + ", ".join(
              f"{k} {v / 60:.1f} min" for k, v in part_s.items()) + ")" if part_s else ""))

    if not args.no_report:
        try:
            from fold_jax import report

            report.build(args.results_dir)
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
