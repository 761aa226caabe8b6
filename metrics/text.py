"""Real text for evaluation, calibration and task generation.

The default corpus is the shortened English Wikipedia dump that the gensim wheel ships in
``gensim/test/test_data`` (100 real articles after dropping redirects and stubs, about 3 MB of
text). Articles are split into disjoint roles by their position in the dump, so evaluation text is
never seen during calibration:

* ``eval``:        articles 0, 10, 20, ...  (index % 10 == 0)
* ``tasks``:       articles 1, 11, 21, ...  (index % 10 == 1), used to generate task data
* ``calibration``: every other article

Users can point evaluation or calibration at their own UTF-8 text files instead.
"""

from __future__ import annotations

import bz2
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WIKI_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
SPLITS = ("eval", "tasks", "calibration")
_MIN_ARTICLE_CHARS = 2000


@dataclass(frozen=True)
class Article:
    title: str
    text: str


def _gensim_test_data() -> Path:
    try:
        import gensim
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the default corpus needs the 'gensim' package (pip install 'quantloop[models]'), "
            "or set the eval/calibration text files explicitly"
        ) from exc
    return Path(gensim.__file__).parent / "test" / "test_data"


_MARKUP = [
    (re.compile(r"'{2,}"), ""),  # ''italic'' and '''bold'''
    (re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M), r"\1"),  # == Heading ==
    (re.compile(r"^[*#:;]+\s*", re.M), ""),  # list bullets
    (re.compile(r"\(\s*[,;]?\s*\)"), ""),  # parentheses emptied by template removal
    (re.compile(r"[ \t]+"), " "),
    (re.compile(r" +([,.;:])"), r"\1"),
    (re.compile(r"\n\s*\n+"), "\n\n"),
]


def clean_wikitext(text: str) -> str:
    """Plain prose from gensim-filtered wikitext (markup residue removed, paragraphs kept)."""
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    return text.strip()


@functools.lru_cache(maxsize=1)
def wikipedia_articles() -> tuple[Article, ...]:
    """All usable articles of the packaged dump, in dump order."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    path = _gensim_test_data() / WIKI_DUMP
    if not path.exists():
        raise FileNotFoundError(f"gensim's Wikipedia test dump is missing: {path.name}")
    articles = []
    with bz2.open(path) as fh:
        for title, raw, _pageid in extract_pages(fh):
            text = filter_wiki(raw)
            if text.lstrip().upper().startswith("#REDIRECT") or len(text) < _MIN_ARTICLE_CHARS:
                continue
            articles.append(Article(title=title, text=clean_wikitext(text)))
    return tuple(articles)


def wikipedia_split(split: str) -> tuple[Article, ...]:
    """Articles of one role: ``eval``, ``tasks`` or ``calibration`` (disjoint)."""
    if split not in SPLITS:
        raise ValueError(f"unknown text split {split!r}; valid splits: {', '.join(SPLITS)}")
    arts = wikipedia_articles()
    if split == "eval":
        return tuple(a for i, a in enumerate(arts) if i % 10 == 0)
    if split == "tasks":
        return tuple(a for i, a in enumerate(arts) if i % 10 == 1)
    return tuple(a for i, a in enumerate(arts) if i % 10 >= 2)


def load_text(split: str, files: Sequence[str | Path] = ()) -> str:
    """The text of a split: the user's files if given, else the packaged Wikipedia split."""
    if files:
        parts = []
        for f in files:
            p = Path(f).expanduser()
            if not p.is_file():
                raise FileNotFoundError(f"text file not found: {p}")
            parts.append(p.read_text(encoding="utf-8"))
        return "\n\n".join(parts)
    return "\n\n".join(a.text for a in wikipedia_split(split))
