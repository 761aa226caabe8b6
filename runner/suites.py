"""Evaluation suites beyond perplexity/KLD: one registry, baselines cached, failures contained.

Each suite is a pure function pair in ``metrics/`` (baseline once with the full-precision model,
then a run per quantized model). The runner computes every baseline before quantizing, caches it
by (model weights, suite settings), and runs the suites after quantizing. A suite that fails
records its error; the other suites and the job's core metrics are kept.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.baseline import cached_artifact
from runner.config import ConfigError, choice_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Suite:
    config_cls: Callable[..., Any]
    baseline: Callable[..., Any]  # (fp_model, tokenizer, cfg) -> baseline object
    load: Callable[[Path], Any]
    run: Callable[..., dict[str, float]]  # (model, tokenizer, cfg, baseline, context) -> metrics
    needs_fp_model: bool = False


def _tasks() -> Suite:
    from metrics.tasks import TaskBaseline, TaskSuiteConfig, baseline_tasks, run_tasks

    return Suite(
        TaskSuiteConfig,
        baseline_tasks,
        TaskBaseline.load,
        lambda m, t, c, b, ctx: run_tasks(m, t, c, b),
    )


def _embedding() -> Suite:
    from metrics.embedding import (
        EmbeddingBaseline,
        EmbeddingConfig,
        baseline_embedding,
        run_embedding,
    )

    return Suite(
        EmbeddingConfig,
        baseline_embedding,
        EmbeddingBaseline.load,
        lambda m, t, c, b, ctx: run_embedding(m, t, c, b),
    )


def _emotional() -> Suite:
    from metrics.emotional import (
        EmotionalBaseline,
        EmotionalConfig,
        baseline_emotional,
        run_emotional,
    )

    return Suite(
        EmotionalConfig,
        baseline_emotional,
        EmotionalBaseline.load,
        lambda m, t, c, b, ctx: run_emotional(m, t, c, b, ctx["fp_model"](), out_dir=ctx["dir"]),
        needs_fp_model=True,
    )


def _smoothness() -> Suite:
    from metrics.smoothness import (
        SmoothnessBaseline,
        SmoothnessConfig,
        baseline_smoothness,
        run_smoothness,
    )

    def run(m, t, c, b, ctx):
        fp = ctx["fp_model"]() if c.statistic == "weight_error" else None
        return run_smoothness(m, t, c, b, fp, out_dir=ctx["dir"], title=ctx["title"])

    return Suite(SmoothnessConfig, baseline_smoothness, SmoothnessBaseline.load, run)


REGISTRY: dict[str, Callable[[], Suite]] = {
    "tasks": _tasks,
    "embedding": _embedding,
    "emotional": _emotional,
    "smoothness": _smoothness,
}


def suite_configs(names: list[str], options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each named suite's config dataclass from ``eval.suite_options``; errors name the field."""
    unknown = [n for n in [*names, *options] if n not in REGISTRY]
    if unknown:
        raise choice_error("eval.suites", unknown[0], list(REGISTRY))
    out = {}
    for name in names:
        cls = REGISTRY[name]().config_cls
        opts = dict(options.get(name, {}))
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in opts:
            if key not in valid:
                raise choice_error(f"eval.suite_options.{name}.{key}", key, valid)
        cfg = cls(**opts)
        try:
            cfg.validate()
        except ValueError as exc:
            raise ConfigError(f"eval.suite_options.{name}: {exc}") from None
        out[name] = cfg
    return out


def suite_baselines(loaded, configs: dict[str, Any], cache: Path, errors: list[str]) -> dict:
    """Baselines of every suite with the (still full-precision) model, cached on disk."""
    out = {}
    for name, cfg in configs.items():
        suite = REGISTRY[name]()
        try:
            out[name] = cached_artifact(
                cache,
                f"suite-{name}",
                [loaded.content_hash, repr(cfg)],
                lambda s=suite, c=cfg: s.baseline(loaded.model, loaded.tokenizer, c),
                lambda obj, path: obj.save(path),
                suite.load,
            )
        except Exception as exc:
            log.error("suite %s: baseline failed: %s", name, exc)
            errors.append(f"suite {name} (baseline): {type(exc).__name__}: {exc}")
    return out


def run_suites(
    loaded,
    configs: dict[str, Any],
    baselines: dict[str, Any],
    fp_model: Callable[[], Any],
    job_dir: Path,
    title: str,
    errors: list[str],
) -> dict[str, float]:
    """Metrics of every suite whose baseline exists; failures go to ``errors``."""
    metrics: dict[str, float] = {}
    ctx = {"fp_model": fp_model, "dir": job_dir, "title": title}
    for name, cfg in configs.items():
        if name not in baselines:
            continue
        try:
            values = REGISTRY[name]().run(loaded.model, loaded.tokenizer, cfg, baselines[name], ctx)
            metrics.update({k: float(v) for k, v in values.items()})
        except Exception as exc:
            log.error("suite %s failed: %s", name, exc)
            errors.append(f"suite {name}: {type(exc).__name__}: {exc}")
    return metrics
