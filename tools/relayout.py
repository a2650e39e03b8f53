"""Move fold_jax's flat library modules into folders by layer (issue 34, item 5).

Usage (from anywhere; ROOT is the repository, default: this file's parent's parent)::

    python tools/relayout.py [ROOT] [--dry-run] [--allow-dirty]

What it does, in order, and prints as it goes:

1. Plans: every ``fold_jax/<stem>.py`` but ``KEEP_AT_TOP`` gets the folder ``HOMES``
   names, or that of the longest stem it extends (``zo_schedule`` goes with ``zo``). A
   module no rule maps, an unknown folder under ``fold_jax/``, a moved module with a
   relative import or a ``__file__`` (its depth changes) stops it before anything is
   written, naming them (exit 2).
2. Moves each with ``git mv`` and writes each folder's light ``__init__.py`` (a docstring).
3. Rewrites, in every tracked ``*.py`` / ``*.md`` / ``*.toml`` / ``*.yml`` file but
   ``SKIP_FILES`` (results/ is generated, README.md has its owner): statements
   ``from fold_jax import a, b`` into one per home, dotted names ``fold_jax.zo`` ->
   ``fold_jax.estimators.zo`` (imports, strings, docs, mkdocstrings ``:::`` lines) and
   paths ``fold_jax/zo.py`` -> ``fold_jax/estimators/zo.py`` (in Python: in code,
   comments and docstrings; string literals that are data keep the old names, which
   resolve through the aliases). A line holding ``relayout: keep`` is left as it is.
   Then ``ruff check --select I --fix`` sorts the imports of the touched Python files.
4. Makes ``fold_jax/__init__.py`` the facade: a docstring from ``FOLDERS``, the layer
   folders in ``__all__``, and ``_alias_flat_names``, which registers every module it
   imports under its old flat name in ``sys.modules`` (so ``import fold_jax.zo``,
   ``from fold_jax.zo import x``, ``fj.zo``, ``monkeypatch.setattr("fold_jax.zo.x", ...)``
   and pickles naming ``fold_jax.zo`` keep working).

Running it twice is a no-op: the second run moves nothing and rewrites nothing. Run it
again after merging code that adds flat modules or old-style imports: it moves and
rewrites just those. Review with ``git status`` / ``git diff`` and commit.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
import textwrap
import tokenize
from io import StringIO
from pathlib import Path

# folder -> (floor, what it holds, module stems). A folder imports only from itself and
# from folders on lower floors (tests/test_layout.py checks it); checks.py and data/ are
# the ground floor, the facade fold_jax/__init__.py sits above everything.
FOLDERS: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "estimators": (1, "the estimator core: noise, directions and low-rank perturbations, "
                      "their fused flax layers, zeroth-order gradients (zo), shaping, "
                      "SNES, direct search, evosax peers and the Method init/step pair",
                   ("noise", "directions", "perturb", "fusion", "flax_hooks", "flax_layers",
                    "flax_linen", "flax_nnx", "info", "zo", "shaping", "snes", "search",
                    "methods", "peers")),
    "learn": (2, "tasks and training: datasets, control and text tasks, heads, nets, "
                 "the one training loop, compiled programs, the device-parallel "
                 "population, LM pretraining, PPO, and the recipes (named methods with "
                 "their search spaces) that train and report read",
              ("tasks", "heads", "nets", "train", "programs", "parallel", "text", "gutenberg",
               "pretrain", "control", "policies", "ppo", "recipes", "suite_recipes")),
    "compress": (3, "network variants: the flax layer walker, sparse (BCSR) kernels, "
                    "pruning, binarized networks and the variants built from them",
                 ("walker", "bcsr", "prune", "binary", "variants")),
    "analysis": (3, "probes of trained networks: representation probes and linear regions",
                 ("probes", "regions")),
}
# where the harness modules and ground floor sit (not moved by this script, but layered)
FIXED_FLOORS: dict[str, int] = {"checks": 0, "data": 0, "results": 4, "report": 5, "bench": 6}
# flat modules the harness owns: moved into fold_jax/bench/ (floor 6)
TO_BENCH: tuple[str, ...] = ("timing",)
KEEP_AT_TOP: frozenset[str] = frozenset({"__init__", "checks"})
SUBPACKAGES: frozenset[str] = frozenset({*FOLDERS, "bench", "results", "report", "data"})
# results/ is generated, README.md has its owner, these two name the old paths on purpose
SKIP_FILES = re.compile(r"^(results/|README\.md$|tools/relayout\.py$|tests/test_layout\.py$)")
TEXT_SUFFIXES = (".py", ".md", ".toml", ".yml", ".yaml", ".cfg")
KEEP_MARK = "relayout: keep"
LINE_LIMIT = 100  # ruff's line-length (pyproject.toml)

HOMES: dict[str, str] = {s: f for f, (_, _, stems) in FOLDERS.items() for s in stems}
HOMES.update({s: "bench" for s in TO_BENCH})
LAYERS: dict[str, int] = {**FIXED_FLOORS, **{f: floor for f, (floor, _, _) in FOLDERS.items()}}


class LayoutError(Exception):
    """The tree holds something the tables do not map; nothing was written."""


def home_of(stem: str) -> str | None:
    """The folder a flat module ``stem`` moves to: ``HOMES``, else the longest stem of
    ``HOMES`` it extends with ``_`` (``zo_schedule`` -> zo's folder), else None."""
    if stem in HOMES:
        return HOMES[stem]
    parents = [s for s in HOMES if stem.startswith(s + "_")]
    return HOMES[max(parents, key=len)] if parents else None


def git(root: Path, *args: str) -> str:
    """Run git in ``root``; return its stdout (raises on failure)."""
    out = subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)
    return out.stdout


# ------------------------------------------------------------------------------ planning

def plan(root: Path) -> dict[str, str]:
    """``{stem: folder}`` of the flat modules to move now; raises LayoutError (naming every
    problem) when a module or folder is unmapped or cannot move safely."""
    pkg = root / "fold_jax"
    problems, moves = [], {}
    for path in sorted(pkg.glob("*.py")):
        stem = path.stem
        if stem in KEEP_AT_TOP:
            continue
        folder = home_of(stem)
        if folder is None:
            problems.append(f"fold_jax/{path.name}: no folder for it; add it to FOLDERS (or "
                            "TO_BENCH / KEEP_AT_TOP) in tools/relayout.py")
            continue
        if (pkg / folder / path.name).exists():
            problems.append(f"fold_jax/{path.name}: fold_jax/{folder}/{path.name} exists too")
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree)):
            problems.append(f"fold_jax/{path.name}: relative import (its depth changes)")
        if any(isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(tree)):
            problems.append(f"fold_jax/{path.name}: uses __file__ (its depth changes; use "
                            "importlib.resources.files('fold_jax'))")
        moves[stem] = folder
    for d in sorted(p for p in pkg.iterdir() if p.is_dir() and p.name != "__pycache__"):
        if d.name not in SUBPACKAGES and any(d.rglob("*.py")):
            problems.append(f"fold_jax/{d.name}/: unknown folder; add it to FOLDERS or "
                            "FIXED_FLOORS in tools/relayout.py")
    if problems:
        raise LayoutError("relayout: stopped before writing anything:\n  "
                          + "\n  ".join(problems))
    return moves


def homes_in_tree(root: Path, moves: dict[str, str]) -> dict[str, str]:
    """``{stem: folder}`` of every module in a layer folder (moved now or before): the
    table the rewrite applies, so code merged later with old names is rewritten too."""
    out = dict(moves)
    for folder in (*FOLDERS, *set(HOMES.values()) - set(FOLDERS)):
        for path in (root / "fold_jax" / folder).glob("*.py"):
            if path.stem != "__init__" and home_of(path.stem) == folder:
                out[path.stem] = folder
    return out


# ------------------------------------------------------------------------------ rewriting

def _names_line(module: str, names: list[str], indent: str, comment: str) -> str:
    one = f"from {module} import {', '.join(names)}{comment}"
    if len(indent) + len(one) <= LINE_LIMIT:
        return one
    inner = "".join(f"{indent}    {n},\n" for n in names)
    return f"from {module} import ({comment}\n{inner}{indent})"


def split_from_import(names: list[str], homes: dict[str, str], indent: str,
                      comment: str) -> str | None:
    """The statements that replace ``from fold_jax import <names>`` (each ``name`` or
    ``name as alias``), one per home, joined at ``indent``; None when none moved."""
    groups: dict[str, list[str]] = {}
    for n in names:
        folder = homes.get(n.split(" as ")[0].strip())
        groups.setdefault(f"fold_jax.{folder}" if folder else "fold_jax", []).append(n)
    if set(groups) == {"fold_jax"}:
        return None
    return f"\n{indent}".join(_names_line(m, groups[m], indent, comment) for m in sorted(groups))


def _comments(segment: str) -> list[str]:
    try:
        toks = tokenize.generate_tokens(StringIO(segment).readline)
        return [t.string for t in toks if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError):
        return re.findall(r"#[^\n]*", segment)


def rewrite_python_imports(text: str, homes: dict[str, str], where: str) -> str:
    """Split every ``from fold_jax import ...`` statement of Python ``text`` by home."""
    tree = ast.parse(text, filename=where)
    lines = text.splitlines(keepends=True)
    edits = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ImportFrom) and node.module == "fold_jax"
                and node.level == 0):
            continue
        first, last = lines[node.lineno - 1], lines[node.end_lineno - 1]
        if KEEP_MARK in first:
            continue
        prefix, rest = first[:node.col_offset], last[node.end_col_offset:]
        if prefix.strip() or (rest.strip() and not rest.strip().startswith("#")):
            raise LayoutError(f"{where}:{node.lineno}: an import sharing its line with "
                              "another statement; split it by hand, then rerun")
        segment = "".join(lines[node.lineno - 1:node.end_lineno])
        found = _comments(segment)
        comment = "  " + "  ".join(found) if found else ""
        names = [f"{a.name} as {a.asname}" if a.asname else a.name for a in node.names]
        new = split_from_import(names, homes, prefix, comment)
        if new is not None:
            edits.append((node.lineno - 1, node.end_lineno, prefix + new + "\n"))
    for start, end, new in sorted(edits, reverse=True):
        lines[start:end] = [new]
    return "".join(lines)


_MD_IMPORT = re.compile(r"^([ \t]*)from fold_jax import (\([^)]*\)|[^\n(]*)$", re.M)


def rewrite_markdown_imports(text: str, homes: dict[str, str]) -> str:
    """Split each ``from fold_jax import ...`` line (code blocks) of Markdown ``text``."""
    def one(m: re.Match) -> str:
        if KEEP_MARK in m.group(0):
            return m.group(0)
        body, _, comment = m.group(2).partition("#")
        names = [n.strip() for n in body.strip("() \t\n").split(",") if n.strip()]
        new = split_from_import(names, homes, m.group(1),
                                "  #" + comment.rstrip() if comment else "")
        return m.group(0) if new is None else m.group(1) + new
    return _MD_IMPORT.sub(one, text)


def rewrite_names(text: str, homes: dict[str, str]) -> str:
    """``fold_jax.<stem>`` -> ``fold_jax.<folder>.<stem>`` and ``fold_jax/<stem>.py`` ->
    ``fold_jax/<folder>/<stem>.py``, but on lines marked ``relayout: keep``."""
    if not homes:
        return text
    alt = "|".join(sorted(map(re.escape, homes), key=len, reverse=True))
    dotted = re.compile(rf"(?<![\w.])fold_jax\.({alt})\b(?!\.py\b)")
    path = re.compile(rf"(?<![\w./])fold_jax/({alt})\.py\b")
    out = []
    for line in text.splitlines(keepends=True):
        if KEEP_MARK not in line:
            line = dotted.sub(lambda m: f"fold_jax.{homes[m.group(1)]}.{m.group(1)}", line)
            line = path.sub(lambda m: f"fold_jax/{homes[m.group(1)]}/{m.group(1)}.py", line)
        out.append(line)
    return "".join(out)


def code_strings(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of the string literals of Python ``text`` that
    are data (messages, row labels, names looked up), not docstrings."""
    docs = {(n.lineno, n.col_offset) for n in ast.walk(ast.parse(text))
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
            and isinstance(n.value.value, str)}
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    fstring_start = getattr(tokenize, "FSTRING_START", None)  # Python >= 3.12
    fstring_end = getattr(tokenize, "FSTRING_END", None)
    spans, depth, opened = [], 0, 0
    for tok in tokenize.generate_tokens(StringIO(text).readline):
        at = starts[tok.start[0] - 1] + tok.start[1]
        end = starts[tok.end[0] - 1] + tok.end[1]
        if tok.type == fstring_start:
            depth, opened = depth + 1, at if depth == 0 else opened
        elif tok.type == fstring_end:
            depth -= 1
            if depth == 0 and tok.start[:2] not in docs:
                spans.append((opened, end))
        elif tok.type == tokenize.STRING and depth == 0 and tok.start not in docs:
            spans.append((at, end))
    return spans


def rewrite_file(relative: str, text: str, homes: dict[str, str]) -> str:
    """The text of the file at ``relative`` with imports and names rewritten.

    In Python, string literals that are data keep the old names: a message or a row
    label that changed would change what the code computes (its rows would turn stale,
    fold_jax/results/fingerprint.py), and a module name looked up still resolves through
    the aliases. Imports, other dotted names in code, comments and docstrings move.
    """
    if relative.endswith(".md"):
        return rewrite_names(rewrite_markdown_imports(text, homes), homes)
    if not relative.endswith(".py"):
        return rewrite_names(text, homes)
    text = rewrite_python_imports(text, homes, relative)
    out, last = [], 0
    for start, end in code_strings(text):
        out += [rewrite_names(text[last:start], homes), text[start:end]]
        last = end
    return "".join([*out, rewrite_names(text[last:], homes)])


# ------------------------------------------------------------------------------ the facade

ALIAS_FUNCTION = '''

def _alias_flat_names(namespace: dict) -> tuple[str, ...]:
    """Register each module imported here from a folder under its old flat name.

    The flat name (``zo`` of this package) becomes another name of the module in its
    folder (``estimators.zo``) in ``sys.modules``: one module object, so importing the
    flat name, importing from it, ``monkeypatch.setattr`` on it and pickles naming it
    keep working. The package's own code imports the new homes.

    Args:
        namespace: this module's globals.

    Returns:
        The flat names registered, sorted.
    """
    import sys
    from types import ModuleType

    flat = {f"{__name__}.{name}": module for name, module in namespace.items()
            if isinstance(module, ModuleType) and module.__name__.startswith(__name__ + ".")
            and module.__name__ != f"{__name__}.{name}"}
    sys.modules.update(flat)
    return tuple(sorted(flat))


FLAT_NAMES = _alias_flat_names(globals())
'''


def facade_docstring(root: Path) -> str:
    """The package docstring: the folders, their floors and modules, from ``FOLDERS``."""
    pkg = root / "fold_jax"
    lines = ['"""fold_jax: training without backpropagation, in JAX, measured against it.', "",
             "The package by layer; each folder imports only from the folders above it here:",
             "", "- ``checks``: argument checks shared by every layer (and ``data/``, the "
             "shipped corpora)."]
    for folder, (_, what, _) in sorted(FOLDERS.items(), key=lambda kv: (kv[1][0], kv[0])):
        stems = sorted(p.stem for p in (pkg / folder).glob("*.py") if p.stem != "__init__")
        lines.append(f"- ``{folder}`` ({', '.join(stems)}): {what}.")
    lines += ["- ``results`` (the results store), ``report`` (the report; needs matplotlib, "
              "imported on demand) and ``bench`` (the harness, ``python -m fold_jax.bench``; "
              f"holds {', '.join(TO_BENCH)}).", "",
              "Every module keeps its old flat name: ``fj.zo``, ``import fold_jax.zo`` and "
              "``from fold_jax.zo import x`` name ``fold_jax.estimators.zo`` "
              "(:data:`FLAT_NAMES`).", '"""']
    out = []
    for line in lines:
        out += textwrap.wrap(line, LINE_LIMIT - 12, subsequent_indent="  " if
                             line.startswith("- ") else "") or [""]
    return "\n".join(out)


def rewrite_facade(root: Path, text: str, homes: dict[str, str]) -> str:
    """``fold_jax/__init__.py``: the docstring, ``__all__`` (the folders and the modules
    at the top, not the flat names: the API reference documents each module once, at
    its home), the aliases."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    doc = tree.body[0] if tree.body and isinstance(tree.body[0], ast.Expr) else None
    folders = sorted(f for f in {*FOLDERS, *HOMES.values()} if (root / "fold_jax" / f).is_dir())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "__all__"):
            names = sorted({*ast.literal_eval(node.value), *folders, "FLAT_NAMES"} - set(homes))
            body = "".join(f'    "{n}",\n' for n in names)
            lines[node.lineno - 1:node.end_lineno] = [f"__all__ = [\n{body}]\n"]
            break
    if "def _alias_flat_names" not in text:
        last_import = max(n.end_lineno for n in tree.body
                          if isinstance(n, ast.Import | ast.ImportFrom))
        lines.insert(last_import, ALIAS_FUNCTION)
    if doc is not None:
        lines[doc.lineno - 1:doc.end_lineno] = [facade_docstring(root) + "\n"]
    return "".join(lines)


def folder_init(root: Path, folder: str) -> str:
    """The light ``__init__.py`` of a layer folder: a docstring naming its modules."""
    floor, what, _ = FOLDERS[folder]
    stems = sorted(p.stem for p in (root / "fold_jax" / folder).glob("*.py")
                   if p.stem != "__init__")
    below = sorted((f for f, fl in LAYERS.items() if fl < floor), key=LAYERS.get)
    body = textwrap.fill(f"{what[0].upper()}{what[1:]}.", LINE_LIMIT - 4)
    mods = textwrap.fill("Modules: " + ", ".join(stems) + f". Floor {floor}: imports only "
                         + ", ".join(below) + " and itself (tests/test_layout.py).",
                         LINE_LIMIT - 4)
    return f'"""{body}\n\n{mods}\n"""\n'


# ------------------------------------------------------------------------------ running

def tracked_text_files(root: Path) -> list[str]:
    """Tracked files the rewrite reads (``TEXT_SUFFIXES``, but ``SKIP_FILES``)."""
    files = git(root, "ls-files", "-z").split("\0")
    return [f for f in files if f.endswith(TEXT_SUFFIXES) and not SKIP_FILES.match(f)
            and (root / f).is_file()]


def sort_imports(root: Path, files: list[str]) -> None:
    """ruff's isort fix (``--select I``) on ``files``; raises when ruff is missing."""
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(exe).exists() and not shutil.which(exe):
        raise LayoutError("relayout: ruff not found (pip install ruff): the rewritten "
                          f"imports of {len(files)} files are unsorted")
    subprocess.run([exe, "check", "--quiet", "--select", "I", "--fix", "--exit-zero", *files],
                   cwd=root, check=True)


def run(root: Path, dry_run: bool = False, allow_dirty: bool = False) -> int:
    """Plan, move, rewrite; print what it did. Returns the number of files changed."""
    if not allow_dirty and not dry_run and git(root, "status", "--porcelain").strip():
        raise LayoutError("relayout: the work tree has uncommitted changes (commit them, or "
                          "--allow-dirty)")
    moves = plan(root)
    homes = homes_in_tree(root, moves)
    for stem, folder in sorted(moves.items(), key=lambda kv: (kv[1], kv[0])):
        parent = max((s for s in HOMES if stem.startswith(s + "_")), key=len, default="")
        rule = "" if stem in HOMES else f"  (prefix rule: goes with {parent})"
        print(f"move fold_jax/{stem}.py -> fold_jax/{folder}/{stem}.py{rule}")
    if not moves:
        print("relayout: no flat module to move")
    if dry_run:
        return len(moves)
    for folder in sorted(set(moves.values())):
        (root / "fold_jax" / folder).mkdir(exist_ok=True)
    for stem, folder in sorted(moves.items()):
        git(root, "mv", f"fold_jax/{stem}.py", f"fold_jax/{folder}/{stem}.py")
    changed, before = [], {}
    for folder in FOLDERS:
        if (root / "fold_jax" / folder).is_dir():
            init = root / "fold_jax" / folder / "__init__.py"
            new = folder_init(root, folder)
            if not init.exists() or init.read_text(encoding="utf-8") != new:
                init.write_text(new, encoding="utf-8")
                rel = init.relative_to(root).as_posix()
                git(root, "add", rel)
                changed.append(rel)
                before[rel] = set()
    for rel in tracked_text_files(root):
        path = root / rel
        old = path.read_text(encoding="utf-8")
        new = rewrite_file(rel, old, homes)
        if rel == "fold_jax/__init__.py":
            new = rewrite_facade(root, new, homes)
        if new != old:
            path.write_text(new, encoding="utf-8")
            changed.append(rel)
            before[rel] = set(old.splitlines())
    py = [f for f in changed if f.endswith(".py")]
    if py:
        sort_imports(root, py)
    for rel in changed:
        text = (root / rel).read_text(encoding="utf-8")
        if rel.endswith(".py"):
            compile(text, rel, "exec")  # a rewrite that breaks syntax stops here
        long = [i for i, line in enumerate(text.splitlines(), 1)
                if len(line) > LINE_LIMIT and line not in before[rel] and rel.endswith(".py")]
        print(f"rewrote {rel}" + (f"  (new lines over {LINE_LIMIT}: {long})" if long else ""))
    kept = {}
    for rel in tracked_text_files(root):
        if rel.endswith(".py"):
            text = (root / rel).read_text(encoding="utf-8")
            n = sum(rewrite_names(text[a:b], homes) != text[a:b] for a, b in code_strings(text))
            kept.update({rel: n} if n else {})
    if kept:
        print(f"kept {sum(kept.values())} string literals naming old modules as they are (data: "
              "messages, labels, names looked up through the aliases): "
              + ", ".join(f"{rel} ({n})" for rel, n in kept.items()))
    readme = root / "README.md"
    if readme.exists() and rewrite_names(readme.read_text(encoding="utf-8"), homes) != \
            readme.read_text(encoding="utf-8"):
        print("README.md names moved modules by path; left for its owner")
    print(f"relayout: {len(moves)} modules moved, {len(changed)} files written")
    return len(moves) + len(changed)


def main(argv: list[str] | None = None) -> int:
    """Command line entry; returns the exit status (2: stopped, nothing written)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--dry-run", action="store_true", help="print the moves only")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run on a work tree with uncommitted changes")
    args = parser.parse_args(argv)
    try:
        run(Path(args.root).resolve(), args.dry_run, args.allow_dirty)
    except LayoutError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
