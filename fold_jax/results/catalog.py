"""Looking up the schema of a results file, checking frames against it, and keys.

:func:`schema` / :func:`key` / :func:`undescribed` answer from ``SCHEMA``;
:func:`validate` and :func:`check_types` check rows; :func:`normalize_key` makes the
canonical key of a row (so 64, 64.0, "64" match, and None, NaN and "" match);
:func:`columns_markdown` renders the column dictionary ``COLUMNS.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fold_jax.results.columns import META, META_COLUMNS, META_OPTIONAL, META_TYPES, Schema
from fold_jax.results.files import SCHEMA, SCHEMAS
from fold_jax.results.io import file_stem, replace_atomic

__all__ = ["canonical", "check_key", "check_name", "check_types", "columns_markdown", "key",
           "normalize_key", "schema", "undescribed", "validate", "write_columns"]


def schema(name: str) -> Schema:
    """The :class:`Schema` of results file ``name``; ValueError naming the known files.

    Args:
        name: the file's stem (kernels, races, curves, tuning, ...).

    Returns:
        Its :class:`Schema`.
    """
    if name not in SCHEMA:
        raise ValueError(f"no schema for results file {name!r}; known: {sorted(SCHEMA)}")
    return SCHEMA[name]


def key(name: str) -> list[str]:
    """The key columns of results file ``name`` (a fresh list).

    Args:
        name: the file's stem.

    Returns:
        Its key columns, in order.
    """
    return list(schema(name).key)


def undescribed(name: str, columns: Iterable[str]) -> list[str]:
    """The ``columns`` that neither the metadata nor file ``name``'s schema describes.

    Args:
        name: the file's stem.
        columns: column names (a row's keys, a frame's columns).

    Returns:
        The undescribed names, in the order given.
    """
    s = schema(name)
    return [c for c in columns if s.column(c) is None]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def columns_markdown() -> str:
    """The column dictionary of every results file, as markdown (``results/COLUMNS.md``).

    Returns:
        The markdown text, generated from ``META`` and ``SCHEMA``.
    """
    out = ["# Results columns", "",
           "Generated from `fold_jax.results.SCHEMA` (`python -m fold_jax.report --columns`, "
           "and every report build writes it); do not edit by hand.",
           "", "dtype: `num` a number (inf and NaN allowed; empty = NaN), `int` a whole "
           "number (or empty), `str` text, `bool` True/False. *core*: every row carries the "
           "column and loading checks its type; other columns may be empty. *key*: the "
           "columns that identify a row within a run (a run writes one row per key).", "",
           "Every ratio column divides a reference's time by the row's own time measured in "
           "the same alternating rounds, so > 1 always means the row's kernel is faster "
           "than its reference.", "",
           "## Every file: metadata", "", "| column | dtype | unit | description |",
           "|---|---|---|---|"]
    out += [f"| `{c.name}` | {c.dtype} | {_cell(c.unit)} | {_cell(c.description)} |"
            for c in META]
    for s in SCHEMA.values():
        out += ["", f"## {s.file}.csv", "", f"One row: {s.row}.", "",
                "Key: " + ", ".join(f"`{k}`" for k in s.key) + ".", "",
                "| column | dtype | unit | core | key | description |",
                "|---|---|---|---|---|---|"]
        out += [f"| `{c.name}` | {c.dtype} | {_cell(c.unit)} | {'yes' if c.core else ''} | "
                f"{'yes' if c.name in s.key else ''} | {_cell(c.description)} |"
                for c in s.columns]
    return "\n".join(out) + "\n"




def write_columns(path: str | os.PathLike = "results/COLUMNS.md") -> Path:
    """Write :func:`columns_markdown` to ``path`` (atomically) when it differs.

    Args:
        path: the file to write.

    Returns:
        The path written.
    """
    path = Path(path)
    text = columns_markdown()
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomic(path, lambda f: f.write(text))
    return path


def canonical(value: Any) -> str:
    """Canonical text of a key value, so 64, 64.0, "64" and None / NaN / "" compare equal.

    Args:
        value: a cell.

    Returns:
        Its canonical text.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        if value in ("True", "False"):
            return value
        try:
            value = float(value)
        except ValueError:
            return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return ""
    if math.isfinite(number) and number.is_integer():
        return str(int(number))
    return repr(number)


def normalize_key(row: Mapping[str, Any], key: Sequence[str]) -> tuple[str, ...]:
    """The canonical tuple identifying ``row`` by the columns ``key``.

    Args:
        row: the row, a mapping of column -> value.
        key: the key columns (missing ones count as None).

    Returns:
        A tuple of normalized strings, one per key column.
    """
    return tuple(canonical(row.get(k)) for k in key)



def check_name(name: str) -> None:
    """ValueError unless ``name`` is a file stem (no folder, no leading dot).

    Args:
        name: the candidate stem.
    """
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name={name!r} must be a file stem such as 'kernels' or 'races'")



def check_key(key) -> list[str]:
    """``key`` as a list; TypeError unless it is a non-empty sequence of column names.

    Args:
        key: the candidate key.

    Returns:
        The key columns.
    """
    if isinstance(key, str) or not isinstance(key, Sequence) or not key:
        raise TypeError(f"key must be a non-empty list of column names, got {key!r}")
    return list(key)


def validate(frame: pd.DataFrame, path: str | os.PathLike, name: str | None = None) -> None:
    """Raise ValueError naming ``path`` (and the row) when ``frame`` breaks the schema.

    Rows are numbered from 1 after the header (file line = row + 1).

    Args:
        frame: the rows read from the file.
        path: the file's path (named in errors).
        name: the schema's name (None: the stem of ``path``; no schema: no check).
    """
    name = file_stem(path) if name is None else name
    core = SCHEMAS.get(name)
    if core is None:
        return
    required = {**{c: META_TYPES.get(c, "str") for c in META_COLUMNS
                   if c not in META_OPTIONAL}, **core}
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing core columns {missing} (file kind {name!r})")
    check_types(frame, required, path)


def check_types(frame: pd.DataFrame, types: Mapping[str, str],
                path: str | os.PathLike = "<frame>") -> None:
    """Raise ValueError naming ``path``, the row and the column when a value of a column
    in ``types`` is not of its dtype (empty cells pass; absent columns are not checked).

    Args:
        frame: the rows.
        types: column -> dtype ("num", "int", "str" or "bool").
        path: what to name in errors.
    """
    for column, kind in types.items():
        if kind == "str" or column not in frame.columns:
            continue
        series = frame[column]
        if kind == "bool":
            ok = series.isna() | series.astype(str).isin(["True", "False", "1", "0", "1.0",
                                                          "0.0"])
        else:
            numbers = pd.to_numeric(series, errors="coerce")
            ok = numbers.notna() | series.isna()
            if kind == "int":
                ok &= numbers.isna() | (numbers.abs() == float("inf")) | (numbers % 1 == 0)
        if not bool(ok.all()):
            i = int((~ok.to_numpy()).nonzero()[0][0])
            raise ValueError(f"{path}: row {i + 1} (line {i + 2}): column {column!r} must be "
                             f"{kind}, got {series.iloc[i]!r}")


