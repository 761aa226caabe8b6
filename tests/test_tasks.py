"""lm-eval task suite: generated data from real Wikipedia text, offline run on a tiny Llama."""

from __future__ import annotations

import math

import pytest

from metrics.tasks import TaskSuiteConfig, TaskSuiteError, baseline_tasks, run_tasks
from metrics.tasks.data import task_rows
from metrics.tasks.generate import ROLES, paragraphs, role_paragraphs
from metrics.text import wikipedia_split


@pytest.fixture(scope="module")
def articles():
    return wikipedia_split("tasks")


def test_generation_is_deterministic_and_cached(tmp_path):
    a = task_rows("ql_wiki_cloze", n=50)
    b = task_rows("ql_wiki_cloze", data_dir=tmp_path, n=50)
    c = task_rows("ql_wiki_cloze", data_dir=tmp_path, n=50)  # read back from the file
    assert a == b == c and len(a) == 50
    assert len(list(tmp_path.glob("ql_wiki_cloze-*.jsonl"))) == 1


def test_cloze_answer_restores_the_original_text(articles):
    text = {a.title: " ".join(" ".join(p.split()) for p in paragraphs(a.text)) for a in articles}
    rows = task_rows("ql_wiki_cloze", n=60)
    assert len({r["article"] for r in rows}) >= 5  # several articles represented
    for r in rows:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4
        gold = r["context"] + r["choices"][r["label"]]
        assert gold in text[r["article"]]
        wrong = [c for i, c in enumerate(r["choices"]) if i != r["label"]]
        assert all(w.strip() in text[r["article"]] for w in wrong)  # same-article distractors


def test_recall_target_follows_the_prefix_in_the_passage():
    for r in task_rows("ql_wiki_recall", n=40):
        passage, prefix = r["context"].split('\n\nQuote from the passage: "')
        assert f"{prefix} {r['target']}" in passage
        assert len(r["target"].split()) == 4


def test_paragraph_roles_are_disjoint(articles):
    seen = {}
    for role in ROLES:
        for _title, paras in role_paragraphs(articles, role):
            for p in paras:
                assert seen.setdefault(p, role) == role


def test_tasks_text_is_disjoint_from_eval_text():
    eval_text = "\n".join(a.text for a in wikipedia_split("eval"))
    for r in task_rows("ql_wiki_rolling", n=10):
        assert r["text"][:200] not in eval_text


def test_bad_config_is_reported_early(tmp_path):
    with pytest.raises(ValueError, match="include_paths"):
        TaskSuiteConfig(include_paths=[str(tmp_path / "missing")]).validate()
    with pytest.raises(ValueError, match="unknown built-in task"):
        task_rows("ql_nope")


@pytest.fixture(scope="module")
def tiny(make_tiny_llama):
    return make_tiny_llama(max_position_embeddings=1024)


def test_lm_eval_offline_on_tiny_llama(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model, tok = tiny
    cfg = TaskSuiteConfig(limit=4, batch_size=4, data_dir=str(tmp_path))
    base = baseline_tasks(model, tok, cfg)
    expected = {
        "task/ql_wiki_cloze/acc",
        "task/ql_wiki_cloze/acc_norm",
        "task/ql_wiki_rolling/word_perplexity",
        "task/ql_wiki_rolling/byte_perplexity",
        "task/ql_wiki_rolling/bits_per_byte",
        "task/ql_wiki_recall/exact_match",
    }
    assert expected <= set(base.metrics)
    assert all(math.isfinite(v) for v in base.metrics.values())
    assert 0 <= base.metrics["task/ql_wiki_cloze/acc"] <= 1
    assert base.metrics["task/ql_wiki_rolling/byte_perplexity"] > 1  # random weights
    assert len(base.answers["ql_wiki_cloze"]) == 4
    # The same model against its own baseline agrees on every document.
    again = run_tasks(model, tok, cfg, base)
    assert again["task/ql_wiki_cloze/fp_agreement"] == 1.0
    assert again["task/ql_wiki_recall/fp_agreement"] == 1.0
    assert list(tmp_path.glob("*.jsonl"))  # generated data written to the cache dir
    with pytest.raises(TaskSuiteError, match="unknown task"):
        run_tasks(model, tok, TaskSuiteConfig(tasks=["ql_missing"], limit=1))
