"""Cached, deterministic pretraining: miss then hit, stale and corrupt entries rebuilt,
same seed same params, bits/char on both corpora."""

import hashlib
import json
import math
import shutil
import warnings

import jax
import numpy as np
import pytest
from flax import serialization

from fold_jax.learn import nets, pretrain, text

NET = nets.gru_lm(85, embed=4, hidden=8)
SETTINGS = {"steps": 3, "batch_size": 4, "T": 8, "max_chars": 4_000, "learning_rate": 1e-2}


def _run(cache_dir, **changes):
    return pretrain.pretrain(NET, "milton", cache_dir=cache_dir, **{**SETTINGS, **changes})


def _same(a, b):
    return serialization.to_bytes(a) == serialization.to_bytes(b)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("cache"))


def test_miss_then_hit_loads_the_same_params(first, tmp_path):
    assert first.cache == "miss" and (first.path / "params.msgpack").is_file()
    before = pretrain.cache_counts()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a hit warns about nothing
        again = _run(first.path.parent.parent)
    assert again.cache == "hit" and again.path == first.path
    assert _same(again.params, first.params)
    assert again.history.equals(first.history) and again.train_s == first.train_s
    assert pretrain.cache_counts()["hit"] == before["hit"] + 1
    assert list(first.history["step"]) == [0, SETTINGS["steps"]]


def test_same_seed_same_params_and_other_settings_other_entries(first, tmp_path):
    twin = _run(tmp_path)  # a fresh cache: trained again
    assert twin.cache == "miss" and _same(twin.params, first.params)
    assert twin.path.name == first.path.name  # the key hash is the settings'
    other = pretrain.pretrain(NET, "milton", cache_dir=tmp_path, **{**SETTINGS, "seed": 1})
    assert other.path != twin.path and not _same(other.params, first.params)


def _copy(first, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(first.path.parent.parent, root)
    return root, root / "pretrain" / first.path.name


@pytest.mark.parametrize("damage", ["stale", "flipped"])
def test_stale_or_corrupt_entries_are_counted_warned_and_rebuilt(first, tmp_path, damage):
    root, entry = _copy(first, tmp_path)
    if damage == "stale":
        manifest = json.loads((entry / "manifest.json").read_text())
        manifest["key"]["steps"] += 1  # written for other settings
        (entry / "manifest.json").write_text(json.dumps(manifest))
    else:
        data = bytearray((entry / "params.msgpack").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (entry / "params.msgpack").write_bytes(bytes(data))
    before = pretrain.cache_counts()[damage if damage == "stale" else "corrupt"]
    status = "stale" if damage == "stale" else "corrupt"
    with pytest.warns(pretrain.CacheWarning, match=f"is {status}"):
        rebuilt = _run(root)
    assert rebuilt.cache == status and pretrain.cache_counts()[status] == before + 1
    assert _same(rebuilt.params, first.params)  # rebuilt deterministically
    assert _run(root).cache == "hit"  # and replaced


@pytest.mark.parametrize("damage", ["truncated", "garbage", "manifest", "missing"])
def test_unreadable_entries_are_corrupt(first, tmp_path, damage):
    """Every way an entry can fail to read is "corrupt" (the rebuild path is the one
    tested above; here only the verdict, without training again)."""
    _, entry = _copy(first, tmp_path)
    params_file = entry / "params.msgpack"
    if damage == "truncated":
        params_file.write_bytes(params_file.read_bytes()[:10])
    elif damage == "garbage":  # a checksum that matches bytes that do not decode
        params_file.write_bytes(b"\x00not msgpack")
        manifest = json.loads((entry / "manifest.json").read_text())
        manifest["params_sha256"] = hashlib.sha256(b"\x00not msgpack").hexdigest()
        (entry / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "manifest":
        (entry / "manifest.json").write_text("{not json")
    else:
        params_file.unlink()
    template = jax.eval_shape(NET.init, jax.random.key(0))
    status, why = pretrain._load(entry, first.key, template)
    assert status == "corrupt" and why


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FOLD_JAX_CACHE", str(tmp_path))
    assert pretrain.default_cache_dir() == tmp_path
    monkeypatch.delenv("FOLD_JAX_CACHE")
    assert pretrain.default_cache_dir().parts[-2:] == (".cache", "fold_jax")


def test_bits_per_char_on_both_corpora(first):
    bpc = pretrain.bits_per_char(first, split="val")
    assert set(bpc) == set(text.CORPORA)
    own = first.task.evaluate(first.net.apply, first.params, "val")["bits_per_char"]
    assert bpc["milton"] == own
    # 3 steps from a random init: near uniform over 85 tokens, below log2(85) + 1
    assert all(0 < v < math.log2(85) + 1 for v in bpc.values())
    assert np.isclose(first.history["val_bits_per_char"].iloc[-1], own, rtol=1e-5)


def test_bad_settings_are_errors(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=50"):
        pretrain.pretrain(nets.gru_lm(50), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="corpus='hamlet'"):
        pretrain.pretrain(NET, "hamlet", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="model='lstm'"):
        pretrain.pretrain("lstm", cache_dir=tmp_path)
    with pytest.raises(TypeError, match="LanguageModel"):
        pretrain.pretrain(nets.mlp((4, 2)), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="T=1"):
        pretrain.pretrain(NET, T=1, cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written before the checks


def test_batched_apply_gives_the_same_logits():
    params = NET.init(jax.random.key(0))
    x = np.random.default_rng(1).integers(0, 85, (7, 5), dtype=np.int32)
    batched, whole = jax.jit(lambda p, x: (pretrain.batched_apply(NET.apply, 3)(p, x),
                                           NET.apply(p, x)))(params, x)
    # another batch shape may sum the float32 matmuls in another order: a few eps32
    np.testing.assert_allclose(batched, whole, rtol=1e-5, atol=1e-6)
