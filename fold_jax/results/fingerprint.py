"""Code fingerprints: when rows are stale because the code that measured them changed.

A row is stale when the code it measured changed in *what it computes*, not when a
comment, a docstring or an unused definition changed. The fingerprint of a source tree
is, for every module, a hash of each top-level statement's syntax tree (``ast``) keyed
by the names the statement binds:

- comments vanish in parsing, and string statements (docstrings) are removed from every
  body before hashing; line and column numbers are not part of the hash;
- imports are hashed by the imported object's name and the bound name only, not by the
  module path it came from (``from bench import common`` and ``from fold_jax.bench
  import common`` are the same statement); an import inside a function, class or
  block is hashed without the path of the fold_jax module it imports from (where a
  module lives in the package is layout, not computation);
- modules are keyed by file stem (a package ``__init__.py`` by its package's name), not
  by path, so moving a module between folders keeps its rows valid; two files with one
  stem are told apart by their paths, and :func:`changes` pairs a moved one with its old
  path by stem (``probes.py`` moved from ``fold_jax/`` into ``fold_jax/analysis/``,
  beside ``fold_jax/bench/suites/probes.py``);
- ``__all__`` is ignored (it computes nothing).

:func:`changes` compares two fingerprints: a definition present in both whose hash
differs, or an unnamed statement (a top-level ``if``, ``try``, call) present in only one,
is a change. Definitions only in one of them are not: removing dead code leaves every
row valid, and code that starts using a new definition changes itself. The report and
the results store only read and write rows, so ``fold_jax/report`` and
``fold_jax/results`` are left out of the fingerprint.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["EXCLUDED", "changes", "covered", "current", "digest", "fingerprint", "package_sources",
           "source_files", "statement_hashes", "to_json"]

Fingerprint = dict[str, dict[str, str]]  # module key -> statement key -> hash (16 hex)

EXCLUDED: tuple[str, ...] = ("report", "results")  # fold_jax subpackages left out
_HASH_CHARS = 16
_CURRENT: Fingerprint | None = None


def _strip_strings(tree: ast.AST) -> ast.AST:
    """Remove string-constant statements (docstrings, string 'comments') from every body."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            kept = [s for s in body if not (isinstance(s, ast.Expr)
                                            and isinstance(s.value, ast.Constant)
                                            and isinstance(s.value.value, str))]
            if field == "body" and not kept:
                kept = [ast.Pass()]
            setattr(node, field, kept)
    return tree


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def _targets(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Tuple | ast.List):
        return [n for e in node.elts for n in _targets(e)]
    if isinstance(node, ast.Starred):
        return _targets(node.value)
    return []


def _package_path(module: str | None, level: int) -> bool:
    return bool(level) or module == "fold_jax" or (module or "").startswith("fold_jax.")


def _without_package_paths(stmt: ast.stmt) -> ast.stmt:
    """``stmt`` with the fold_jax module paths of the imports nested in it blanked, and
    each run of such imports merged into one with sorted names (one statement split
    by the modules' new folders hashes as before)."""
    for node in ast.walk(stmt):
        if isinstance(node, ast.ImportFrom) and _package_path(node.module, node.level):
            node.module, node.level = "*", 0
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and _package_path(a.name, 0):
                    a.name = "*." + a.name.split(".")[-1]
    for node in ast.walk(stmt):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            merged: list[ast.stmt] = []
            for s in body:
                if (isinstance(s, ast.ImportFrom) and s.module == "*" and merged
                        and isinstance(merged[-1], ast.ImportFrom) and merged[-1].module == "*"):
                    names = [*merged[-1].names, *s.names]
                    merged[-1] = ast.ImportFrom("*", sorted(names, key=lambda a: (
                        a.name, a.asname or "")), 0)
                else:
                    merged.append(s)
            setattr(node, field, merged)
    return stmt


def _entries(stmt: ast.stmt) -> list[tuple[str, str]]:
    """``(key, text to hash)`` pairs of one top-level statement."""
    if isinstance(stmt, ast.Import):
        return [(a.asname or a.name.split(".")[0], f"import {a.name.split('.')[-1]}")
                for a in stmt.names]
    if isinstance(stmt, ast.ImportFrom):
        return [(a.asname or a.name, f"from * import {a.name}") for a in stmt.names]
    dump = ast.dump(_without_package_paths(stmt), annotate_fields=False,
                    include_attributes=False)
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        names = [stmt.name]
    elif isinstance(stmt, ast.Assign):
        names = [n for t in stmt.targets for n in _targets(t)]
    elif isinstance(stmt, ast.AnnAssign | ast.AugAssign):
        names = _targets(stmt.target)
    else:
        names = []
    if names == ["__all__"]:
        return []
    if not names:
        return [(f"<statement {_hash(dump)}>", dump)]
    return [(",".join(names), dump)]


def statement_hashes(source: str, filename: str = "<source>") -> dict[str, str]:
    """The hash of each top-level statement of a module's ``source``, by bound names.

    Args:
        source: Python source text.
        filename: named in a SyntaxError.

    Returns:
        ``{key: hash}``: key = the names a statement binds (comma separated), or
        ``<statement HASH>`` for one that binds none; a name bound twice hashes both
        statements in order.
    """
    tree = _strip_strings(ast.parse(source, filename=filename))
    texts: dict[str, list[str]] = {}
    for stmt in tree.body:
        for name, text in _entries(stmt):
            texts.setdefault(name, []).append(text)
    return {name: _hash("\n".join(parts)) for name, parts in sorted(texts.items())}


def _module_key(relative: str) -> str:
    parts = Path(relative).with_suffix("").parts
    if parts[-1] == "__init__":
        return parts[-2] if len(parts) > 1 else "__init__"
    return parts[-1]


def fingerprint(sources: Mapping[str, str]) -> Fingerprint:
    """The fingerprint of a source tree.

    Args:
        sources: relative path (``fold_jax/estimators/zo.py``) -> source text.

    Returns:
        ``{module key: {statement key: hash}}``; the module key is the file stem (the
        package name for ``__init__.py``), or the path where stems collide.
    """
    keys = {path: _module_key(path) for path in sources}
    counts: dict[str, int] = {}
    for k in keys.values():
        counts[k] = counts.get(k, 0) + 1
    return {(k if counts[k] == 1 else Path(path).as_posix()):
            statement_hashes(sources[path], path)
            for path, k in sorted(keys.items())}


def _root(root: str | os.PathLike | None) -> Path:
    if root is None:  # this file is fold_jax/results/fingerprint.py
        return Path(__file__).resolve().parents[2]
    return Path(root)


def covered(relative: str) -> bool:
    """Whether a fingerprint covers the file at ``relative`` (a path from the folder
    holding ``fold_jax/``): a ``*.py`` under ``fold_jax/`` but ``fold_jax/report`` and
    ``fold_jax/results``, or under ``bench/``.

    Args:
        relative: the path, with ``/`` separators.

    Returns:
        True when covered.
    """
    parts = Path(relative).parts
    if not relative.endswith(".py") or len(parts) < 2 or "__pycache__" in parts:
        return False
    if parts[0] == "bench":
        return True
    return parts[0] == "fold_jax" and parts[1].removesuffix(".py") not in EXCLUDED


def source_files(root: str | os.PathLike | None = None) -> list[Path]:
    """The modules a fingerprint covers (:func:`covered`) in the folder ``root``.

    Args:
        root: the folder holding ``fold_jax/`` (None: the imported package's parent).

    Returns:
        The files, sorted.
    """
    root = _root(root)
    files = [*(root / "fold_jax").rglob("*.py"), *(root / "bench").rglob("*.py")]
    return sorted(p for p in files if covered(p.relative_to(root).as_posix()))


def package_sources(root: str | os.PathLike | None = None) -> dict[str, str]:
    """``{path relative to root: source}`` of :func:`source_files`.

    Args:
        root: the folder holding ``fold_jax/`` (None: the imported package's parent).

    Returns:
        The sources.
    """
    root = _root(root)
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for p in source_files(root)}


def current() -> Fingerprint:
    """The fingerprint of the imported ``fold_jax`` package (computed once per process).

    Returns:
        The fingerprint.
    """
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = fingerprint(package_sources())
    return _CURRENT


def digest(fp: Mapping[str, Mapping[str, str]]) -> str:
    """A short hash of a whole fingerprint (equal digests: nothing changed at all).

    Args:
        fp: a fingerprint.

    Returns:
        16 hex digits.
    """
    return _hash(json.dumps(fp, sort_keys=True))


def _pairs(old: Mapping[str, Mapping[str, str]], new: Mapping[str, Mapping[str, str]]
           ) -> dict[str, tuple[Mapping[str, str], Mapping[str, str]]]:
    """The modules of ``old`` and ``new`` that are one module, by key in ``new``.

    Equal keys pair first; of the keys left, an old and a new one with one stem pair (a
    module whose stem is shared is keyed by its path, so its key changes when it moves
    between folders or gains a stem-mate): the only two left with that stem, else the
    two sharing the most statement names. Keys left unpaired are modules added or
    removed.
    """
    pairs = {k: (old[k], new[k]) for k in set(old) & set(new)}
    left_old: dict[str, list[str]] = {}
    left_new: dict[str, list[str]] = {}
    for keys, left in ((set(old) - set(new), left_old), (set(new) - set(old), left_new)):
        for k in sorted(keys):
            left.setdefault(_module_key(k) if k.endswith(".py") else k, []).append(k)
    for stem, olds in left_old.items():
        news = left_new.get(stem, [])
        while olds and news:
            shared = {(o, n): len(set(old[o]) & set(new[n])) for o in olds for n in news}
            (o, n), most = max(shared.items(), key=lambda item: item[1])
            if most == 0 and len(shared) > 1:
                break  # no evidence which is which
            pairs[n] = (old[o], new[n])
            olds.remove(o)
            news.remove(n)
    return pairs


def changes(old: Mapping[str, Mapping[str, str]], new: Mapping[str, Mapping[str, str]]
            ) -> list[str]:
    """What changed in what the code computes between fingerprints ``old`` and ``new``.

    Args:
        old: the fingerprint of the code that measured the rows.
        new: the fingerprint of the code now.

    Returns:
        ``module.statement`` keys that changed (empty: the rows are not stale); a module
        is named by its key in ``new``.
    """
    out = []
    for module, (a, b) in sorted(_pairs(old, new).items()):
        for key in sorted(set(a) | set(b)):
            unnamed = key.startswith("<statement ")
            edited = key in a and key in b and a[key] != b[key]
            if edited or (unnamed and (key in a) != (key in b)):
                out.append(f"{module}.{key}")
    return out


def to_json(code: Mapping[str, Mapping[str, str]]) -> str:
    """A fingerprint as canonical JSON text (sorted keys, one module a line).

    Args:
        code: a fingerprint.

    Returns:
        The text.
    """
    lines = [f"{json.dumps(m)}: {json.dumps(dict(code[m]), sort_keys=True)}"
             for m in sorted(code)]
    return "{\n" + ",\n".join(lines) + "\n}\n"
