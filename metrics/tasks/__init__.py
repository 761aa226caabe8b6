"""lm-eval tasks on an in-memory model, offline, over quantloop's own task YAMLs.

``run_tasks(model, tokenizer, cfg, baseline)`` evaluates the (quantized) model through lm-eval's
``HFLM`` wrapper and returns ``{"task/<task>/<metric>": value}``. ``baseline_tasks`` evaluates the
full-precision model once; with it, ``run_tasks`` also reports ``task/<task>/fp_agreement``: the
fraction of documents where the model's answer equals the full-precision model's answer
(multiple-choice argmax or filtered generation).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metrics.tasks.data import BUILTIN_TASKS

CONFIG_DIR = Path(__file__).parent / "configs"


class TaskSuiteError(RuntimeError):
    """The task suite could not run (bad config, missing task, lm-eval failure)."""


@dataclass
class TaskSuiteConfig:
    tasks: list[str] = field(default_factory=lambda: list(BUILTIN_TASKS))
    include_paths: list[str] = field(default_factory=list)  # user task YAML directories
    include_lm_eval_tasks: bool = False  # also index lm-eval's bundled tasks (slow to index)
    data_dir: str | None = None  # where generated task data are cached (JSONL)
    batch_size: int = 8
    max_length: int | None = None
    limit: int | None = None  # at most this many documents per task
    num_fewshot: int | None = None
    seed: int = 1234

    def validate(self) -> None:
        if not self.tasks:
            raise ValueError("tasks: give at least one task name")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or null, got {self.limit}")
        for p in self.include_paths:
            if not Path(p).expanduser().is_dir():
                raise ValueError(f"include_paths: {p!r} is not a directory")


@dataclass
class TaskBaseline:
    """The full-precision model's task results: metrics and per-document answers."""

    metrics: dict[str, float]
    answers: dict[str, dict[str, Any]]  # task -> {doc_id: answer}
    tasks: list[str]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> TaskBaseline:
        return cls(**json.loads(Path(path).read_text()))


def _task_manager(cfg: TaskSuiteConfig):
    from lm_eval.tasks import TaskManager

    paths = [str(CONFIG_DIR)] + [str(Path(p).expanduser()) for p in cfg.include_paths]
    meta: dict[str, Any] = {"seed": cfg.seed}
    if cfg.data_dir:
        meta["quantloop_data_dir"] = str(Path(cfg.data_dir).expanduser())
    tm = TaskManager(include_path=paths, include_defaults=cfg.include_lm_eval_tasks, metadata=meta)
    known = set(tm.all_subtasks) | set(tm.all_groups) | set(tm.all_tags)
    unknown = [t for t in cfg.tasks if t not in known]
    if unknown:
        found = sorted(tm.all_subtasks)
        shown = ", ".join(found[:30]) + (f", ... ({len(found)} in all)" if len(found) > 30 else "")
        raise TaskSuiteError(f"unknown task(s) {unknown}; tasks found: {shown}")
    return tm


def _evaluate(model, tokenizer, cfg: TaskSuiteConfig) -> dict:
    cfg.validate()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    kwargs = {"pretrained": model, "tokenizer": tokenizer, "batch_size": cfg.batch_size}
    if cfg.max_length:
        kwargs["max_length"] = cfg.max_length
    lm = HFLM(**kwargs)
    out = simple_evaluate(
        model=lm,
        tasks=list(cfg.tasks),
        task_manager=_task_manager(cfg),
        num_fewshot=cfg.num_fewshot,
        limit=cfg.limit,
        log_samples=True,
        bootstrap_iters=0,
        random_seed=cfg.seed,
        numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
    )
    if not out or "results" not in out:
        raise TaskSuiteError("lm-eval returned no results")
    return out


def flatten_results(results: dict[str, dict]) -> dict[str, float]:
    """lm-eval's ``{task: {"metric,filter": v}}`` as ``{"task/<task>/<metric>": v}``.

    The filter name is dropped when it is ``none`` or the metric has one filter only; stderr
    entries become ``<metric>_stderr``; non-numeric entries are skipped.
    """
    flat: dict[str, float] = {}
    for task, vals in results.items():
        filters: dict[str, set[str]] = {}
        for key in vals:
            if "," in key:
                metric, filt = key.split(",", 1)
                filters.setdefault(metric.removesuffix("_stderr"), set()).add(filt)
        for key, value in vals.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            metric, filt = key.split(",", 1)
            base = metric.removesuffix("_stderr")
            name = metric if filt == "none" or len(filters[base]) == 1 else f"{metric}_{filt}"
            if math.isfinite(float(value)):
                flat[f"task/{task}/{name}"] = float(value)
    return flat


def _answer(sample: dict, output_type: str) -> Any:
    resps = sample.get("filtered_resps")
    if output_type == "multiple_choice":
        lls = [float(r[0]) if isinstance(r, list | tuple) else float(r) for r in resps]
        return max(range(len(lls)), key=lls.__getitem__)
    if output_type == "generate_until":
        text = resps[0] if isinstance(resps, list) else resps
        return " ".join(str(text).lower().split())
    return None  # log-likelihood tasks have no discrete answer


def _answers(out: dict) -> dict[str, dict[str, Any]]:
    answers: dict[str, dict[str, Any]] = {}
    for task, samples in (out.get("samples") or {}).items():
        otype = out["configs"].get(task, {}).get("output_type", "")
        per_doc = {}
        for s in samples:
            a = _answer(s, otype)
            if a is not None:
                per_doc[str(s["doc_id"])] = a
        if per_doc:
            answers[task] = per_doc
    return answers


def baseline_tasks(model, tokenizer, cfg: TaskSuiteConfig) -> TaskBaseline:
    """Evaluate the full-precision model once (metrics + per-document answers)."""
    out = _evaluate(model, tokenizer, cfg)
    return TaskBaseline(
        metrics=flatten_results(out["results"]), answers=_answers(out), tasks=list(cfg.tasks)
    )


def run_tasks(
    model, tokenizer, cfg: TaskSuiteConfig, baseline: TaskBaseline | None = None
) -> dict[str, float]:
    """Task metrics of ``model``; with a baseline also ``task/<task>/fp_agreement``."""
    out = _evaluate(model, tokenizer, cfg)
    metrics = flatten_results(out["results"])
    if baseline is not None:
        for task, ours in _answers(out).items():
            ref = baseline.answers.get(task)
            if not ref:
                continue
            common = [d for d in ours if d in ref]
            if common:
                agree = sum(ours[d] == ref[d] for d in common) / len(common)
                metrics[f"task/{task}/fp_agreement"] = agree
    return metrics
