"""Deterministic, cached pretraining of character language models with Adam.

:func:`pretrain` trains a :class:`fold_jax.learn.nets.LanguageModel` on a corpus's
:class:`~fold_jax.learn.text.SequenceTask` through the one loop, :func:`fold_jax.learn.train.fit`,
with backprop + ``optax.adam`` (:func:`fold_jax.estimators.methods.gradient`), and stores the
params so that a second call with the same settings loads them instead of training.

The cache key is everything that decides the params: the corpus (the sha256 of its
text), the task's windowing (T, max_chars, blocks, fractions), the model (its flax
module's fields), the seed, steps, batch size, the optimizer settings and the JAX
version. An entry is ``<cache_dir>/pretrain/<key hash>/`` holding ``params.msgpack``
(``flax.serialization.to_bytes``) and ``manifest.json`` (the key, the params' sha256,
the history and the timing). On load, an entry whose manifest key differs from the
requested one is *stale* and one whose params fail their checksum or cannot be read
is *corrupt*: both are counted (:func:`cache_counts`), warned about (``CacheWarning``)
and rebuilt, never used.

``cache_dir`` defaults to ``$FOLD_JAX_CACHE`` or ``~/.cache/fold_jax``.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import optax
import pandas as pd
from flax import serialization
from jaxtyping import Array, PyTree

from fold_jax.checks import check_choice, check_int, check_positive
from fold_jax.estimators import methods
from fold_jax.learn import nets, text, train

__all__ = [
    "CacheWarning",
    "Pretrained",
    "batched_apply",
    "bits_per_char",
    "cache_counts",
    "default_cache_dir",
    "model",
    "pretrain",
]

FORMAT = 1  # bump when the stored layout changes
MODELS = ("gru", "transformer")
_COUNTS: collections.Counter[str] = collections.Counter()  # "hit", "miss", "stale", "corrupt"


class CacheWarning(UserWarning):
    """A cache entry was stale or corrupt and is being rebuilt."""


class Pretrained(NamedTuple):
    """What :func:`pretrain` returns.

    Attributes:
        net: the model (``net.apply(params, tokens)``).
        params: the pretrained params.
        task: the pretraining task (its val/test splits were never trained on).
        cache: "hit" (loaded), "miss" (no entry: trained), "stale" or "corrupt" (an
            entry was found unusable: trained and replaced).
        path: the cache entry's directory.
        key: the cache key (a dict of the settings).
        history: :func:`fold_jax.learn.train.fit`'s history of the training run.
        train_s: seconds of training (fit's clock: compilation and evaluation apart).
        compile_s: seconds fit spent compiling.
    """

    net: nets.LanguageModel
    params: PyTree
    task: text.SequenceTask
    cache: str
    path: Path
    key: dict[str, Any]
    history: pd.DataFrame
    train_s: float
    compile_s: float

    @property
    def steps_per_s(self) -> float:
        """Training steps per second of the (original) run."""
        steps = int(self.history["step"].iloc[-1])
        return steps / self.train_s if self.train_s > 0 else float("nan")


def default_cache_dir() -> Path:
    """The default cache root.

    Returns:
        ``$FOLD_JAX_CACHE`` when set (and not empty), else ``~/.cache/fold_jax``.
    """
    env = os.environ.get("FOLD_JAX_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fold_jax"


def cache_counts() -> dict[str, int]:
    """How often this process found each cache outcome.

    Returns:
        ``{"hit": n, "miss": n, "stale": n, "corrupt": n}``.
    """
    return {k: _COUNTS.get(k, 0) for k in ("hit", "miss", "stale", "corrupt")}


def model(name: str, vocab_size: int, **sizes: Any) -> nets.LanguageModel:
    """A language model by name: "gru" (:func:`fold_jax.learn.nets.gru_lm`) or "transformer"
    (:func:`fold_jax.learn.nets.transformer_lm`).

    Args:
        name: "gru" or "transformer".
        vocab_size: the vocabulary size.
        **sizes: passed on (e.g. ``preset="small"`` or ``hidden=256``).

    Returns:
        The :class:`fold_jax.learn.nets.LanguageModel`.
    """
    check_choice(name, "model", MODELS)
    make = nets.gru_lm if name == "gru" else nets.transformer_lm
    return make(vocab_size, **sizes)


def batched_apply(apply, batch: int = 256):
    """``apply`` run over windows in batches of ``batch`` (``jax.lax.map``): the same
    logits, with activation memory bounded by one batch when :func:`fold_jax.learn.train.fit`
    scores a whole split (pass it as fit's ``apply``; train with the plain apply).

    Args:
        apply: ``apply(params, tokens (B, T)) -> logits (B, T, vocab)``.
        batch: windows per batch.

    Returns:
        ``run(params, tokens (N, T)) -> logits (N, T, vocab)``.
    """
    batch = check_int(batch, "batch")

    def run(params: PyTree, x: Array) -> Array:
        return jax.lax.map(lambda xb: apply(params, xb[None])[0], x, batch_size=batch)

    return run


def _key(net: nets.LanguageModel, task_options: dict[str, Any], corpus: str, seed: int,
         steps: int, batch_size: int, learning_rate: float, b1: float, b2: float) -> dict:
    return {"format": FORMAT, "corpus": corpus,
            "corpus_sha256": text.corpus_sha256(corpus), "task": task_options,
            "model": repr(net.module), "max_len": net.max_len, "seed": seed, "steps": steps,
            "batch_size": batch_size,
            "optimizer": {"name": "adam", "learning_rate": learning_rate, "b1": b1, "b2": b2},
            "jax": jax.__version__}


def _hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _load(path: Path, key: dict[str, Any], template: PyTree) -> tuple[str, Any]:
    """("hit", (params, manifest)), ("miss", None), or ("stale" | "corrupt", why)."""
    manifest_file, params_file = path / "manifest.json", path / "params.msgpack"
    if not path.exists():
        return "miss", None
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError) as error:
        return "corrupt", f"manifest.json unreadable ({type(error).__name__}: {error})"
    if manifest.get("key") != key:
        return "stale", "its manifest was written for other settings"
    try:
        data = params_file.read_bytes()
    except OSError as error:
        return "corrupt", f"params.msgpack unreadable ({error})"
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.get("params_sha256"):
        return "corrupt", f"params.msgpack sha256 {digest[:12]}... != manifest's"
    try:
        params = serialization.from_bytes(template, data)
    except Exception as error:  # msgpack or structure errors: all mean unusable
        return "corrupt", f"params.msgpack does not decode ({type(error).__name__})"
    return "hit", (params, manifest)


def _store(path: Path, key: dict[str, Any], params: PyTree, result: train.TrainResult) -> None:
    """Write the entry atomically: a temporary directory renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = serialization.to_bytes(params)
    manifest = {"key": key, "params_sha256": hashlib.sha256(data).hexdigest(),
                "history": result.history.to_dict(orient="list"),
                "train_s": float(result.history["elapsed_s"].iloc[-1]),
                "compile_s": result.compile_s}
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
    (tmp / "params.msgpack").write_bytes(data)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def pretrain(
    net: nets.LanguageModel | str = "gru",
    corpus: str = "shakespeare",
    *,
    steps: int = 1500,
    batch_size: int = 32,
    T: int = 64,
    learning_rate: float = 3e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    seed: int = 0,
    max_chars: int | None = 1_000_000,
    cache_dir: str | os.PathLike | None = None,
    eval_batch: int = 256,
) -> Pretrained:
    """Pretrain ``net`` on ``corpus`` with Adam through :func:`fold_jax.learn.train.fit`, or
    load the cached result of the same settings.

    fit scores the whole training split at the first and last step (``eval_every =
    steps``), so the corpus is capped at ``max_chars`` characters (default 1M, the
    first ~15 plays: the size of the classic tiny-shakespeare); None uses it all
    (5M characters: a heavier evaluation).

    Args:
        net: a :class:`fold_jax.learn.nets.LanguageModel` over the shared vocabulary, or
            "gru" / "transformer" (the default sizes: ~9e4 / ~1.3e5 params).
        corpus: "shakespeare" or "milton".
        steps: Adam steps.
        batch_size: windows per step.
        T: window length (tokens).
        learning_rate, b1, b2: ``optax.adam``'s settings.
        seed: the init and minibatch seed (same seed, same params).
        max_chars: characters of the corpus used (None: all).
        cache_dir: the cache root (default :func:`default_cache_dir`).
        eval_batch: windows per batch when fit scores a split.

    Returns:
        A :class:`Pretrained`.

    Raises:
        ValueError: bad settings, or a net whose vocabulary is not the corpora's.

    Warns:
        CacheWarning: a stale or corrupt entry was found (it is rebuilt).
    """
    check_choice(corpus, "corpus", text.CORPORA)
    vocab = text.vocabulary()
    if isinstance(net, str):
        net = model(net, len(vocab))
    if not isinstance(net, nets.LanguageModel):
        raise TypeError(f"net must be a fold_jax.nets.LanguageModel or one of {list(MODELS)}, "
                        f"got {type(net).__name__}")
    if net.vocab_size != len(vocab):
        raise ValueError(f"net has vocab_size={net.vocab_size}; the corpora's shared "
                         f"vocabulary has {len(vocab)} tokens (fold_jax.text.vocabulary())")
    steps, batch_size = check_int(steps, "steps"), check_int(batch_size, "batch_size")
    eval_batch, seed = check_int(eval_batch, "eval_batch"), check_int(seed, "seed", 0)
    learning_rate = check_positive(learning_rate, "learning_rate")
    b1, b2 = check_positive(b1, "b1"), check_positive(b2, "b2")
    task_options = {"T": check_int(T, "T", 2), "max_chars": max_chars, "val_fraction": 0.05,
                    "test_fraction": 0.05, "blocks": 10}
    task = getattr(text, corpus)(**task_options)
    key = _key(net, task_options, corpus, seed, steps, batch_size, learning_rate, b1, b2)
    path = Path(cache_dir if cache_dir is not None else default_cache_dir())
    path = path / "pretrain" / _hash(key)[:24]
    template = jax.eval_shape(net.init, jax.random.key(seed))
    status, found = _load(path, key, template)
    _COUNTS[status] += 1
    if status == "hit":
        params, manifest = found
        return Pretrained(net, params, task, status, path, key,
                          pd.DataFrame(manifest["history"]), manifest["train_s"],
                          manifest["compile_s"])
    if status in ("stale", "corrupt"):
        warnings.warn(f"pretrain cache entry {path} is {status}: {found}; rebuilding it "
                      f"(cache_counts() counts these)", CacheWarning, stacklevel=2)
    params = net.init(jax.random.key(seed))
    method = methods.gradient(task.loss_fn(net.apply), optax.adam(learning_rate, b1, b2))
    result = train.fit(method, params, task, apply=batched_apply(net.apply, eval_batch),
                       steps=steps, batch_size=batch_size, eval_every=steps, seed=seed,
                       eval_split="val")
    params = result.state.params
    _store(path, key, params, result)
    return Pretrained(net, params, task, status, path, key, result.history,
                      float(result.history["elapsed_s"].iloc[-1]), result.compile_s)


def bits_per_char(pretrained: Pretrained, corpora: Sequence[str] = text.CORPORA,
                  split: str = "test") -> dict[str, float]:
    """Bits per character of the pretrained model on each corpus's ``split``.

    The pretraining corpus is scored on its own task (the same windows and cap, so the
    split was never trained on); every other corpus on its whole task.

    Args:
        pretrained: what :func:`pretrain` returned.
        corpora: corpus names.
        split: "val" or "test".

    Returns:
        ``{corpus: bits_per_char}``.
    """
    check_choice(split, "split", ("val", "test"))
    out = {}
    own = pretrained.key["corpus"]
    for name in corpora:
        check_choice(name, "corpus", text.CORPORA)
        task = pretrained.task if name == own else getattr(text, name)(
            T=pretrained.task.seq_len)
        text.check_same_vocabulary(pretrained.task, task)
        out[name] = task.evaluate(pretrained.net.apply, pretrained.params, split)["bits_per_char"]
    return out
