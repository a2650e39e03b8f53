"""Files of the results store: atomic replacement, appends, gzip, locking.

Every write goes to a temporary file beside its target, is fsynced and ``os.replace``-d
over it, so a process killed at any moment leaves either the old or the new file, never
a torn one. Tables are CSV, gzip-compressed when the name ends in ``.gz``: an append adds
one gzip member (a valid gzip file is any sequence of members), :func:`write_table`
writes one member with a zero timestamp, so the same rows always give the same bytes on
one zlib. Writers in several processes are serialised by an advisory ``flock`` on the
directory (POSIX); where that is unavailable, one writer at a time is assumed.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["append_table", "check_writable", "csv_text", "file_stem", "gzip_bytes", "locked",
           "not_writer", "read_csv", "replace_atomic", "write_bytes_if_changed",
           "write_table"]

GZIP_LEVEL = 9


def file_stem(path: str | os.PathLike) -> str:
    """The results-file stem of ``path``: ``races`` for ``races.csv`` and ``races.csv.gz``.

    Args:
        path: a file path.

    Returns:
        The stem.
    """
    name = Path(path).name
    for suffix in (".gz", ".csv"):
        name = name.removesuffix(suffix)
    return name


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Advisory exclusive lock on the directory itself (no lock file to litter it).

    Args:
        directory: an existing folder.

    Yields:
        None, while the lock is held.
    """
    try:
        import fcntl
    except ImportError:  # single-writer assumption off POSIX
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def check_writable(results_dir: str | os.PathLike) -> Path:
    """Create ``results_dir`` if needed; PermissionError / OSError naming it if it cannot
    be written.

    Args:
        results_dir: the folder.

    Returns:
        The folder as a ``Path``.
    """
    directory = Path(results_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise type(e)(e.errno, f"cannot create results directory {directory}: "
                      f"{e.strerror}", str(directory)) from e
    if not directory.is_dir():
        raise NotADirectoryError(f"results directory {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"results directory {directory} is not writable")
    return directory


def _file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def replace_atomic(path: Path, write: Callable[[Any], Any], *, binary: bool = False) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, fsync it
    and ``os.replace`` it into place (never a torn file).

    Args:
        path: the target file.
        write: called with the open temporary file (text, or bytes with ``binary``).
        binary: open the temporary file in binary mode.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; results are for sharing
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def csv_text(frame: pd.DataFrame, header: bool = True) -> str:
    """``frame`` as CSV text (no index; ``inf`` / ``-inf`` spelled so; NaN empty).

    Args:
        frame: the rows.
        header: write the header line.

    Returns:
        The text.
    """
    return frame.to_csv(index=False, header=header, lineterminator="\n")


def gzip_bytes(data: bytes) -> bytes:
    """``data`` as one gzip member with a zero timestamp and no file name.

    Args:
        data: the bytes to compress.

    Returns:
        The compressed bytes (deterministic for one zlib build).
    """
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def _encode(path: Path, text: str) -> bytes:
    data = text.encode()
    return gzip_bytes(data) if path.name.endswith(".gz") else data


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Atomically write ``frame`` to ``path`` (gzip when it ends in ``.gz``).

    Args:
        frame: the rows.
        path: the target file.
    """
    data = _encode(path, csv_text(frame))
    replace_atomic(path, lambda f: f.write(data), binary=True)


def append_table(rows: pd.DataFrame, path: Path) -> None:
    """Atomically add ``rows`` (already in the file's column order) to the table at
    ``path``: the file's bytes are copied as they are and the rows' text added (a new
    gzip member for ``.gz``), so an append costs a copy of the file, not a parse and
    render of every old row.

    Args:
        rows: the new rows, without header.
        path: an existing table.
    """
    text = csv_text(rows, header=False)
    gz = path.name.endswith(".gz")

    def write(f):
        with open(path, "rb") as old:  # bytes: nothing decoded, nothing re-rendered
            shutil.copyfileobj(old, f, 1 << 20)
            end = old.tell()
            old.seek(max(end - 1, 0))
            newline = not gz and end and old.read(1) != b"\n"
        # a plain file edited by hand may lack its last newline
        f.write(_encode(path, ("\n" if newline else "") + text))

    replace_atomic(path, write, binary=True)


def write_bytes_if_changed(path: Path, data: bytes) -> bool:
    """Atomically write ``data`` to ``path`` unless the file already holds those bytes.

    Args:
        path: the target file.
        data: its new content.

    Returns:
        Whether the file was written.
    """
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomic(path, lambda f: f.write(data), binary=True)
    return True


def read_csv(path: Path, **options) -> pd.DataFrame:
    """``pandas.read_csv`` of a plain or gzip table; ValueError naming ``path`` when it is
    empty, unparsable or not UTF-8 text.

    Args:
        path: the file.
        **options: passed to ``pandas.read_csv``.

    Returns:
        The rows.
    """
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
            return pd.read_csv(io.BytesIO(data), on_bad_lines="error", **options)
        return pd.read_csv(path, on_bad_lines="error", **options)
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"{path}: empty file (no header row)") from e
    except pd.errors.ParserError as e:
        raise ValueError(f"{path}: unparsable rows: {e}") from e
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
        raise ValueError(f"{path}: not a UTF-8 text CSV (or a torn gzip): {e}") from e


def not_writer() -> bool:
    """In a multi-host run (``jax.distributed``) only process 0 writes results.

    Returns:
        True in every process but process 0 of a multi-host run.
    """
    import jax

    return jax.process_count() > 1 and jax.process_index() != 0
