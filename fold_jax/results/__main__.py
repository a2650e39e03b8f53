"""``python -m fold_jax.results COMMAND``: manage the results store.

- ``promote RUN_ID [--kind KIND] [--only FILE,...] [--allow-unfinished]``: make a run the
  reference of its machine kind (``results/reference/<kind>/``);
- ``archive RUN_ID... --to DIR``: move runs out of ``results/runs/`` into
  ``DIR/<run_id>.tar.gz``; ``unarchive FILE...``: bring them back;
- ``runs``: list the runs (status, kind, reference);
- ``stale [RUN_ID...]``: what changed in what the code computes since each run (default:
  the reference's runs), by fingerprint;
- ``migrate [--legacy-dir DIR]``: the one-time move of flat ``*.csv`` files into runs and
  a reference.

Every command takes ``--results-dir`` (default ``results``).
"""

from __future__ import annotations

import argparse
import json
import sys

from fold_jax.results import migrate as migration
from fold_jax.results import reference, runinfo


def main(argv: list[str] | None = None) -> int:
    """Run one command (module docstring).

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 1 when ``stale`` finds a stale run.
    """
    parser = argparse.ArgumentParser(prog="python -m fold_jax.results",
                                     description="Manage the results store.")
    parser.add_argument("--results-dir", default="results")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("promote", help="make a run the reference of its machine kind")
    p.add_argument("run_id")
    p.add_argument("--kind", default=None)
    p.add_argument("--only", default=None, help="comma-separated files (default: all)")
    p.add_argument("--allow-unfinished", action="store_true")
    p = sub.add_parser("archive", help="move runs out of results/runs/")
    p.add_argument("run_ids", nargs="+")
    p.add_argument("--to", required=True)
    p = sub.add_parser("unarchive", help="restore archived runs")
    p.add_argument("files", nargs="+")
    sub.add_parser("runs", help="list the runs")
    p = sub.add_parser("stale", help="fingerprint changes since runs")
    p.add_argument("run_ids", nargs="*")
    p = sub.add_parser("migrate", help="move flat *.csv files into runs and a reference")
    p.add_argument("--legacy-dir", default=None)
    p.add_argument("--keep-flat", action="store_true", help="do not delete the flat files")
    args = parser.parse_args(argv)
    root = args.results_dir
    if args.command == "promote":
        only = None if args.only is None else [f for f in args.only.split(",") if f]
        out = reference.promote(args.run_id, root, args.kind, files=only,
                                allow_unfinished=args.allow_unfinished)
        print(json.dumps(out, indent=1))
    elif args.command == "archive":
        for path in reference.archive(args.run_ids, root, to=args.to):
            print(f"archived {path}")
    elif args.command == "unarchive":
        for path in args.files:
            print(f"restored {reference.unarchive(path, root)}")
    elif args.command == "runs":
        table = runinfo.runs(root)
        columns = ["run_id", "status", "kind", "reference", "git_commit", "profile", "parts"]
        print(table[columns].to_string(index=False) if len(table) else "no runs")
    elif args.command == "stale":
        table = runinfo.runs(root)
        ids = args.run_ids or sorted(table.loc[table["reference"] != "", "run_id"])
        status = 0
        for rid in ids:
            changed = reference.code_changes(root, rid)
            if changed is None:
                print(f"{rid}: no fingerprint")
            elif changed:
                status = 1
                print(f"{rid}: stale, {len(changed)} changes: {', '.join(changed[:20])}")
            else:
                print(f"{rid}: current")
        return status
    elif args.command == "migrate":
        out = migration.migrate(args.legacy_dir or root, root, remove=not args.keep_flat)
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
