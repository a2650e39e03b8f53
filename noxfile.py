"""nox sessions: tests, lint, bench (quick profile + report), report, docs (site/).

``nox -s bench`` writes a run's rows, report and figures under results/runs/<run_id>/
(``-- --promote`` makes it the reference that results/REPORT.md shows). Pass options
after ``--``: ``nox -s bench -- --profile full`` or ``-- --only races``; a
researcher's method: ``-- --imports mypkg.methods --methods mine,adam --tasks digits``
(docs/adding-a-method.md). It runs ``python -m fold_jax.bench``, which a ``pip install
'fold_jax[bench]'`` user runs without a checkout.
"""

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
DEV = nox.project.dependency_groups(PYPROJECT, "dev")
DOCS = nox.project.dependency_groups(PYPROJECT, "docs")


# Python's bytecode, written as each module is first imported: where the machine sets
# PYTHONDONTWRITEBYTECODE (as this project's machines do), every Python process would
# otherwise compile jax, flax, pandas... from source (`import fold_jax` took 13-16 s
# instead of 4, in each of the ~20 processes the tests start). Compiling at install
# instead (UV_COMPILE_BYTECODE) compiled all 9,600 installed files (25 s on 2 cores);
# written lazily, the ~2,100 modules the tests import cost ~11 s of CPU in the first
# processes. The .pyc files land in the session's venv and in gitignored __pycache__/.
BYTECODE = {"PYTHONDONTWRITEBYTECODE": ""}


def _install(session: nox.Session) -> None:
    # the harness's extra dependencies (cocoex, cma, pytest-benchmark) come with [bench].
    session.install("-e", ".[bench]", *DEV)


@nox.session
def tests(session: nox.Session) -> None:
    """The unit and property tests (CPU)."""
    _install(session)
    # the slowest tests are listed at the end, so a test that grows is seen in CI. Two
    # worker processes, a file each at a time: the suite's cost is mostly single-threaded
    # XLA compiles, so two workers use both cores of a 2-core CI machine. tests/conftest.py
    # compiles with XLA's legacy CPU emitters and most optimizations off; docs/testing.md
    # has the settings and the measured times. Pass -n 0 after -- to run serially.
    session.run("pytest", "-q", "-n", "2", "--dist", "loadfile", "--durations=15", "tests",
                *session.posargs, env=BYTECODE)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, tests and benchmarks."""
    session.install("ruff")
    session.run("ruff", "check", "fold_jax", "tests", "bench", "tools", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Quick profile by default: kernel micro-benchmarks, suites, then the report, through
    the packaged entry point ``python -m fold_jax.bench`` (what a pip user runs)."""
    _install(session)
    session.run("python", "-m", "fold_jax.bench", *session.posargs, env=BYTECODE)


@nox.session
def report(session: nox.Session) -> None:
    """Rebuild results/REPORT.md and figures from the existing CSVs."""
    _install(session)
    session.run("python", "-m", "fold_jax.report", *session.posargs, env=BYTECODE)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/: the pages under docs/ and the API
    reference from the docstrings (mkdocs + mkdocstrings, mkdocs.yml). --strict: a
    docstring mkdocstrings cannot parse or a broken link inside docs/ fails the build;
    links out of docs/ are checked by tests/test_docs.py and tests/test_readme.py."""
    session.install("-e", ".", *DOCS)
    session.run("mkdocs", "build", "--strict", *session.posargs)
