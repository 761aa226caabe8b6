"""Rows of quantloop's built-in tasks: generated from Wikipedia once, cached as JSONL."""

from __future__ import annotations

from pathlib import Path

from metrics.tasks.generate import (
    DEFAULT_SEED,
    GENERATOR_VERSION,
    cloze_items,
    read_jsonl,
    recall_items,
    rolling_docs,
    write_jsonl,
)

_BUILDERS = {
    "ql_wiki_cloze": (cloze_items, 200, True),
    "ql_wiki_rolling": (rolling_docs, 24, False),
    "ql_wiki_recall": (recall_items, 100, True),
}
BUILTIN_TASKS = tuple(_BUILDERS)


def data_file(name: str, data_dir: str | Path, n: int, seed: int) -> Path:
    """Cache file of a generated task; the name encodes everything the content depends on."""
    return Path(data_dir) / f"{name}-g{GENERATOR_VERSION}-s{seed}-n{n}.jsonl"


def task_rows(
    name: str, data_dir: str | Path | None = None, n: int | None = None, seed: int | None = None
) -> list[dict]:
    """The documents of a built-in task, generated deterministically from the ``tasks`` split."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown built-in task {name!r}; valid: {', '.join(BUILTIN_TASKS)}")
    build, default_n, seeded = _BUILDERS[name]
    n = int(n) if n is not None else default_n
    seed = int(seed) if seed is not None else DEFAULT_SEED
    path = data_file(name, data_dir, n, seed) if data_dir else None
    if path is not None and path.exists():
        return read_jsonl(path)
    from metrics.text import wikipedia_split

    articles = wikipedia_split("tasks")
    rows = build(articles, n=n, seed=seed) if seeded else build(articles, n=n)
    if not rows:
        raise RuntimeError(f"task {name}: the text produced no documents")
    if path is not None:
        write_jsonl(path, rows)
    return rows
