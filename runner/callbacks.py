"""Hydra callback: after every multirun, summarise the sweep and run selection."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.config import Config, to_config
from runner.io import write_json_atomic, write_text_atomic
from runner.tracking import WandbSink
from sweeps.selection import load_results, run_selection
from tracking.report import write_sweep_report

log = logging.getLogger("quantloop")

_COLUMNS = (
    ("job", lambda r: Path(r["job_dir"]).name),
    ("status", lambda r: r["status"]),
    ("size MB", lambda r: _f(r.get("size_mb"), ".2f")),
    ("bpw", lambda r: _f(r.get("bits_per_weight"), ".3f")),
    ("PPL", lambda r: _f(r["metrics"].get("perplexity"), ".4f")),
    ("KLD mean", lambda r: _f(r["metrics"].get("kld_mean"), ".5f")),
    ("KLD p99", lambda r: _f(r["metrics"].get("kld_p99"), ".5f")),
    ("top-1 %", lambda r: _f(r["metrics"].get("top1_agreement"), ".2f")),
    ("pass", lambda r: "yes" if r.get("passed_threshold") else "no"),
    ("time s", lambda r: _f(r.get("duration_seconds"), ".1f")),
)


def _f(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def summary_markdown(sweep_id: str, results: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(c for c, _ in _COLUMNS) + " |"
    rule = "|" + "---|" * len(_COLUMNS)
    rows = ["| " + " | ".join(fn(r) for _, fn in _COLUMNS) + " |" for r in results]
    return "\n".join([f"# Sweep {sweep_id}", "", head, rule, *rows, ""])


def summarize_sweep(sweep_dir: Path) -> dict[str, Any]:
    """Write summary.json and summary.md for every result.json under ``sweep_dir``."""
    results, skipped = load_results(sweep_dir)
    results.sort(key=lambda r: r.get("timestamp") or "")
    summary = {
        "sweep_id": sweep_dir.name,
        "n_jobs": len(results),
        "n_ok": sum(r["status"] == "ok" for r in results),
        "n_failed": sum(r["status"] != "ok" for r in results),
        "n_passed": sum(bool(r.get("passed_threshold")) for r in results),
        "unreadable": skipped,
        "jobs": results,
    }
    write_json_atomic(sweep_dir / "summary.json", summary)
    write_text_atomic(sweep_dir / "summary.md", summary_markdown(sweep_dir.name, results))
    return summary


def _without_hydra(config: DictConfig) -> dict[str, Any]:
    return {k: config._get_node(k) for k in config if k != "hydra"}


class SweepCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():
            return
        summary = summarize_sweep(sweep_dir)
        try:
            log.info("sweep report: %s", write_sweep_report(sweep_dir, summary["jobs"]))
        except Exception as exc:  # a report must never fail the sweep
            log.warning("sweep report not written: %s", exc)
        cfg = to_config(OmegaConf.merge(OmegaConf.structured(Config), _without_hydra(config)))
        sink = WandbSink(cfg.tracking.mode, cfg.tracking.project, cfg.tracking.entity, sweep_dir)
        decision = run_selection(sweep_dir, cfg.selection, tracker=sink)
        chosen = decision.get("chosen") or {}
        log.info(
            "sweep %s: %d jobs (%d ok, %d passed); chosen: %s",
            sweep_dir.name,
            summary["n_jobs"],
            summary["n_ok"],
            summary["n_passed"],
            chosen.get("quant_format", "none"),
        )
