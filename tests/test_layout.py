"""The package's folders by layer (tools/relayout.py holds the one table): each folder
imports only from itself and lower floors, old flat names are aliases of the moved
modules, no flat library module is left at the top; and the script on a small tree."""

import ast
import importlib
import importlib.util
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fold_jax

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "fold_jax"
_spec = importlib.util.spec_from_file_location("relayout", ROOT / "tools" / "relayout.py")
relayout = importlib.util.module_from_spec(_spec)
sys.modules["relayout"] = relayout
_spec.loader.exec_module(relayout)

MOVED = sorted((p.stem, p.parent.name) for folder in relayout.FOLDERS
               for p in (PKG / folder).glob("*.py") if p.stem != "__init__")
MOVED += [(s, "bench") for s in relayout.TO_BENCH if (PKG / "bench" / f"{s}.py").exists()]


def _floor_of(relative: Path) -> str:
    """The layer a file under fold_jax/ belongs to: its folder, or its stem at the top."""
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imported(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """``(line, dotted target)`` of each fold_jax import in a module's syntax tree."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("fold_jax")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                parts = module.split(".")[:-node.level]
                base = ".".join([*parts, base] if base else parts)
            if base == "fold_jax":
                out += [(node.lineno, f"fold_jax.{a.name}") for a in node.names]
            elif base.startswith("fold_jax."):
                out.append((node.lineno, base))
    return out


def test_each_folder_imports_only_itself_and_lower_floors():
    layers = relayout.LAYERS
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel == Path("__init__.py"):
            continue  # the facade imports every layer
        src = _floor_of(rel)
        module = ".".join(("fold_jax", *rel.with_suffix("").parts))
        for line, target in _imported(ast.parse(path.read_text()), module):
            parts = target.split(".")
            if len(parts) < 2:
                bad.append(f"{rel}:{line}: imports the facade fold_jax itself")
                continue
            dst = parts[1]
            if dst not in layers:
                bad.append(f"{rel}:{line}: {target} is an old flat name or unknown; "
                           "import the module's folder")
            elif dst != src and not layers[dst] < layers[src]:
                bad.append(f"{rel}:{line}: {src} (floor {layers[src]}) imports {target} "
                           f"(floor {layers[dst]})")
    assert not bad, "\n".join(bad)


def test_no_flat_library_module_is_left_at_the_top():
    flat = {p.stem for p in PKG.glob("*.py")} - relayout.KEEP_AT_TOP
    assert not flat, f"run tools/relayout.py: flat modules {sorted(flat)}"
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= relayout.SUBPACKAGES
    assert set(relayout.FOLDERS) <= folders and set(relayout.LAYERS) >= folders


def test_layer_folders_are_light():
    # a folder's __init__ is a docstring only: importing one module does not import the rest
    for folder in relayout.FOLDERS:
        body = ast.parse((PKG / folder / "__init__.py").read_text()).body
        assert len(body) == 1 and isinstance(body[0].value, ast.Constant), folder


@pytest.mark.parametrize(("stem", "folder"), MOVED)
def test_old_names_are_aliases_of_the_new_modules(stem, folder, monkeypatch):
    new = importlib.import_module(f"fold_jax.{folder}.{stem}")
    assert importlib.import_module(f"fold_jax.{stem}") is new
    assert sys.modules[f"fold_jax.{stem}"] is new and getattr(fold_jax, stem) is new
    assert f"fold_jax.{stem}" in fold_jax.FLAT_NAMES and stem not in fold_jax.__all__
    assert folder in fold_jax.__all__  # each module is documented once, at its home
    public = [n for n in getattr(new, "__all__", ()) if callable(getattr(new, n))]
    if public:  # a pickle naming the old module loads the new module's object
        name = public[0]
        old_pickle = f"cfold_jax.{stem}\n{name}\n.".encode()
        assert pickle.loads(old_pickle) is getattr(new, name)
        monkeypatch.setattr(f"fold_jax.{stem}.{name}", "patched")
        assert getattr(new, name) == "patched"


def test_old_names_import_first_in_a_fresh_interpreter():
    # `import fold_jax.zo` as a process's first import: the facade registers the alias
    stem, folder = next((s, f) for s, f in MOVED if f == "estimators")
    code = (f"import fold_jax.{stem} as old, fold_jax.{folder}.{stem} as new\n"
            f"from fold_jax.{stem} import __name__ as name\n"
            "assert old is new and name == new.__name__, (old, new, name)\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# ------------------------------------------------------------------------------ the script

MINI = {
    "fold_jax/__init__.py": '"""Old docstring."""\n\nfrom fold_jax import checks, nets, zo, '
                            'zo_extra\n\n__version__ = "0"\n\n__all__ = ["checks", "nets", '
                            '"zo", "zo_extra"]\n',
    "fold_jax/checks.py": "def ok():\n    return True\n",
    "fold_jax/zo.py": "from fold_jax import checks\n\n\ndef grad():\n    return checks.ok()\n",
    "fold_jax/zo_extra.py": "from fold_jax.zo import grad\n\nEXTRA = grad\n",
    "fold_jax/nets.py": "from fold_jax import checks, zo as zo_lib  # noqa: F401\n",
    "fold_jax/heads.py": "def head():\n    from fold_jax import nets, zo\n\n"
                         "    return nets, zo, 'fold_jax.zo'\n",
    "tests/test_x.py": "def test_x():\n    from fold_jax import nets, zo\n\n"
                       "    assert nets and zo\n",
    "docs/x.md": "Calls `fold_jax.zo.grad` in `fold_jax/zo.py` (not fold_jax.zo_other).\n\n"
                 "```python\nfrom fold_jax import nets, zo\n```\n"
                 "`fold_jax.zo` here stays  <!-- relayout: keep -->\n",
}


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c",
                    "commit.gpgsign=false", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def mini(tmp_path):
    for rel, text in MINI.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "flat")
    return tmp_path


def test_the_script_moves_rewrites_and_is_idempotent(mini, capsys):
    from fold_jax.results import fingerprint as fp

    before = fp.fingerprint(fp.package_sources(mini))
    assert relayout.run(mini) > 0
    assert fp.changes(before, fp.fingerprint(fp.package_sources(mini))) == []  # not stale
    printed = capsys.readouterr().out
    assert ("move fold_jax/zo_extra.py -> fold_jax/estimators/zo_extra.py  (prefix rule: "
            "goes with zo)") in printed
    assert not (mini / "fold_jax" / "zo.py").exists()
    assert (mini / "fold_jax" / "learn" / "nets.py").read_text() == textwrap.dedent("""\
        from fold_jax import checks  # noqa: F401
        from fold_jax.estimators import zo as zo_lib  # noqa: F401
        """)
    assert "    from fold_jax.estimators import zo\n    from fold_jax.learn import nets\n" in (
        mini / "fold_jax" / "learn" / "heads.py").read_text()  # a lazy import, sorted
    assert "'fold_jax.zo'" in (mini / "fold_jax" / "learn" / "heads.py").read_text()  # data
    assert "from fold_jax.estimators.zo import grad" in (
        mini / "fold_jax" / "estimators" / "zo_extra.py").read_text()
    assert "    from fold_jax.estimators import zo\n    from fold_jax.learn import nets\n" in (
        mini / "tests" / "test_x.py").read_text()
    doc = (mini / "docs" / "x.md").read_text()
    assert "`fold_jax.estimators.zo.grad` in `fold_jax/estimators/zo.py`" in doc
    assert "(not fold_jax.zo_other)" in doc and "`fold_jax.zo` here stays" in doc
    assert "from fold_jax.estimators import zo\nfrom fold_jax.learn import nets\n" in doc
    # the mini package imports under the old and the new names (its own interpreter)
    code = ("import fold_jax.zo, fold_jax.zo_extra, fold_jax.estimators.zo as z\n"
            "from fold_jax.nets import zo_lib\n"
            "assert fold_jax.zo is z is zo_lib and fold_jax.zo_extra.EXTRA is z.grad\n"
            "assert 'estimators' in fold_jax.__all__ and 'zo' not in fold_jax.__all__\n"
            "assert 'fold_jax.zo' in fold_jax.FLAT_NAMES\n")
    subprocess.run([sys.executable, "-c", code], cwd=mini, check=True, timeout=60)
    _git(mini, "add", "-A")
    _git(mini, "commit", "-qm", "relayout")
    assert relayout.run(mini) == 0  # twice: a no-op
    assert "no flat module to move" in capsys.readouterr().out


def test_the_script_stops_on_an_unmapped_module_before_writing(mini, capsys):
    (mini / "fold_jax" / "mystery.py").write_text("x = 1\n")
    (mini / "fold_jax" / "newpkg").mkdir()
    (mini / "fold_jax" / "newpkg" / "__init__.py").write_text("")
    assert relayout.main([str(mini), "--allow-dirty"]) == 2
    err = capsys.readouterr().err
    assert "fold_jax/mystery.py: no folder for it" in err and "fold_jax/newpkg/" in err
    assert (mini / "fold_jax" / "zo.py").exists()  # nothing moved
    assert not (mini / "fold_jax" / "estimators").exists()


def test_the_script_refuses_a_dirty_tree_and_a_module_using_its_file(mini):
    (mini / "fold_jax" / "zo.py").write_text("DATA = __file__\n")
    with pytest.raises(relayout.LayoutError, match="uncommitted"):
        relayout.run(mini)
    with pytest.raises(relayout.LayoutError, match=r"zo\.py: uses __file__"):
        relayout.run(mini, allow_dirty=True)


def test_split_and_names_keep_what_did_not_move():
    homes = {"zo": "estimators", "nets": "learn"}
    assert relayout.split_from_import(["checks", "results"], homes, "", "") is None
    assert relayout.split_from_import(["zo as z", "checks"], homes, "    ", "  # c") == (
        "from fold_jax import checks  # c\n    from fold_jax.estimators import zo as z  # c")
    text = "fold_jax.bench.suites.nets fold_jax.results fold_jax.nets_lm fj.zo fold_jax.nets.x"
    assert relayout.rewrite_names(text, homes) == text.replace("fold_jax.nets.x",
                                                               "fold_jax.learn.nets.x")


def test_data_strings_keep_their_old_names_in_python():
    # a message or row label that changed would turn the measured rows stale
    homes = {"zo": "estimators"}
    text = ('"""Doc fold_jax.zo."""\nimport fold_jax.zo as z  # fold_jax.zo\n'
            'X = "fold_jax.zo"\nY = f"{z} fold_jax.zo"\n\n\ndef f():\n'
            '    """fold_jax/zo.py"""\n    return fold_jax.zo.x\n')
    assert relayout.rewrite_file("a.py", text, homes) == (
        '"""Doc fold_jax.estimators.zo."""\n'
        'import fold_jax.estimators.zo as z  # fold_jax.estimators.zo\n'
        'X = "fold_jax.zo"\nY = f"{z} fold_jax.zo"\n\n\ndef f():\n'
        '    """fold_jax/estimators/zo.py"""\n    return fold_jax.estimators.zo.x\n')
    assert relayout.rewrite_file("a.md", 'X = "fold_jax.zo"', homes) == (
        'X = "fold_jax.estimators.zo"')
