"""Dataset loaders for quantloop's own lm-eval tasks (referenced by ``!function`` in the YAMLs).

lm-eval calls ``custom_dataset(**metadata, **dataset_kwargs)``. The runner passes
``quantloop_data_dir`` in the TaskManager metadata; generated JSONL files are written there once
and reused. Without it the data are generated in memory (still deterministic).
"""

from __future__ import annotations

from metrics.tasks.data import task_rows


def _dataset(name: str, kwargs: dict):
    import datasets

    rows = task_rows(
        name,
        data_dir=kwargs.get("quantloop_data_dir"),
        n=kwargs.get("n_items"),
        seed=kwargs.get("seed"),
    )
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_cloze(**kwargs):
    return _dataset("ql_wiki_cloze", kwargs)


def load_rolling(**kwargs):
    return _dataset("ql_wiki_rolling", kwargs)


def load_recall(**kwargs):
    return _dataset("ql_wiki_recall", kwargs)
