"""The benchmark harness (fold_jax/bench, fold_jax/report) keeps the house rules of issue 34:
no import circle between its modules (the line limit of every module:
tests/test_structure.py), and the names a split
moved stay importable where they were, as the very objects of their new home."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

import fold_jax

ROOT = pathlib.Path(fold_jax.__file__).parent
HARNESS = ("bench", "report")


def _modules() -> dict[str, pathlib.Path]:
    """Dotted name -> file of every harness module (a package by its ``__init__``)."""
    out = {}
    for part in HARNESS:
        for path in (ROOT / part).rglob("*.py"):
            rel = path.relative_to(ROOT.parent).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def _harness_imports(path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """The harness modules ``path`` imports, at any depth of its code (lazy imports too):
    ``from a.b import c`` counts ``a.b.c`` when that is a module, else ``a.b``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out & set(modules)


def test_the_harness_has_no_import_circle():
    modules = _modules()
    graph = {name: _harness_imports(path, modules) - {name} for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, f"import circle: {' -> '.join([*path, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


# where each split module's public names went (old module: {new home: names})
MOVED = {
    "fold_jax.bench.hypotheses_work": {
        "fold_jax.bench.hypotheses_protocol": [
            "BACKPROP", "FORWARD_ONLY", "KeyedState", "Run", "Scaled", "family", "fit_rows",
            "keyed", "layer_scales", "row", "search_method", "select", "settings", "space",
            "tune", "zo"],
        "fold_jax.bench.hypotheses_recurrent": [
            "RNN_HIDDEN", "adding_task", "recurrent_accuracy_run", "recurrent_cost_rows",
            "recurrent_method"]},
    "fold_jax.report.hypotheses": {
        "fold_jax.report.hypotheses_verdicts": [
            "CLAIMS", "FLAT", "GROWS", "RSO_MARGIN", "SHORT", "WORKED_R2", "compare",
            "memory_verdict", "verdicts"]},
    "fold_jax.bench.run": {
        "fold_jax.bench.jobs": ["pending", "write_rows"],
        "fold_jax.bench.run_choice": ["RunChoiceError", "select_run"]},
    "fold_jax.bench.suites.bbob": {
        "fold_jax.bench.bbob_problems": [
            "COCO_DIR_DEFAULT", "COCO_DIR_ENV", "START_HIGH", "START_LOW",
            "TRIGGERS_PER_DECADE", "Problem", "Tracker", "bare_problem", "bbob_loss", "bound",
            "coco_dir", "f_opt", "new_slot", "new_tracker", "replay", "seed_of",
            "start_point"]},
    "fold_jax.report.races": {
        "fold_jax.report.races_stats": [
            "BASELINE", "MEASURES", "PROBLEM", "STATS", "display", "performance_profile",
            "problem_costs", "profile_ratios", "summary", "versus_adam"],
        "fold_jax.report.races_figures": [
            "FAINT", "FAMILIES", "STRONG", "best_of_library", "library_order",
            "library_styles"]},
    "fold_jax.bench.suites.kernels": {
        "fold_jax.bench.kernel_cases": ["SHAPES", "SIGMA", "Case", "openai_es_reference",
                                        "search_evals"]},
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_moved_names_stay_importable_where_they_were(old):
    module = importlib.import_module(old)
    for home, names in MOVED[old].items():
        new = importlib.import_module(home)
        for name in names:
            assert getattr(module, name) is getattr(new, name), f"{old}.{name}"
            assert name in getattr(module, "__all__", [name]), f"{old}.__all__ lacks {name}"
