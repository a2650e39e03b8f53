"""fold_jax.estimators.methods: typed step info (NamedTuples that read like the dicts they replace)
and the no-import-circle property of the package."""

from __future__ import annotations

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fold_jax
from fold_jax import checks
from fold_jax.compress import binary
from fold_jax.estimators import methods, search, snes
from fold_jax.learn import train


def _loss(p, x):
    return jnp.mean((x @ p["w"]) ** 2) + jnp.sum(p["b"] ** 2)


PARAMS = {"w": jnp.linspace(-1.0, 1.0, 64).reshape(8, 8), "b": jnp.ones(8)}
X = jnp.asarray(np.random.default_rng(0).normal(size=(4, 8)), jnp.float32)


@pytest.mark.parametrize("build, cls, keys", [
    (lambda: methods.gradient(_loss, "sgd", 1e-2), methods.DescentInfo,
     ["loss", "evals", "skipped"]),
    (lambda: methods.zeroth_order(_loss, "sgd", 1e-3, num_directions=4, chunk_size=None),
     methods.DescentInfo, ["loss", "evals", "skipped", "valid_directions",
                           "dropped_directions"]),
    (lambda: methods.forward_gradient(_loss, "sgd", 1e-3), methods.DescentInfo,
     ["loss", "evals", "skipped", "valid_directions", "dropped_directions"]),
    (lambda: snes.snes(_loss, num_directions=4), snes.SNESInfo,
     ["loss", "evals", "skipped", "valid_directions", "dropped_directions", "sigma_mean"]),
    (lambda: search.gld(_loss), search.SearchInfo, ["loss", "evals", "accepted", "pending"]),
    (lambda: search.one_plus_one(_loss), search.SearchInfo,
     ["loss", "evals", "accepted", "pending", "sigma"]),
    (lambda: binary.flip_search(_loss), search.SearchInfo, ["loss", "evals", "accepted"]),
])
def test_step_info_is_typed_and_reads_like_the_old_dict(build, cls, keys):
    method = build()
    state = method.init(PARAMS)
    # traced only (jax.eval_shape): the structure is what is checked, nothing compiles
    info = jax.eval_shape(method.step, state, jax.random.key(0), X)[1]
    assert isinstance(info, cls)
    assert list(info.keys()) == keys  # None fields are absent, in field order
    for k in keys:
        assert k in info and info[k] is info.get(k)
        assert info[k] is getattr(info, k)
    assert "nope" not in info and info.get("nope", 7) == 7
    with pytest.raises(KeyError, match="nope"):
        info["nope"]
    assert [k for k, _ in info.items()] == keys
    assert info[0] is info.loss  # still a tuple
    # a pytree: train.kept_info reads it inside a traced step as it read the dicts
    kept = jax.eval_shape(lambda s, k: train.kept_info(method.step(s, k, X)[1]), state,
                          jax.random.key(0))
    assert set(kept) == {"loss", "evals"} | ({"skipped", "accepted"} & set(keys))


def test_descent_keeps_an_estimator_aux_entry_without_a_field_in_extra():
    def vg(params, key, x):
        value, grads = jax.value_and_grad(_loss)(params, x)
        return value, grads, {"valid_directions": jnp.int32(3), "norm": jnp.float32(2.0)}

    method = methods.descent(vg, methods.optimizer("sgd", 1e-3), evals_per_step=1)
    info = jax.eval_shape(method.step, method.init(PARAMS), jax.random.key(0), X)[1]
    assert info.valid_directions.dtype == jnp.int32 and info.dropped_directions is None
    assert list(info.extra) == ["norm"] and info["norm"] is info.extra["norm"]
    assert list(info.keys()) == ["loss", "evals", "skipped", "valid_directions", "norm"]


def test_all_finite_has_one_home():
    assert methods.all_finite is checks.all_finite  # still importable from methods
    assert bool(checks.all_finite({})) and bool(checks.all_finite({"a": jnp.ones(3)}))
    assert not bool(checks.all_finite({"a": jnp.ones(3), "b": jnp.array([1.0, jnp.inf])}))
    assert not bool(jax.jit(checks.all_finite)([jnp.zeros(2), jnp.array(jnp.nan)]))


def _imports(path: pathlib.Path) -> set[str]:
    """fold_jax modules ``path`` imports, at any depth of its code (lazy imports too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "fold_jax"):
            parts = node.module.split(".")
            out |= ({a.name for a in node.names} if len(parts) == 1 else {parts[1]})
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names
                    if a.name.startswith("fold_jax.")}
    return out


def test_the_package_has_no_import_circle():
    root = pathlib.Path(fold_jax.__file__).parent
    graph = {p.stem: _imports(p) - {p.stem} for p in root.glob("*.py") if p.stem != "__init__"}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, f"import circle: {' -> '.join([*path, nxt])}"
            if nxt in graph and nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_no_private_name_is_imported_across_modules():
    root = pathlib.Path(fold_jax.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        modules = set()  # names bound to fold_jax modules here (from fold_jax import zo)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fold_jax"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
                if node.module == "fold_jax":
                    modules |= {a.asname or a.name for a in node.names}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in modules and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                raise AssertionError(f"{path.name} reads {node.value.id}.{node.attr}")
