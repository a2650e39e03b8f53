"""The benchmark report: ``results/REPORT.md``, ``results/report/*.md`` and
``results/figures/*.png``.

``build(results_dir)`` loads the validated rows (:func:`fold_jax.results.load`: the
promoted reference of ``results/reference/<kind>/`` by default; ``run=RUN_ID``: one run,
whose report goes into its own directory ``results/runs/<run_id>/``), keeps
the rows of one run per file (:func:`select_runs`: the newest finished run with rows in
that file; see below) and calls each section module ``fold_jax.report.<name>`` in
``SECTIONS`` order; a section exposes ``section(frames: dict[str, DataFrame], fig_dir:
Path) -> str`` (markdown, figures saved into ``fig_dir`` and linked as
``figures/NAME.png``). Pages:

- ``REPORT.md``, the summary (about one page): which runs the numbers come from, then per
  section its headline findings and figure, linking the section's own page.
- ``report/<name>.md``, one page per section: the run its tables come from (run id,
  status, commit, host and device, date), a warning when that run measured code that has
  changed since in what it computes (its code fingerprint,
  :func:`fold_jax.results.code_changes`; for runs without one, ``git diff``), then the section.
- ``report/runs.md``: per results file, the run shown and its metadata.

A section's headline in the summary is what its optional ``headline(frames, fig_dir) ->
str`` returns (markdown; figures linked as ``figures/NAME.png``); without one it is the
section's first list of findings (at most ``HEADLINE_ITEMS`` items), else its first
sentence, and its first figure. A section whose module or data is missing is skipped
with a line saying so, on its page and in the summary. The report and figures are written
to a temporary directory first and then moved into place, so a failed build never leaves
a half-written report; PNGs in ``figures/`` and pages in ``report/`` that the build no
longer makes are removed (both directories are generated output).

Which run: the run records (``run.json``, :func:`fold_jax.results.runs`) say each
run's status and start time. A run with no record (rows written before runs were
recorded, or by ``pytest bench`` on its own) counts as finished, started at its
first row. For every file the newest finished run with rows in it is shown; when no
finished run has rows there, the newest run is shown and labelled unfinished.

The build also writes the column dictionary ``COLUMNS.md`` beside the report
(:func:`fold_jax.results.write_columns`). Sections are pure views of the CSVs: building
the report trains and measures nothing.

Command line: ``python -m fold_jax.report [--results-dir results] [--run RUN_ID]
[--columns]`` (``--columns``: only write ``COLUMNS.md``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import re
import shutil
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from fold_jax import results
from fold_jax.results.io import write_bytes_if_changed

__all__ = ["HEADLINE_ITEMS", "PAGES_DIR", "SECTIONS", "SECTION_FILES", "Source", "build",
           "main", "select_runs"]

SECTIONS: tuple[str, ...] = ("kernels", "races", "tuning", "variants", "probes", "scaling", "bbob",
                             "hypotheses", "control", "lm", "lm_finetune")
# the results files each section reads (default: the file named like the section)
SECTION_FILES: dict[str, tuple[str, ...]] = {"races": ("races", "curves"),
                                             "tuning": ("tuning", "races"),
                                             "probes": ("probes", "region_maps"),
                                             "control": ("control", "control_curves",
                                                         "control_speed"),
                                             "lm": ("lm_kernels",),
                                             "lm_finetune": ("lm_finetune",
                                                             "lm_finetune_curves")}
_TITLES = {"kernels": "Kernels", "races": "Time-to-target races",
           "tuning": "Tuning and peers", "variants": "Variants",
           "probes": "Probes", "scaling": "Scaling", "bbob": "BBOB (COCO)",
           "hypotheses": "The essays' claims, tested",
           "control": "Control races (gymnax)", "lm": "Language models",
           "lm_finetune": "LM fine-tuning without backprop"}
_SHOWN = ("finished", "unrecorded")  # statuses eligible by default
PAGES_DIR = "report"  # the per-section pages, beside REPORT.md
HEADLINE_ITEMS = 3  # findings per section in the summary (fallback headline)
_HEADLINE_CHARS = 320  # a finding or sentence longer than this is cut at a word


@dataclasses.dataclass(frozen=True)
class Source:
    """Where the rows shown for one results file come from."""

    file: str
    run_id: str
    status: str  # finished / failed / interrupted / running / unrecorded (no record)
    started: str  # the run's start (registry) or its first row, UTC
    commits: tuple[str, ...]  # git commits of the rows shown
    hosts: tuple[str, ...]
    devices: tuple[str, ...]  # "backend, n x device_kind"
    rows: int  # rows shown
    rows_in_file: int
    other_runs: int  # other runs with rows in the file (not shown)
    newer: tuple[str, ...] = ()  # newer unfinished runs with rows in the file (not shown)
    stale: tuple[str, ...] = ()  # commits whose code differs from the checkout's HEAD
    unchecked: tuple[str, ...] = ()  # commits that could not be compared with HEAD
    filter: str = ""  # the run's -k: it measured only the jobs whose label contains this
    profile: str = ""  # the run's profile (quick: brief numbers, not the reference)

    def describe(self) -> str:
        """Markdown: run, status, commit, host and device, date."""
        status = "" if self.status == "finished" else (
            ", no run record" if self.status == "unrecorded" else f", **{self.status}**")
        commits = ", ".join(f"`{c[:8]}`" for c in self.commits) or "unknown"
        when = _stamp(self.started)
        day = when.strftime("%Y-%m-%d %H:%M UTC") if when.year > 1900 else "unknown date"
        only = f", only jobs matching `-k {self.filter}`" if self.filter else ""
        profile = ", **quick profile** (brief numbers; the full profile's are the reference)" if (
            self.profile == "quick") else (f", {self.profile} profile" if self.profile else "")
        return (f"run `{self.run_id}`{status}, commit {commits}, host "
                f"{', '.join(self.hosts) or 'unknown'} ({'; '.join(self.devices) or '?'}), "
                f"{day}{profile}{only}")


def _texts(frame: pd.DataFrame, column: str) -> tuple[str, ...]:
    if column not in frame.columns:
        return ()
    return tuple(sorted({str(v) for v in frame[column].dropna() if str(v) != ""}))


def _devices(frame: pd.DataFrame) -> tuple[str, ...]:
    columns = [c for c in ("backend", "n_devices", "device_kind") if c in frame.columns]
    if len(columns) < 3:
        return ()
    seen = frame[columns].drop_duplicates().astype(str).itertuples(index=False)
    return tuple(sorted(f"{b}, {n} x {k}" for b, n, k in seen))


def _stamp(value) -> pd.Timestamp:
    out = pd.to_datetime(str(value), utc=True, errors="coerce") if value else pd.NaT
    return pd.Timestamp.min.tz_localize("UTC") if pd.isna(out) else out


def select_runs(frames: Mapping[str, pd.DataFrame], registry: pd.DataFrame | None = None, *,
                repo: str | os.PathLike | None = None, head: str | None = None,
                results_dir: str | os.PathLike | None = None
                ) -> tuple[dict[str, pd.DataFrame], dict[str, Source]]:
    """Keep the rows of one run per file: the newest finished (or unrecorded) run with
    rows in it, else the newest run. Returns the filtered frames and a :class:`Source`
    per file that has a ``run_id`` column (files without one are kept whole).

    ``registry``: :func:`fold_jax.results.runs` (status and start time per run). The
    rows' commits are compared with ``head`` (default: HEAD of the git checkout at
    ``repo``, else of the current directory or the package) through
    :func:`fold_jax.results.code_changed`; without git nothing is flagged. Runs with a
    code fingerprint in ``results_dir`` are judged by it instead
    (:func:`fold_jax.results.code_changes`: comments and docs never stale a row).

    Args:
        frames: file stem -> DataFrame, as :func:`fold_jax.results.load` returns.
        registry: the run registry (None: no run recorded).
        repo: the git checkout whose HEAD is used when ``head`` is None.
        head: the commit compared with the rows' commits.
        results_dir: the results folder holding the runs' fingerprints (None: git only).

    Returns:
        ``(frames, sources)``: the kept rows per file and a :class:`Source` per file.
    """
    registry = registry if registry is not None else pd.DataFrame(columns=["run_id"])
    records = registry.to_dict("records")
    status = {str(r["run_id"]): str(r.get("status") or "running") for r in records}
    started = {str(r["run_id"]): str(r.get("started_utc") or "") for r in records}
    filters = {str(r["run_id"]): str(r.get("filter") or "") for r in records}
    profiles = {str(r["run_id"]): str(r.get("profile") or "") for r in records}
    first_row: dict[str, str] = {}
    for frame in frames.values():
        if not {"run_id", "timestamp_utc"} <= set(frame.columns):
            continue
        sub = frame.dropna(subset=["run_id", "timestamp_utc"])
        firsts = sub["timestamp_utc"].astype(str).groupby(sub["run_id"].astype(str)).min()
        for rid, stamp in firsts.items():
            if rid not in first_row or stamp < first_row[rid]:
                first_row[rid] = stamp
    if head is None:
        found = results.git_commit(repo)
        head = None if found == "unknown" else found
    verdicts: dict[str, bool | None] = {}

    def changed(rid: str, commit: str) -> bool | None:
        if rid not in verdicts and results_dir is not None:
            found = results.code_changes(results_dir, rid)
            verdicts[rid] = None if found is None else bool(found)
        if verdicts.get(rid) is not None:  # by fingerprint
            return verdicts[rid]
        if head is None or commit == head:
            return False if commit == head else None
        if commit not in verdicts:
            verdicts[commit] = results.code_changed(commit, head, cwd=repo)
        return verdicts[commit]

    kept: dict[str, pd.DataFrame] = {}
    sources: dict[str, Source] = {}
    for name, frame in frames.items():
        if "run_id" not in frame.columns or frame.empty:
            kept[name] = frame
            continue
        ids = frame["run_id"].astype(str)
        present = sorted(set(ids[frame["run_id"].notna()]))
        if not present:
            kept[name] = frame
            continue

        def order(rid: str) -> tuple[pd.Timestamp, str]:
            return _stamp(started.get(rid) or first_row.get(rid, "")), rid

        def state(rid: str) -> str:
            return status.get(rid, "unrecorded")

        eligible = [r for r in present if state(r) in _SHOWN]
        chosen = max(eligible or present, key=order)
        rows = frame[ids == chosen]
        commits = _texts(rows, "git_commit")
        sources[name] = Source(
            file=name, run_id=chosen, status=state(chosen),
            started=started.get(chosen) or first_row.get(chosen, ""), commits=commits,
            hosts=_texts(rows, "host"), devices=_devices(rows), rows=len(rows),
            rows_in_file=len(frame), other_runs=len(present) - 1,
            newer=tuple(r for r in sorted(present, key=order)
                        if order(r) > order(chosen) and state(r) not in _SHOWN),
            stale=tuple(c for c in commits if changed(chosen, c) is True),
            unchecked=tuple(c for c in commits if head is not None
                            and changed(chosen, c) is None),
            filter=filters.get(chosen, ""), profile=profiles.get(chosen, ""))
        kept[name] = rows
    return kept, sources


def _provenance(sources: Sequence[Source], head: str | None) -> str:
    """The lines a section opens with: where its rows come from, and warnings."""
    if not sources:
        return ""
    by_run: dict[str, list[Source]] = {}
    for s in sources:
        by_run.setdefault(s.run_id, []).append(s)
    out = []
    for group in by_run.values():
        files = " and ".join(f"{s.file}.csv" for s in group)
        they, them = ("they were", "them") if len(group) > 1 else ("it was", "it")
        counts = ", ".join(f"{s.rows} of {s.rows_in_file} rows of {s.file}.csv"
                           for s in group)
        out.append(f"_Source: {group[0].describe()}; {counts}._")
        first = group[0]
        if first.status not in _SHOWN:
            out.append(f"> **Unfinished run:** no finished run has rows in {files}, so "
                       f"these come from run `{first.run_id}` ({first.status}); rerun its "
                       f"command to finish it.")
        for c in dict.fromkeys(c for s in group for c in s.stale):
            out.append(f"> **Stale:** {files}: {they} measured at commit `{c[:8]}`; the "
                       f"code that produces {them} has changed since in what it computes "
                       f"(HEAD `{(head or '')[:8]}`; `python -m fold_jax.results stale` "
                       f"lists the changes).")
        for c in dict.fromkeys(c for s in group for c in s.unchecked):
            out.append(f"> {files}: measured at commit `{c[:8]}`, which this checkout "
                       f"cannot compare with HEAD `{(head or '')[:8]}`.")
        newer = list(dict.fromkeys(r for s in group for r in s.newer))
        if newer:
            out.append("> Newer unfinished runs with rows here are not shown: "
                       + ", ".join(f"`{r}`" for r in newer) + ".")
    return "\n\n".join(out) + "\n\n"


def _runs_table(frames: Mapping[str, pd.DataFrame], sources: Mapping[str, Source],
                head: str | None, n_runs: int) -> str:
    """The runs page: per results file, the run shown and its metadata."""
    lines = ["# Runs shown", "", "[fold_jax benchmark report](../REPORT.md)", ""]
    if not sources:
        return "\n".join([*lines, "_No results file has a run_id column._", ""])
    lines += ["Each file's tables come from one run: the newest finished run with rows "
              f"in it ({n_runs} runs in the rows read; the promoted reference by "
              "default, see docs/results-store.md)."
              + (f" Checkout at commit `{head[:8]}`." if head else ""), "",
              "| file | run | status | rows shown | commit | host | cpu | backend | "
              "device | devices | jax | started (UTC) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in sorted(sources.items()):
        f = frames[name]

        def vals(c, f=f):
            return ", ".join(_texts(f, c))

        stale = " (stale)" if s.stale else ""
        status = "no record" if s.status == "unrecorded" else s.status
        lines.append(f"| {name}.csv | `{s.run_id}` | {status} | {s.rows} of "
                     f"{s.rows_in_file} | {', '.join(c[:8] for c in s.commits)}{stale} | "
                     f"{', '.join(s.hosts)} | {vals('cpu_model') or '-'} | "
                     f"{vals('backend')} | {vals('device_kind')} | "
                     f"{vals('n_devices')} | {vals('jax_version')} | {s.started} |")
    lines.append("")
    return "\n".join(lines)


def _header(sources: Mapping[str, Source], head: str | None) -> str:
    """The summary's opening: the runs its numbers come from, one line per run."""
    lines = ["# fold_jax benchmark report", "",
             "Generated by `python -m fold_jax.report` from the CSVs in this directory; "
             "do not edit by hand. The headline of each section, linking its page.", ""]
    by_run: dict[str, list[Source]] = {}
    for s in sources.values():
        by_run.setdefault(s.run_id, []).append(s)
    for group in by_run.values():
        files = ", ".join(f"{s.file}.csv" for s in sorted(group, key=lambda s: s.file))
        stale = " (**stale** rows: see their pages)" if any(s.stale for s in group) else ""
        lines.append(f"- {group[0].describe()}: {files}{stale}")
    if sources:
        lines += ["", f"Every file's run, rows and machine: [runs]({PAGES_DIR}/runs.md)."
                  + (f" Checkout at commit `{head[:8]}`." if head else "")]
    lines.append("")
    return "\n".join(lines)


def _cut(text: str) -> str:
    """``text`` cut at a word to at most about ``_HEADLINE_CHARS`` characters."""
    if len(text) <= _HEADLINE_CHARS:
        return text
    return text[:_HEADLINE_CHARS].rsplit(" ", 1)[0] + " ..."


def _headline(body: str) -> str:
    """The fallback headline of a section's markdown: its first list of findings (at
    most ``HEADLINE_ITEMS`` items), else its first sentence, and its first figure."""
    blocks = [b.strip() for b in re.split(r"\n\s*\n", body) if b.strip()]
    figure = next((line.strip() for b in blocks for line in b.splitlines()
                   if line.strip().startswith("![")), "")
    items = next(([line for line in b.splitlines() if line.startswith("- ")] for b in blocks
                  if b.startswith("- ")), [])
    if items:
        more = len(items) - HEADLINE_ITEMS
        text = "\n".join(_cut(line) for line in items[:HEADLINE_ITEMS]) + (
            f"\n- ... and {more} more on the page" if more > 0 else "")
    else:
        prose = next((b for b in blocks if not b.startswith(("_", ">", "|", "#", "!", "`"))),
                     "")
        # a sentence ends at . ! or ? before a capital, code or the end ("e.g. 1.5x" goes on)
        first = re.match(r".+?[.!?](?=\s+[A-Z`*_(]|\s*$)", " ".join(prose.split()))
        text = _cut(first.group(0) if first else " ".join(prose.split()))
    return "\n\n".join(part for part in (text, figure) if part)


def _relink(markdown: str) -> str:
    """Relative links of a section, written from ``results/``, as seen from a page one
    folder down (``figures/x.png`` -> ``../figures/x.png``)."""
    return re.sub(r"\]\((?![a-zA-Z][a-zA-Z0-9+.-]*:|#|/)", "](../", markdown)


def _page(title: str, markdown: str) -> str:
    """A section's own page: a link back to the summary, the title, the section."""
    return f"[fold_jax benchmark report](../REPORT.md)\n\n# {title}\n\n{_relink(markdown)}"


def _replace_dir(new: Path, dest: Path, pattern: str) -> None:
    """Move ``new``'s files matching ``pattern`` into ``dest``; remove those of ``dest``
    matching it that ``new`` does not have (output of an older build)."""
    dest.mkdir(exist_ok=True)
    made = {f.name for f in new.glob(pattern)}
    for name in made:  # unchanged bytes are not rewritten (nor re-committed)
        write_bytes_if_changed(dest / name, (new / name).read_bytes())
    for stale in dest.glob(pattern):
        if stale.name not in made:
            stale.unlink()


def _section_pages(name: str, frames: Mapping[str, pd.DataFrame],
                   sources: Mapping[str, Source], head: str | None, fig_dir: Path,
                   page_dir: Path) -> str:
    """Write section ``name``'s page into ``page_dir`` (figures into ``fig_dir``) and
    return its entry in the summary: a heading linking the page, then its headline."""
    import matplotlib.pyplot as plt

    title = _TITLES.get(name, name.title())
    link = f"## [{title}]({PAGES_DIR}/{name}.md)\n\n"
    try:
        module = importlib.import_module(f"fold_jax.report.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"fold_jax.report.{name}":
            raise
        module, body = None, ""
        skipped = f"_Skipped: no report module `fold_jax.report.{name}`._\n"
    else:
        skipped = f"_Skipped: no {name} data._\n"
        try:
            body = module.section(frames, fig_dir)
        except Exception as e:  # one broken section must not sink the report
            traceback.print_exc()
            body = f"_Section failed: {type(e).__name__}: {e}_\n"
        finally:
            plt.close("all")
    if not body:
        (page_dir / f"{name}.md").write_text(_page(title, skipped))
        return link + skipped
    shown = [sources[f] for f in SECTION_FILES.get(name, (name,)) if f in sources]
    (page_dir / f"{name}.md").write_text(_page(title, _provenance(shown, head) + body))
    headline = _headline(body)
    if callable(getattr(module, "headline", None)):
        try:
            headline = module.headline(frames, fig_dir)
        except Exception as e:  # the page stands; the summary says what failed
            traceback.print_exc()
            headline = f"_Headline failed: {type(e).__name__}: {e}_"
        finally:
            plt.close("all")
    flags = " ".join(f"**{word}**" for word, hit in (
        ("stale", any(s.stale for s in shown)),
        ("unfinished", any(s.status not in _SHOWN for s in shown))) if hit)
    return link + (f"{flags} (see the page)\n\n" if flags else "") + headline + "\n"


def build(results_dir: str | os.PathLike = "results", *, verbose: bool = True,
          repo: str | os.PathLike | None = None, run: str | None = None) -> Path:
    """Write ``<results_dir>/REPORT.md`` (the summary), ``<results_dir>/report/*.md`` (a
    page per section) and ``<results_dir>/figures/*.png``; return the summary's path.
    ``repo``: the git checkout whose HEAD the rows' commits are compared with (default:
    the one holding ``results_dir``, else the current directory's or the package's).
    Raises ValueError when a results file is malformed.

    Args:
        results_dir: the results folder (must exist).
        verbose: print the paths written.
        repo: the git checkout the rows' commits are compared with.
        run: report this run's rows (None: the reference, :func:`fold_jax.results.load`);
            the report and figures then go into the run's directory.

    Returns:
        The path of REPORT.md (the summary page).
    """
    import matplotlib

    matplotlib.use("Agg")  # before any section imports pyplot

    directory = Path(results_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"results directory {directory} does not exist; run the "
                                f"benchmarks first (python -m fold_jax.bench)")
    loaded = results.load(directory, run=run)
    registry = results.runs(directory)
    store, directory = directory, directory if run is None else results.run_dir(directory, run)
    if repo is None:  # the checkout holding the results, else the one holding the package
        repo = directory if results.git_commit(directory) != "unknown" else None
    found = results.git_commit(repo)
    head = None if found == "unknown" else found
    frames, sources = select_runs(loaded, registry, repo=repo, head=head, results_dir=store)
    n_runs = len(set().union(*[set(f["run_id"].dropna().astype(str)) for f in loaded.values()
                               if "run_id" in f.columns]) if loaded else set())
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".report."))
    try:
        fig_tmp = tmp / "figures"
        fig_tmp.mkdir()
        page_tmp = tmp / PAGES_DIR
        page_tmp.mkdir()
        parts = [_header(sources, head)]
        for name in SECTIONS:
            parts.append(_section_pages(name, frames, sources, head, fig_tmp, page_tmp))
        (page_tmp / "runs.md").write_text(_runs_table(frames, sources, head, n_runs))
        (tmp / "REPORT.md").write_text("\n".join(parts))
        _replace_dir(fig_tmp, directory / "figures", "*.png")
        _replace_dir(page_tmp, directory / PAGES_DIR, "*.md")
        report = directory / "REPORT.md"
        os.replace(tmp / "REPORT.md", report)
        results.write_columns(directory / "COLUMNS.md")
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    if verbose:
        print(f"wrote {report}, {len(list((directory / PAGES_DIR).glob('*.md')))} pages in "
              f"{directory / PAGES_DIR} and "
              f"{len(list((directory / 'figures').glob('*.png')))} figures")
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line of ``python -m fold_jax.report``: build the report of ``--results-dir``.

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).

    Returns:
        The exit status, 0.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fold_jax.report",
                                     description="Build REPORT.md and figures from results CSVs.")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--run", default=None,
                        help="report this run (default: the promoted reference)")
    parser.add_argument("--columns", action="store_true",
                        help="only write the column dictionary <results-dir>/COLUMNS.md")
    args = parser.parse_args(argv)
    if args.columns:
        print(f"wrote {results.write_columns(Path(args.results_dir) / 'COLUMNS.md')}")
        return 0
    build(args.results_dir, run=args.run)
    return 0
