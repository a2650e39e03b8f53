"""Every public name in each fold_jax module's ``__all__`` is documented.

Functions need a docstring with ``Args:`` (when they take parameters) and ``Returns:``
(or ``Yields:``, unless annotated to return None); classes need a class docstring. Names re-exported
from another package, constants and NamedTuple fields are skipped.
"""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import fold_jax

MODULES = sorted(
    {"fold_jax"}
    | {m.name for m in pkgutil.walk_packages(fold_jax.__path__, "fold_jax.")}
    - {"fold_jax.report.__main__"}
)


def _public(module):
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name)
        if not callable(obj):
            continue  # constants
        owner = getattr(obj, "__module__", None) or ""
        if not owner.startswith("fold_jax"):
            continue  # re-exported from another package
        yield name, obj


def _problems(name, obj):
    doc = inspect.getdoc(obj)
    if inspect.isclass(obj):
        own = (obj.__dict__.get("__doc__") or "").strip()
        # NamedTuple and dataclass fill in "Name(field, ...)" when the class has none
        generated = own.startswith(f"{obj.__name__}(") and "\n" not in own
        return [] if own and not generated else [f"{name}: no class docstring"]
    if not doc:
        return [f"{name}: no docstring"]
    if not inspect.isfunction(obj):
        return []
    out = []
    sig = inspect.signature(obj)
    if sig.parameters and "Args:" not in doc:
        out.append(f"{name}: no Args:")
    ret = sig.return_annotation
    if ret not in (None, "None") and "Returns:" not in doc and "Yields:" not in doc:
        out.append(f"{name}: no Returns:")
    return out


@pytest.mark.parametrize("modname", MODULES)
def test_public_names_documented(modname):
    module = importlib.import_module(modname)
    problems = [p for name, obj in _public(module) for p in _problems(name, obj)]
    assert not problems, "\n".join(problems)


def test_every_module_but_report_is_a_package_attribute():
    # `import fold_jax as fj; fj.<module>` works for each (report needs matplotlib; bench,
    # the benchmark harness, is run as `python -m fold_jax.bench`)
    top = {m.name for m in pkgutil.iter_modules(fold_jax.__path__)} - {"report", "bench"}
    assert top <= set(fold_jax.__all__)
    assert all(hasattr(fold_jax, name) for name in top)


# ---- the Markdown pages under docs/: every relative link resolves, anchors included

DOCS = Path(__file__).resolve().parents[1] / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor mkdocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.*)$", text, flags=re.M)}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code is not a link
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_slug_matches_mkdocs():
    assert _slug("The essays' claims, tested") == "the-essays-claims-tested"
    assert _slug("Design changes from `DESIGN.md`") == "design-changes-from-designmd"


PAGES = sorted(DOCS.glob("*.md"))


def test_docs_pages_exist():
    assert {p.name for p in PAGES} >= {"index.md", "api.md", "decisions.md"}


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_docs_relative_links_resolve(page):
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{page.name}: " + "; ".join(broken)
