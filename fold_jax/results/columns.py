"""Column and file types of the results store, and the metadata every row carries.

A results file (``kernels``, ``races``, ...) is described by one :class:`Schema`: its key
columns and every column it may hold, each a :class:`Column` with dtype, unit and a
one-line description (the files themselves: :mod:`fold_jax.results.files`). ``META`` is
the metadata of every row (stored once per run, see :mod:`fold_jax.results.store`).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DTYPES", "MACHINE_KEY", "META", "META_COLUMNS", "META_OPTIONAL", "META_TYPES",
           "RANK_MEANING", "Column", "Schema", "col", "timing_columns"]

DTYPES: tuple[str, ...] = ("num", "int", "str", "bool")  # num: numbers incl. inf/NaN


class Column(NamedTuple):
    """One column of a results file.

    ``dtype``: "num" (a number; inf and NaN allowed), "int" (a whole number or empty),
    "str" (text) or "bool" (True/False). ``unit``: e.g. "s", "bytes", "count", "ratio"
    ("" for names and labels). ``core``: every row of the file must carry it, and
    :func:`validate` checks its type.
    """

    name: str
    dtype: str
    unit: str
    description: str
    core: bool = False


class Schema(NamedTuple):
    """A results file: its stem, key columns (a row's identity within a run; the
    machine part ``MACHINE_KEY`` included where the suite uses it), what one row is, and
    every column it may hold besides the metadata (``META``)."""

    file: str
    key: tuple[str, ...]
    row: str
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column | None:
        """The column called ``name`` (metadata included), or None.

        Args:
            name: the column's name.

        Returns:
            The :class:`Column`, or None when the file does not describe it.
        """
        for c in (*META, *self.columns):
            if c.name == name:
                return c
        return None

    @property
    def core(self) -> dict[str, str]:
        """The core columns and their dtypes (``{name: dtype}``)."""
        return {c.name: c.dtype for c in self.columns if c.core}



def col(name: str, dtype: str, unit: str, description: str, core: bool = False) -> Column:
    """A :class:`Column`; ValueError naming the column when ``dtype`` is not in ``DTYPES``.

    Args:
        name: the column's name.
        dtype: one of ``DTYPES``.
        unit: its unit ("" for names and labels).
        description: one line.
        core: every row of the file must carry it.

    Returns:
        The :class:`Column`.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} of column {name!r}; allowed: {list(DTYPES)}")
    return Column(name, dtype, unit, description, core)


META: tuple[Column, ...] = (
    col("run_id", "str", "", "the run that wrote the row (its record: runs/<run_id>/run.json, "
        "where the metadata the rows share is stored once)"),
    col("timestamp_utc", "str", "ISO 8601", "when the row was written (UTC)"),
    col("git_commit", "str", "", "HEAD of the checkout that measured the row (40 hex digits "
       "or 'unknown')"),
    col("host", "str", "", "the machine's host name (platform.node())"),
    col("cpu_model", "str", "", "the host CPU (cpu_model(): model name, architecture, logical "
       "cores, AVX-512 when present): machines under one host name can differ"),
    col("backend", "str", "", "jax.default_backend(): cpu, gpu, tpu, ..."),
    col("device_kind", "str", "", "jax.devices()[0].device_kind (scaling: the forced host "
       "devices)"),
    col("n_devices", "int", "count", "jax.device_count() of the process"),
    col("jax_version", "str", "", "jax.__version__"),
    col("jaxlib_version", "str", "", "jaxlib.__version__"),
)
META_COLUMNS: tuple[str, ...] = tuple(c.name for c in META)
# metadata added after results files existed: rows of older runs lack it, so a file is
# valid without it (new rows always carry it)
META_OPTIONAL: tuple[str, ...] = ("cpu_model",)
# the metadata that names the machine. Suites put it in their key so a row says which
# machine it measured; whether a job is done is decided by run_id (see done_keys).
MACHINE_KEY: tuple[str, ...] = ("host", "backend", "device_kind", "n_devices")

META_TYPES: dict[str, str] = {c.name: c.dtype for c in META if c.dtype != "str"}


def timing_columns(prefix: str, what: str, core: bool = False) -> tuple[Column, ...]:
    """The median and IQR columns ``<prefix>_median_s`` / ``<prefix>_iqr_s`` of a timing.

    Args:
        prefix: the columns' prefix.
        what: what is timed (in the description).
        core: whether they are core columns.

    Returns:
        The two :class:`Column`.
    """
    return (col(f"{prefix}_median_s", "num", "s", f"median time of one call of {what}", core),
            col(f"{prefix}_iqr_s", "num", "s", "interquartile range of those times", core))


# the meaning of a ``rank`` column, one text for every file that has one
RANK_MEANING = ("rank of each 2-D leaf's low-rank perturbation; 0 = full-rank (dense) noise; "
                "empty = the kernel perturbs nothing (inference, backprop, binarized / sparse "
                "matmuls)")
