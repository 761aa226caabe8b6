"""Deterministic task data generated from real Wikipedia text.

The source is the ``tasks`` split of :mod:`metrics.text` (articles 1, 11, 21, ... of gensim's
packaged dump), which is disjoint from the ``eval`` split used for perplexity/KLD and from the
``calibration`` split. Inside that split, paragraphs are dealt out by their position in their
article so that no two suites share text:

* paragraph index % 4 == 0: ``ql_wiki_rolling`` (rolling log-likelihood documents)
* paragraph index % 4 == 1: ``ql_wiki_recall`` (generation, exact match)
* paragraph index % 4 == 2: ``ql_wiki_cloze`` (multiple-choice cloze)
* paragraph index % 4 == 3: held-out sentences for the embedding suite

Every choice is made by a ``random.Random`` seeded with a fixed seed plus the article title, so
the same gensim wheel always yields byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

GENERATOR_VERSION = 1
DEFAULT_SEED = 1234
ROLES = ("rolling", "recall", "cloze", "embedding")

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_WORD = re.compile(r"[A-Za-z]+")
# Function words and very generic words that make poor cloze targets.
STOPWORDS = frozenset(
    str.split(
        """
    about above after again against along also although among another any anyone anything
    around because been before being below between both could does doing during each either
    every first from further have having here however into itself just later less many might
    more most much must neither never often other others over perhaps rather same several
    should since some such than that their theirs them themselves then there these they
    thing things this those though through thus together toward towards under until upon used
    using very what when where whether which while whom whose will with within without would
    year years your yours known called became become include includes including within
    """
    )
)


def paragraphs(text: str) -> list[str]:
    """Non-empty paragraphs of an article (blank-line separated, whitespace collapsed)."""
    out = []
    for block in text.split("\n\n"):
        # Drop heading-like lines (short, no sentence-final punctuation) glued to a paragraph.
        lines = [
            ln
            for ln in block.split("\n")
            if ln.strip() and (ln.rstrip()[-1] in ".!?\"'" or len(ln.split()) >= 10)
        ]
        para = " ".join(" ".join(lines).split())
        if para:
            out.append(para)
    return out


def sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph (split after . ! ? followed by a capital or quote)."""
    return [s.strip() for s in _SENT_SPLIT.split(paragraph) if s.strip()]


def is_prose(sentence: str, min_words: int) -> bool:
    """A sentence of real prose: enough words, mostly alphabetic, no leftover markup."""
    words = sentence.split()
    if len(words) < min_words or len(words) > 60:
        return False
    if any(ch in sentence for ch in "|{}[]=<>"):
        return False
    alpha = sum(1 for w in words if _WORD.fullmatch(w.strip(".,;:()\"'")))
    return alpha >= 0.8 * len(words)


def role_paragraphs(articles: Sequence, role: str) -> list[tuple[str, list[str]]]:
    """(article title, paragraphs) for one role; see the module docstring for the split."""
    if role not in ROLES:
        raise ValueError(f"unknown paragraph role {role!r}; valid roles: {', '.join(ROLES)}")
    k = ROLES.index(role)
    out = []
    for art in articles:
        paras = [p for i, p in enumerate(paragraphs(art.text)) if i % len(ROLES) == k]
        if paras:
            out.append((art.title, paras))
    return out


def _rng(seed: int, *parts: str) -> random.Random:
    digest = hashlib.sha256("\x1f".join((str(seed), *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def _content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if w.islower() and len(w) >= 5 and w not in STOPWORDS]


def _round_robin(per_article: list[list[dict]], n: int) -> list[dict]:
    """Interleave items of several articles so a cap keeps every article represented."""
    out: list[dict] = []
    depth = 0
    while len(out) < n and any(depth < len(items) for items in per_article):
        for items in per_article:
            if depth < len(items) and len(out) < n:
                out.append(items[depth])
        depth += 1
    return out


def cloze_items(articles: Sequence, n: int = 200, seed: int = DEFAULT_SEED) -> list[dict]:
    """Multiple-choice cloze: the context ends just before a masked content word.

    Each item: ``context`` (previous sentence of the paragraph, if any, plus the sentence up to
    the masked word), ``choices`` (4 words with a leading space: the original word and three
    distractors drawn from the same article, similar in length and absent from the sentence),
    ``label`` (index of the original word).
    """
    per_article = []
    for title, paras in role_paragraphs(articles, "cloze"):
        rng = _rng(seed, "cloze", title)
        vocab = sorted(set(_content_words(" ".join(paras))))
        items = []
        for para in paras:
            sents = sentences(para)
            for si, sent in enumerate(sents):
                if not is_prose(sent, 8):
                    continue
                words = sent.split()
                cands = [
                    i
                    for i in range(4, len(words))
                    if _WORD.fullmatch(words[i])  # no punctuation attached
                    and words[i] in _content_words(words[i])
                    and sent.split().count(words[i]) == 1
                ]
                if not cands:
                    continue
                i = rng.choice(cands)
                target = words[i]
                in_sentence = set(_WORD.findall(sent.lower()))
                pool = [
                    w
                    for w in vocab
                    if w != target and w not in in_sentence and abs(len(w) - len(target)) <= 3
                ]
                if len(pool) < 3:
                    continue
                distractors = rng.sample(pool, 3)
                label = rng.randrange(4)
                choices = list(distractors)
                choices.insert(label, target)
                prev = sents[si - 1] + " " if si > 0 else ""
                items.append(
                    {
                        "id": f"cloze-{title}-{len(items)}",
                        "article": title,
                        "context": prev + " ".join(words[:i]),
                        "choices": [" " + c for c in choices],
                        "label": label,
                    }
                )
        rng.shuffle(items)
        per_article.append(items)
    return _round_robin(per_article, n)


def rolling_docs(articles: Sequence, n: int = 24, max_words: int = 220) -> list[dict]:
    """Rolling log-likelihood documents: whole paragraphs (at most ``max_words`` words)."""
    per_article = []
    for title, paras in role_paragraphs(articles, "rolling"):
        docs = []
        for para in paras:
            words = para.split()
            if len(words) < 40:
                continue
            text = " ".join(words[:max_words])
            docs.append({"id": f"rolling-{title}-{len(docs)}", "article": title, "text": text})
        per_article.append(docs)
    return _round_robin(per_article, n)


def recall_items(
    articles: Sequence, n: int = 100, seed: int = DEFAULT_SEED, n_target_words: int = 4
) -> list[dict]:
    """Generation from context: quote a sentence of a passage given its first words.

    ``context`` is a passage (the sentence with up to one neighbour on each side), a blank line,
    and ``Quote from the passage: "`` followed by the sentence's first words; ``target`` is the
    next ``n_target_words`` words exactly as they appear in the passage.
    """
    per_article = []
    for title, paras in role_paragraphs(articles, "recall"):
        rng = _rng(seed, "recall", title)
        items = []
        for para in paras:
            sents = sentences(para)
            for si, sent in enumerate(sents):
                if not is_prose(sent, n_target_words + 6):
                    continue
                words = sent.split()
                cut = rng.randint(3, len(words) - n_target_words)
                passage = " ".join(sents[max(0, si - 1) : si + 2])
                items.append(
                    {
                        "id": f"recall-{title}-{len(items)}",
                        "article": title,
                        "context": f'{passage}\n\nQuote from the passage: "{" ".join(words[:cut])}',
                        "target": " ".join(words[cut : cut + n_target_words]),
                    }
                )
        rng.shuffle(items)
        per_article.append(items)
    return _round_robin(per_article, n)


def heldout_sentences(articles: Sequence, n: int = 256, min_words: int = 6) -> list[str]:
    """Real sentences for the embedding suite (paragraph role ``embedding``), in dump order."""
    per_article = []
    for _title, paras in role_paragraphs(articles, "embedding"):
        per_article.append(
            [{"s": s} for p in paras for s in sentences(p) if is_prose(s, min_words)]
        )
    return [d["s"] for d in _round_robin(per_article, n)]


def write_jsonl(path: Path, rows: Iterable[dict]) -> Path:
    """Write rows atomically (temp file + rename), so concurrent jobs never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
