"""The results store: schema, machine metadata, runs, atomic resumable appends, loading,
promoted references per machine kind, and code fingerprints.

``from fold_jax import results`` gives the whole API; it lives by concern in

- :mod:`~fold_jax.results.columns` and :mod:`~fold_jax.results.files`: every results file's
  :class:`Schema` (key, columns with dtype, unit and description) and the metadata
  ``META`` every row carries; :mod:`~fold_jax.results.catalog`: lookups (:func:`schema`,
  :func:`key`, :func:`undescribed`), checks (:func:`validate`, :func:`check_types`),
  canonical keys (:func:`normalize_key`) and the column dictionary ``COLUMNS.md``;
- :mod:`~fold_jax.results.runinfo`: run ids, :func:`metadata`, :func:`machine_kind`, the run
  record (:func:`record_run`, :func:`runs`), resume marks, git;
- :mod:`~fold_jax.results.store`: :func:`append`, :func:`done_keys`, :func:`done`,
  :func:`load` (one directory per run, ``runs/<run_id>/``, compressed tidy CSVs, the
  metadata once per run);
- :mod:`~fold_jax.results.reference`: :func:`promote` a run to the reference of its
  machine kind (``reference/<kind>/``, what the report reads), :func:`archive` runs out of
  the work tree, :func:`code_changes` (stale rows, by fingerprint);
- :mod:`~fold_jax.results.fingerprint`: what the code computes, by syntax tree;
- :mod:`~fold_jax.results.migrate`: the one-time move of the flat ``results/*.csv``;
- ``python -m fold_jax.results``: ``promote``, ``archive``, ``unarchive``, ``runs``,
  ``fingerprint``, ``migrate`` (see docs/results-store.md).
"""

from __future__ import annotations

from fold_jax.results import fingerprint
from fold_jax.results.catalog import (
                                      canonical,
                                      check_key,
                                      check_name,
                                      check_types,
                                      columns_markdown,
                                      key,
                                      normalize_key,
                                      schema,
                                      undescribed,
                                      validate,
                                      write_columns,
)
from fold_jax.results.columns import (
                                      DTYPES,
                                      MACHINE_KEY,
                                      META,
                                      META_COLUMNS,
                                      META_OPTIONAL,
                                      Column,
                                      Schema,
)
from fold_jax.results.files import SCHEMA, SCHEMAS
from fold_jax.results.io import check_writable
from fold_jax.results.reference import (
                                      archive,
                                      code_changes,
                                      default_kind,
                                      kinds,
                                      promote,
                                      run_fingerprint,
                                      unarchive,
)
from fold_jax.results.runinfo import (
                                      ALL_RUNS,
                                      CODE_PATHS,
                                      MANIFEST,
                                      REFERENCE_DIR,
                                      REGISTRY,
                                      RUN_COLUMNS,
                                      RUNS_DIR,
                                      check_run_id,
                                      clear_resumable,
                                      code_changed,
                                      cpu_model,
                                      git_commit,
                                      machine_kind,
                                      mark_resumable,
                                      metadata,
                                      new_run_id,
                                      read_run,
                                      record_run,
                                      resumable,
                                      run_dir,
                                      run_id,
                                      runs,
                                      set_run_id,
)
from fold_jax.results.store import append, done, done_keys, load

__all__ = [
    "ALL_RUNS", "CODE_PATHS", "DTYPES", "MACHINE_KEY", "MANIFEST", "META", "META_COLUMNS",
    "META_OPTIONAL", "REFERENCE_DIR", "REGISTRY", "RUNS_DIR", "RUN_COLUMNS", "SCHEMA",
    "SCHEMAS", "Column", "Schema", "append", "archive", "canonical", "check_key",
    "check_name", "check_run_id", "check_types", "check_writable", "clear_resumable",
    "code_changed", "code_changes", "columns_markdown", "cpu_model", "default_kind", "done",
    "done_keys", "fingerprint", "git_commit", "key", "kinds", "load", "machine_kind",
    "mark_resumable", "metadata", "new_run_id", "normalize_key", "promote", "read_run",
    "record_run", "resumable", "run_dir", "run_fingerprint", "run_id", "runs", "schema",
    "set_run_id", "unarchive", "undescribed", "validate", "write_columns",
]
