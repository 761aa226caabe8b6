"""One job: load model -> baseline (cached) -> quantize -> evaluate -> record.

A job never raises for a failure inside its work: it records the error in ``result.json``
(``status: failed``, ``errors``, ``error_count``) so a sweep goes on with the next job. A job whose
``result.json`` already holds an ``ok`` result for the same config hash is skipped (``force=true``
re-runs it).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
import subprocess
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from metrics.embedding import run_embedding
from runner.baseline import cached_artifact, get_baseline
from runner.config import Config
from runner.evaluate import eval_windows, evaluate_causal
from runner.io import write_json_atomic, write_text_atomic
from runner.models import load_model
from runner.monitor import ResourceMonitor
from runner.quantize import QuantReport, fp16_size_bytes
from runner.schema import SCHEMA_VERSION, validate_result
from runner.store import ResultStore
from runner.suites import run_suites, suite_baselines, suite_configs
from runner.tracking import WandbSink
from sweeps.idle import wait_for_idle
from sweeps.selection import evaluate_candidate

log = logging.getLogger(__name__)

# Settings that do not change a job's numbers (excluded from the config hash).
_UNHASHED = ("force", "tracking", "sweep_name", "paths", "runner")
_VERSIONED = ("quantloop", "torch", "numpy", "numba", "transformers", "gguf", "hydra-core", "wandb")


def config_hash(resolved: dict[str, Any]) -> str:
    kept = {k: v for k, v in resolved.items() if k not in _UNHASHED}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_hash() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def finished_result(job_dir: Path, chash: str) -> dict[str, Any] | None:
    """The job's previous result if it finished OK with the same config hash."""
    path = job_dir / "result.json"
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if old.get("config_hash") == chash and old.get("status") == "ok":
        return old
    return None


def degradation(metrics: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    """Relative change against the full-precision baseline, positive = worse.

    Perplexity: ``ppl / ppl_base - 1``. Top-1 agreement: the baseline agrees with itself 100%, so
    ``1 - top1 / 100``; embedding cosine similarity likewise ``1 - cos``. KL divergence is already
    a distance from the baseline (baseline = 0).
    """
    out = {}
    if "perplexity" in metrics and base.get("perplexity"):
        out["perplexity"] = metrics["perplexity"] / base["perplexity"] - 1.0
    if "top1_agreement" in metrics:
        out["top1_agreement"] = 1.0 - metrics["top1_agreement"] / 100.0
    for key in ("embedding_cosine_mean", "embedding_cosine_p5"):
        if key in metrics:  # the baseline's embeddings match themselves: cosine 1
            out[key] = 1.0 - metrics[key]
    return out


@dataclass
class JobOutcome:
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    report: QuantReport | None = None
    fp16_bytes: int | None = None
    errors: list[str] = field(default_factory=list)  # the job failed
    suite_errors: list[str] = field(default_factory=list)  # a suite failed; the job goes on


def _set_threads(requested: int) -> None:
    """torch/numba/BLAS threads: ``runner.threads``, or this job's share of the cores."""
    from runner.parallel import job_threads, limit_threads, parallel_jobs

    jobs = parallel_jobs()
    n = limit_threads(job_threads(requested, jobs))
    log.info("threads=%d (parallel jobs on this machine: %d)", n, jobs)


def _work(cfg: Config, out: JobOutcome, job_dir: Path) -> None:
    import torch

    _set_threads(cfg.runner.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    cache = Path(cfg.paths.cache).expanduser()
    loaded = load_model(cfg.model, cache)
    out.fp16_bytes = fp16_size_bytes(loaded.model)
    if loaded.kind == "encoder":
        emb_cfg, emb_base = encoder_baseline(loaded, cache)
        out.baseline = {"embedding_cosine_mean": 1.0}
        out.report = quantize_model(loaded, cfg, job_dir)
        out.metrics = run_embedding(loaded.model, loaded.tokenizer, emb_cfg, emb_base)
        return
    windows = eval_windows(loaded.tokenizer, cfg.eval)
    base = get_baseline(
        loaded.model, windows, loaded.content_hash, cache, batch_size=cfg.eval.batch_size
    )
    out.baseline = {"perplexity": base.metrics["perplexity"]}
    suites = suite_configs(cfg.eval.suites, cfg.eval.suite_options)
    if "tasks" in suites and suites["tasks"].data_dir is None:
        suites["tasks"].data_dir = str(cache / "task_data")
    suite_base = suite_baselines(loaded, suites, cache, out.suite_errors)
    out.report = quantize_model(loaded, cfg, job_dir)
    out.metrics = evaluate_causal(loaded.model, base, cfg.eval.batch_size)
    if suites:
        fp_model = functools.cache(lambda: load_model(cfg.model, cache).model)
        title = f"{cfg.model.name} {cfg.quant.name} ({cfg.method.name})"
        out.metrics.update(
            run_suites(loaded, suites, suite_base, fp_model, job_dir, title, out.suite_errors)
        )


def encoder_baseline(loaded, cache: Path):
    """Sentence embeddings of held-out text by the full-precision encoder (cached)."""
    from metrics.embedding import EmbeddingBaseline, EmbeddingConfig, baseline_embedding

    emb_cfg = EmbeddingConfig(kind="encoder")
    base = cached_artifact(
        cache,
        "embedding",
        [loaded.content_hash, repr(emb_cfg)],
        lambda: baseline_embedding(loaded.model, loaded.tokenizer, emb_cfg),
        lambda obj, path: obj.save(path),
        EmbeddingBaseline.load,
    )
    return emb_cfg, base


def quantize_model(loaded, cfg: Config, job_dir: Path) -> QuantReport:
    from runner import quantize as q

    if cfg.quant.kind == "none":
        return q.no_quantization(loaded.model)
    export = job_dir / "model.gguf" if cfg.export == "gguf" else None
    if cfg.method.name == "gptq":
        return q.apply_gptq(loaded, cfg.quant, cfg.method, export)
    if cfg.quant.kind == "int":
        return q.apply_to_linears(
            loaded.model, q.rtn_int_quantizer(q.int_spec(cfg.quant), mse=cfg.method.mse)
        )
    return q.apply_mixture(loaded, cfg.quant.ftype, export)


def _wait_for_idle(cfg: Config) -> None:
    r = cfg.runner
    wait = wait_for_idle(r.idle_max_load, poll_s=r.idle_poll_s, timeout_s=r.idle_timeout_s)
    if not wait.idle:
        log.warning(
            "system still busy after %.0f s (load/core %.2f > %.2f); starting anyway",
            wait.waited_s,
            wait.load,
            r.idle_max_load,
        )


def run_job(cfg: Config, resolved: dict[str, Any], job_dir: Path, sweep_id: str | None) -> dict:
    """Run (or skip) one job and return its result dict (also written to result.json)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    chash = config_hash(resolved)
    if not cfg.force and (old := finished_result(job_dir, chash)) is not None:
        log.info("skipping %s: result.json matches config hash %s", job_dir.name, chash)
        if cfg.tracking.store:  # an interrupt may have landed between result.json and the store
            ResultStore(Path(cfg.paths.store).expanduser()).add(old)
        return old
    write_text_atomic(job_dir / "config.json", json.dumps(resolved, indent=2, sort_keys=True))
    if cfg.runner.wait_for_idle and not cfg.force:
        _wait_for_idle(cfg)
    started = datetime.now(UTC)
    out = JobOutcome()
    with ResourceMonitor() as mon:
        try:
            _work(cfg, out, job_dir)
        except Exception as exc:  # recorded, not raised: the sweep goes on
            log.error("job failed: %s", exc)
            log.debug("%s", traceback.format_exc())
            out.errors.append(f"{type(exc).__name__}: {exc}")
    result = build_result(cfg, out, mon, started, chash, job_dir, sweep_id)
    validate_result(result)
    write_json_atomic(job_dir / "result.json", result)
    if out.report is not None:
        write_json_atomic(job_dir / "per_layer.json", out.report.rows())
        if out.report.plan_table:
            write_text_atomic(job_dir / "plan.md", out.report.plan_table)
    record(cfg, result, resolved, out)
    return result


def job_score(metrics: dict[str, float]) -> float | None:
    """Quality in [0, 1]: top-1 agreement for LMs, mean embedding cosine for encoders."""
    if "top1_agreement" in metrics:
        return metrics["top1_agreement"] / 100.0
    if "embedding_cosine_mean" in metrics:
        return min(1.0, max(0.0, metrics["embedding_cosine_mean"]))
    return None


def build_result(cfg, out: JobOutcome, mon, started, chash, job_dir, sweep_id) -> dict[str, Any]:
    ok = not out.errors
    rep = out.report
    metrics = out.metrics if ok else {}
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": uuid.uuid4().hex,
        "status": "ok" if ok else "failed",
        "model_name": cfg.model.name,
        "quant_format": cfg.quant.name,
        "method": cfg.method.name,
        "size_mb": rep.size_mb if rep else None,
        "bits_per_weight": rep.bits_per_weight if rep else None,
        "compression_ratio": (out.fp16_bytes / rep.total_bytes) if rep and out.fp16_bytes else None,
        "metrics": metrics,
        "baseline": out.baseline,
        "degradation": degradation(metrics, out.baseline),
        "duration_seconds": mon.seconds,
        "memory_peak_mb": mon.memory_peak_mb,
        "cpu_avg_percent": mon.cpu_avg_percent,
        "error_count": len(out.errors) + len(out.suite_errors),
        "errors": out.errors + out.suite_errors,
        "timestamp": started.isoformat(),
        "config_hash": chash,
        "seed": cfg.seed,
        "sweep_id": sweep_id,
        "job_dir": str(job_dir),
        "versions": package_versions(),
        "git_hash": git_hash(),
    }
    result["score"] = job_score(metrics)
    verdict = evaluate_candidate(result, cfg.selection, cfg.selection.parsed_size_target())
    result["passed_threshold"] = bool(ok and verdict["passed"])
    result["thresholds"] = {
        "primary_metric": cfg.selection.primary_metric,
        "max_degradation": cfg.selection.max_degradation,
        "size_target": cfg.selection.size_target,
        "guard": vars(cfg.selection.guard),
        "reasons": verdict["reasons"],
    }
    return result


def record(cfg: Config, result: dict[str, Any], resolved: dict[str, Any], out: JobOutcome) -> None:
    """Index the result in the local store and send it to W&B; failures here are logged."""
    if cfg.tracking.store:
        ResultStore(Path(cfg.paths.store).expanduser()).add(result)
    root = Path(result["job_dir"]).parent if result["sweep_id"] else Path(result["job_dir"])
    sink = WandbSink(cfg.tracking.mode, cfg.tracking.project, cfg.tracking.entity, root)
    try:
        layers = out.report.rows() if out.report else []
        plan = out.report.extra.get("plan", []) if out.report else []
        html = sorted(Path(result["job_dir"]).glob("*.html"))
        sink.log_job(result, resolved, layers, plan, html)
    except Exception as exc:  # W&B trouble must not lose a finished result
        log.warning("W&B logging failed: %s", exc)
