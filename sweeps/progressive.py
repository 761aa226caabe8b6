"""The progressive Pass-1 loop: walk a ladder of quant levels, stop when a level meets the targets.

Launcher-agnostic and Hydra-free: :func:`run_ladder` receives a ``launch(overrides, index)``
callable that runs one job and returns a :class:`JobOutcome`. The Hydra sweeper plugin
(``hydra_plugins/quantloop_progressive``) supplies one built on ``Launcher.launch``.

Quality is not assumed to fall monotonically along the ladder: the loop judges every level on
its own with :func:`sweeps.selection.evaluate_candidate`, and the level it reports is always one
that met every target.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sweeps.selection import STRATEGY_FUNCS, evaluate_candidate, json_safe
from sweeps.selection_config import SelectionConfig, SelectionConfigError, did_you_mean

log = logging.getLogger(__name__)

DEFAULT_LADDER = ("q8_0", "q6_K", "q5_K_M", "q4_K_M", "q3_K_L", "q2_K")
STOP_MODES = ("targets_met", "quality_fails")
SUMMARY_PREFIX = "pass1_summary_"


@dataclass
class JobOutcome:
    """What one launched job left behind: its directory, its result.json dict, or an error."""

    job_dir: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class LadderPlan:
    """The levels to try, in order, and when to stop."""

    key: str = "quant"
    levels: Sequence[str] = DEFAULT_LADDER
    fixed_overrides: Sequence[str] = ()
    max_iterations: int | None = None
    stop_when: str = "targets_met"
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> LadderPlan:
        if not self.levels:
            raise SelectionConfigError("hydra.sweeper.ladder must list at least one level")
        if len(set(self.levels)) != len(self.levels):
            raise SelectionConfigError(f"hydra.sweeper.ladder has duplicates: {list(self.levels)}")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise SelectionConfigError(
                f"hydra.sweeper.max_iterations={self.max_iterations} must be >= 1 (or null)"
            )
        if self.stop_when not in STOP_MODES:
            raise SelectionConfigError(
                f"hydra.sweeper.stop_when='{self.stop_when}' is unknown"
                f"{did_you_mean(self.stop_when, STOP_MODES)}; valid: {', '.join(STOP_MODES)}"
            )
        return self

    def planned(self) -> list[str]:
        levels = list(self.levels)
        return levels if self.max_iterations is None else levels[: self.max_iterations]


Launch = Callable[[list[str], int], JobOutcome]


def run_ladder(plan: LadderPlan, cfg: SelectionConfig, launch: Launch) -> dict[str, Any]:
    """Run the ladder and return the Pass-1 summary (see :func:`write_summary`).

    ``targets_met``: stop at the first level that meets every target (seed behaviour: with a
    size target this is the least-compressed level that fits). ``quality_fails``: keep going
    down while levels pass and stop at the first failure after a pass; the strategy of
    ``cfg`` picks among the passing levels.
    """
    plan.validate()
    cfg.validate()
    target = cfg.parsed_size_target()
    if target is None and plan.stop_when == "targets_met":
        log.warning(
            "no selection.size_target: the loop stops at the first level that keeps the quality "
            "(set a size target, or hydra.sweeper.stop_when=quality_fails to keep descending)"
        )
    started, t0 = datetime.now(UTC), time.perf_counter()
    iterations: list[dict[str, Any]] = []
    stopped = "ladder exhausted"
    planned = plan.planned()
    for index, level in enumerate(planned):
        overrides = [*plan.fixed_overrides, f"{plan.key}={level}"]
        log.info("Pass-1 level %d/%d: %s", index + 1, len(planned), " ".join(overrides))
        outcome = launch(overrides, index)
        iteration = _iteration(index, level, overrides, outcome, cfg, target)
        iterations.append(iteration)
        log.info("Pass-1 %s: %s", level, _one_line(iteration))
        passed = iteration["passed"]
        if passed and plan.stop_when == "targets_met":
            stopped = f"level {level} meets every target"
            break
        if not passed and plan.stop_when == "quality_fails" and _any_passed(iterations[:-1]):
            stopped = f"level {level} fails after a passing level"
            break
    else:
        if plan.max_iterations is not None and len(planned) < len(plan.levels):
            stopped = f"max_iterations={plan.max_iterations} reached"
    return _summary(plan, cfg, target, iterations, stopped, started, time.perf_counter() - t0)


def _any_passed(iterations: Sequence[dict[str, Any]]) -> bool:
    return any(it["passed"] for it in iterations)


def _iteration(index, level, overrides, outcome: JobOutcome, cfg, target) -> dict[str, Any]:
    candidate = None
    error = outcome.error
    if outcome.result is not None:
        candidate = evaluate_candidate(outcome.result, cfg, target)
    elif error is None:
        error = f"job left no result.json in {outcome.job_dir}"
    return {
        "index": index,
        "level": level,
        "overrides": list(overrides),
        "job_dir": outcome.job_dir,
        "seconds": round(outcome.seconds, 3),
        "status": "ok" if candidate and candidate["status"] == "ok" else "failed",
        "error": error,
        "passed": bool(candidate and candidate["passed"]),
        "reasons": candidate["reasons"] if candidate else [f"job failed: {error}"],
        "candidate": candidate,
    }


def _one_line(it: dict[str, Any]) -> str:
    if it["passed"]:
        c = it["candidate"]
        return f"PASS ({_fmt(c['size_mb'])} MB, composite {_fmt(c['composite_score'])})"
    return "FAIL: " + "; ".join(it["reasons"])


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "?"


def _summary(plan, cfg, target, iterations, stopped, started, seconds) -> dict[str, Any]:
    passing = [it["candidate"] for it in iterations if it["passed"]]
    best, rule = (None, None)
    if passing:
        best, rule = STRATEGY_FUNCS[cfg.strategy](passing, cfg)
    else:
        usable = [
            it["candidate"]
            for it in iterations
            if it["candidate"] and not it["candidate"]["catastrophic"]
        ]
        if usable:
            best = max(usable, key=lambda c: c["composite_score"] or 0.0)
            rule = "target not achieved; best non-catastrophic level by composite score"
    best_level = next((it["level"] for it in iterations if best and it["candidate"] is best), None)
    achieved = bool(passing)
    tried = len(iterations)
    return {
        "schema_version": "1",
        "kind": "pass1_progressive",
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "ladder_key": plan.key,
        "ladder": list(plan.levels),
        "fixed_overrides": list(plan.fixed_overrides),
        "max_iterations": plan.max_iterations,
        "stop_when": plan.stop_when,
        "selection": asdict(cfg),
        "size_target": asdict(target) if target else None,
        "statistics": {
            "levels_planned": len(plan.planned()),
            "levels_tried": tried,
            "levels_passed": len(passing),
            "jobs_failed": sum(it["status"] == "failed" for it in iterations),
            "total_seconds": round(seconds, 3),
            "mean_seconds_per_level": round(seconds / tried, 3) if tried else None,
        },
        "stopped_because": stopped,
        "target_achieved": achieved,
        "message": f"target achieved at {best_level}" if achieved else "target not achieved",
        "best_level": best_level,
        "best_rule": rule,
        "best": best,
        "iterations": iterations,
    }


def write_summary(sweep_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``pass1_summary_<YYYYmmdd_HHMMSS>.json`` into ``sweep_dir``; return its path."""
    root = Path(sweep_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
    path = root / f"{SUMMARY_PREFIX}{stamp}.json"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{SUMMARY_PREFIX}{stamp}_{n}.json"
    summary["sweep_dir"] = str(root)
    path.write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    return path


def read_job_result(job_dir: str | Path | None) -> dict[str, Any] | None:
    """The job's ``result.json`` as a dict, or None when it is missing or unreadable."""
    if job_dir is None:
        return None
    path = Path(job_dir) / "result.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(data, dict):
        data.setdefault("job_dir", str(job_dir))
        return data
    return None
