"""Shared fixtures: small real tasks and nets, built once per session; a throwaway git
repository (the results' code-change and migration tests); compile counts.

The terminal summary counts XLA compiles and the seconds they took (on a CPU the
suite's time is mostly compiling). ``FOLD_JAX_TEST_XLA_CACHE=1`` gives the run its own
persistent compilation cache in a temporary directory (removed at the end; subprocesses
share it through the environment), so an identical program built by another test's
fresh closure is loaded instead of recompiled. It is off by default: measured on
test_train.py + test_determinism.py (2-core shared CPU) it loaded 12 of 577 programs
and saved about 1% of CPU time, within noise (train.fit already reuses its programs
through fold_jax.learn.programs); switch it on to re-measure the whole suite.

XLA's CPU backend compiles with its legacy fusion emitters (FAST_COMPILE_FLAG below) and
with most optimizations off (``jax_disable_most_optimizations``: backend
optimization level 0, no expensive LLVM passes) in every test but those marked
``optimized``. Three quarters of the suite's CPU time is compiling small programs that
then run for milliseconds; measured on the whole suite (2-core CPU, two workers) the
unoptimized compile cut it from 2,343 to 1,872 test-seconds, while the few tests that run
one program many times at d >= 1e4 (the non-finite sweeps, the SNES distribution check)
ran 2-6x slower: they carry ``@pytest.mark.optimized``. The numbers a test checks do not
depend on the level beyond float32 rounding (other fusion, other summation order), which
is what every tolerance here already allows for. Subprocesses inherit the setting through
the environment. ``FOLD_JAX_TEST_OPTIMIZE=1`` compiles every test fully optimized.
"""

import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import ClassVar, NamedTuple

# XLA's legacy CPU fusion emitters compile these small programs 2-3x faster than the new
# MLIR ones (test_train.py: 303 compiles, 48 s -> 16 s), with the same arithmetic up to
# float32 rounding. XLA aborts the process on a flag it does not know, so the flag is
# tried once in a subprocess (a jaxlib that dropped it runs the suite without it); the
# outcome reaches the xdist workers and the subprocesses tests start through XLA_FLAGS
# (test_parallel's two-host check keeps it and drops only a forced host device count).
FAST_COMPILE_FLAG = "--xla_cpu_use_fusion_emitters=false"
if os.environ.get("FOLD_JAX_TEST_FAST_COMPILE") is None:
    _probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"],
        env={**os.environ, "JAX_PLATFORMS": "cpu",
             "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAG}"},
        capture_output=True, check=False)
    os.environ["FOLD_JAX_TEST_FAST_COMPILE"] = "1" if _probe.returncode == 0 else "0"
    if _probe.returncode == 0:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAG}"

import jax  # noqa: E402 (after XLA_FLAGS is set: the CPU client reads it once)
import pytest  # noqa: E402

_XLA_CACHE = None
if os.environ.get("FOLD_JAX_TEST_XLA_CACHE", "0") == "1":
    _XLA_CACHE = tempfile.mkdtemp(prefix="fold_jax_test_xla_")
    _SETTINGS = {"jax_compilation_cache_dir": _XLA_CACHE,
                 "jax_persistent_cache_min_compile_time_secs": 0,
                 "jax_persistent_cache_min_entry_size_bytes": 0}
    for _name, _value in _SETTINGS.items():
        jax.config.update(_name, _value)
        os.environ[_name.upper()] = str(_value)  # subprocesses share the cache

_UNOPTIMIZED = os.environ.get("FOLD_JAX_TEST_OPTIMIZE", "0") != "1"
if _UNOPTIMIZED:
    jax.config.update("jax_disable_most_optimizations", True)
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # subprocesses too


@pytest.fixture(autouse=True)
def _xla_optimization_level(request):
    """Compile fully optimized inside tests marked ``optimized`` (see the module doc)."""
    if not (_UNOPTIMIZED and request.node.get_closest_marker("optimized")):
        yield
        return
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", True)


_COMPILES: collections.Counter = collections.Counter()  # event -> count, and seconds


def _on_duration(event, duration_secs, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES["compiles"] += 1
        _COMPILES["compile_s"] += duration_secs


def _on_event(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
        _COMPILES["cache_hits"] += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration)
jax.monitoring.register_event_listener(_on_event)


def pytest_sessionfinish(session):
    """An xdist worker hands its counts to the controller (see pytest_testnodedown)."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["xla_compiles"] = dict(_COMPILES)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown where xdist is absent
def pytest_testnodedown(node, error):
    """The controller adds each finished worker's counts to its own."""
    _COMPILES.update(getattr(node, "workeroutput", {}).get("xla_compiles", {}))


def pytest_terminal_summary(terminalreporter):
    where = _XLA_CACHE or "off; FOLD_JAX_TEST_XLA_CACHE=1 turns it on"
    terminalreporter.write_line(
        f"XLA in the test processes: {_COMPILES['compiles']} compiles "
        f"({_COMPILES['compile_s']:.1f} s), {_COMPILES['cache_hits']} loaded from the run's "
        f"compilation cache ({where})")


def pytest_unconfigure(config):
    if _XLA_CACHE is not None:
        shutil.rmtree(_XLA_CACHE, ignore_errors=True)

from fold_jax.estimators.perturb import LowRank  # noqa: E402
from fold_jax.learn import nets, tasks  # noqa: E402 (after the cache is configured)


@pytest.fixture(scope="session")
def digits():
    return tasks.get("digits")


@pytest.fixture(scope="session")
def digits_net():
    return nets.mlp((64, 128, 128, 10), "relu")


@pytest.fixture(scope="session")
def digits_params(digits_net):
    return digits_net.init(jax.random.key(0))


class GitRepo(NamedTuple):
    """A git repository for one test (committer t, no signing, no global config read)."""

    path: Path

    def git(self, *args: str) -> str:
        """``git args`` in the repository; its stdout, stripped (CalledProcessError on
        failure)."""
        out = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
                              "-c", "commit.gpgsign=false", *args], cwd=self.path, check=True,
                             capture_output=True, text=True)
        return out.stdout.strip()

    def commit(self, path: str, text: str, message: str | None = None) -> str:
        """Write ``text`` to ``path`` (relative; folders made), commit everything and return
        the new commit's hash."""
        file = self.path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-qm", message or path)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def git_repo(tmp_path) -> GitRepo:
    """An empty git repository at ``tmp_path / "repo"``."""
    repo = GitRepo(tmp_path / "repo")
    repo.path.mkdir()
    repo.git("init", "-q")
    return repo


class Recorder(LowRank):
    """A LowRank that logs each pick's answer and each read of ``a`` (which
    association a layer took, and whether it consumed the factors)."""

    __slots__ = ()
    picks: ClassVar[list[str]] = []  # shared logs, cleared by the recorder fixture
    a_reads: ClassVar[list[int]] = []

    def __getattribute__(self, name):
        if name == "a":
            Recorder.a_reads.append(1)
        return object.__getattribute__(self, name)

    def pick(self, x_shape):
        how = super().pick(x_shape)
        Recorder.picks.append(how)
        return how


jax.tree_util.register_pytree_node_class(Recorder)


@pytest.fixture
def recorder():
    Recorder.picks.clear()
    Recorder.a_reads.clear()
    yield Recorder
    Recorder.picks.clear()
    Recorder.a_reads.clear()
