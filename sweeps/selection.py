"""Selection: judge every job of a sweep against the targets, rank them, choose one.

Reads only ``result.json`` files (schema_version "1"), so it does not depend on runner internals.
``run_selection(sweep_dir, cfg)`` writes ``selection.json``, ``selection.md`` and ``pareto.png``
to the sweep directory and returns the decision dict. The same :func:`evaluate_candidate` is used
by the progressive Pass-1 loop to decide when to stop.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sweeps.pareto import Point, pareto_front, plot_pareto
from sweeps.selection_config import SelectionConfig, SizeTarget

log = logging.getLogger(__name__)

SELECTION_SCHEMA_VERSION = "1"
SELECTION_JSON = "selection.json"
SELECTION_MD = "selection.md"
PARETO_PNG = "pareto.png"


class DecisionTracker(Protocol):
    """What the W&B sink (runner/tracking.py) implements to record a decision."""

    def log_decision(
        self, sweep_dir: str | Path, decision: dict[str, Any], plot_path: str | Path | None
    ) -> None: ...


# --------------------------------------------------------------------------- reading results


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def load_results(sweep_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """All ``result.json`` under ``sweep_dir`` (job order), plus the files that were skipped.

    When two files carry the same job id (a re-run), the one with the later timestamp wins.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep directory {root} does not exist")
    by_id: dict[str, dict[str, Any]] = {}
    skipped: list[dict[str, str]] = []
    for path in sorted(root.glob("**/result.json"), key=_natural_key):
        rel = str(path.relative_to(root))
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            skipped.append({"path": rel, "reason": f"unreadable: {exc}"})
            continue
        if not isinstance(data, dict) or not data.get("id"):
            skipped.append({"path": rel, "reason": "not a job result (no 'id')"})
            continue
        data.setdefault("job_dir", str(path.parent))
        data["result_path"] = rel
        old = by_id.get(data["id"])
        if old is None or str(data.get("timestamp", "")) >= str(old.get("timestamp", "")):
            by_id[data["id"]] = data
    return list(by_id.values()), skipped


# --------------------------------------------------------------------------- judging one job


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def metric_retention(result: Mapping[str, Any], name: str, cfg: SelectionConfig) -> float | None:
    """How much of the baseline's quality ``name`` keeps, in [0, 1] (None if unavailable).

    With a relative degradation d (positive = worse): 1/(1+d) for lower-is-better metrics
    (= baseline/value) and 1-d for higher-is-better ones (= value/baseline). Without one:
    exp(-KL) for KL metrics, top1_agreement/100, and the job's own ``score``.
    """
    if name == "score":
        score = result.get("score")
        return float(score) if _finite(score) else None
    degradation = (result.get("degradation") or {}).get(name)
    value = (result.get("metrics") or {}).get(name)
    if _finite(degradation):
        kept = (
            1.0 / (1.0 + max(degradation, 0.0))
            if cfg.direction(name) == "lower"
            else (1.0 - degradation)
        )
        return min(max(kept, 0.0), 1.0)
    if not _finite(value):
        return None
    if name.startswith("kld"):
        return math.exp(-max(value, 0.0))
    if name == "top1_agreement":
        return min(max(value / 100.0, 0.0), 1.0)
    return None


def composite_score(result: Mapping[str, Any], cfg: SelectionConfig) -> tuple[float | None, list]:
    """Weighted mean of the retentions of ``cfg.weights`` metrics; also the missing ones.

    Falls back to the job's ``score`` when none of the weighted metrics is available.
    """
    total = weight_sum = 0.0
    missing = []
    for name, weight in cfg.effective_weights().items():
        kept = metric_retention(result, name, cfg)
        if kept is None:
            missing.append(name)
            continue
        total += weight * kept
        weight_sum += weight
    if weight_sum > 0:
        return total / weight_sum, missing
    return metric_retention(result, "score", cfg), missing


def ppl_ratio(result: Mapping[str, Any]) -> float | None:
    """Perplexity / baseline perplexity, from ``degradation`` or ``baseline`` when present."""
    degradation = (result.get("degradation") or {}).get("perplexity")
    if _finite(degradation):
        return 1.0 + degradation
    ppl = (result.get("metrics") or {}).get("perplexity")
    base = (result.get("baseline") or {}).get("perplexity")
    if _finite(ppl) and _finite(base) and base > 0:
        return ppl / base
    return None


def guard_reasons(result: Mapping[str, Any], cfg: SelectionConfig) -> list[str]:
    """Reasons the catastrophic guard rejects this job (empty list = not catastrophic)."""
    reasons = []
    if result.get("status") != "ok":
        errors = result.get("errors") or []
        first = f": {errors[0]}" if errors else ""
        reasons.append(f"job status is {result.get('status')!r}{first}")
    metrics = result.get("metrics") or {}
    for name, value in metrics.items():
        if isinstance(value, int | float) and not math.isfinite(value):
            reasons.append(f"{name} is not finite ({value})")
    guard = cfg.guard
    ratio = ppl_ratio(result)
    if guard.max_ppl_ratio is not None and ratio is not None and ratio > guard.max_ppl_ratio:
        reasons.append(f"perplexity ratio {ratio:.3g} > guard {guard.max_ppl_ratio:g}")
    kld = metrics.get("kld_mean")
    if guard.max_kld_mean is not None and _finite(kld) and kld > guard.max_kld_mean:
        reasons.append(f"kld_mean {kld:.4g} > guard {guard.max_kld_mean:g}")
    top1 = metrics.get("top1_agreement")
    floor = guard.min_top1_agreement
    if floor is not None and _finite(top1) and top1 < floor:
        reasons.append(f"top1_agreement {top1:.4g}% < guard {floor:g}%")
    return reasons


def _degradation_reason(result: Mapping[str, Any], name: str, cap: float) -> str | None:
    value = (result.get("degradation") or {}).get(name)
    if not _finite(value):
        return f"no degradation of {name} vs baseline in result (cap {cap:.1%})"
    if value > cap:
        return f"{name} degradation {value:+.2%} > max {cap:.2%}"
    return None


def target_reasons(
    result: Mapping[str, Any], cfg: SelectionConfig, target: SizeTarget | None
) -> list[str]:
    """Reasons this job misses the size target or a quality threshold."""
    reasons = []
    if target is not None:
        size = target.measure(result.get("size_mb"), result.get("bits_per_weight"))
        unit = "bits/weight" if target.unit == "bpw" else "MB"
        if not _finite(size):
            reasons.append(f"size in {unit} unknown (target {target.text})")
        elif size > target.value:
            reasons.append(f"size {size:.4g} {unit} > target {target.text}")
    caps = dict(cfg.max_degradations)
    if cfg.max_degradation is not None:
        caps[cfg.primary_metric] = cfg.max_degradation
    for name, cap in caps.items():
        reason = _degradation_reason(result, name, cap)
        if reason:
            reasons.append(reason)
    metrics = result.get("metrics") or {}
    for name, lo in cfg.metric_min.items():
        value = metrics.get(name)
        if not _finite(value) or value < lo:
            reasons.append(f"{name}={value} < min {lo:g}")
    for name, hi in cfg.metric_max.items():
        value = metrics.get(name)
        if not _finite(value) or value > hi:
            reasons.append(f"{name}={value} > max {hi:g}")
    return reasons


def evaluate_candidate(
    result: Mapping[str, Any], cfg: SelectionConfig, target: SizeTarget | None = None
) -> dict[str, Any]:
    """One job judged against the targets: pass/fail, reasons, composite score, efficiency."""
    guard = guard_reasons(result, cfg)
    reasons = target_reasons(result, cfg, target)
    composite, missing = composite_score(result, cfg)
    size_mb = result.get("size_mb")
    per_gb = composite / (size_mb / 1000.0) if _finite(composite) and _finite(size_mb) else None
    primary = (result.get("metrics") or {}).get(cfg.primary_metric)
    if primary is None and not guard:
        reasons.append(f"primary metric {cfg.primary_metric} missing from result")
    return {
        "id": str(result.get("id")),
        "job_dir": result.get("job_dir"),
        "model_name": result.get("model_name"),
        "quant_format": result.get("quant_format"),
        "method": result.get("method"),
        "status": result.get("status"),
        "size_mb": size_mb if _finite(size_mb) else None,
        "bits_per_weight": result.get("bits_per_weight"),
        "metrics": dict(result.get("metrics") or {}),
        "degradation": dict(result.get("degradation") or {}),
        "primary_value": primary,
        "job_score": result.get("score"),
        "composite_score": composite,
        "composite_missing": missing,
        "score_per_gb": per_gb,
        "catastrophic": bool(guard),
        "passed": not guard and not reasons,
        "reasons": [f"guard: {r}" for r in guard] + reasons,
        "on_pareto_front": False,
    }


# --------------------------------------------------------------------------- choosing


def _size_key(c: Mapping[str, Any]) -> float:
    size = c.get("size_mb")
    if _finite(size):
        return float(size)
    bpw = c.get("bits_per_weight")
    return float(bpw) if _finite(bpw) else math.inf


def _score(c: Mapping[str, Any], key: str = "composite_score") -> float:
    value = c.get(key)
    return float(value) if _finite(value) else -math.inf


def _smallest_passing(passing: Sequence[dict], cfg: SelectionConfig) -> tuple[dict, str]:
    smallest = min(_size_key(c) for c in passing)
    ties = [c for c in passing if _size_key(c) <= smallest * (1.0 + cfg.size_tie_tolerance)]
    chosen = max(ties, key=lambda c: (_score(c), -_size_key(c)))
    ties_text = (
        f"sizes within {cfg.size_tie_tolerance:.1%} are ties"
        if cfg.size_tie_tolerance > 0
        else "equal sizes are ties"
    )
    rule = f"smallest passing candidate; {ties_text}, broken by composite score"
    return chosen, rule


def _best_score(passing: Sequence[dict], cfg: SelectionConfig) -> tuple[dict, str]:
    chosen = max(passing, key=lambda c: (_score(c), -_size_key(c)))
    return chosen, "highest composite score among passing candidates; ties broken by size"


def _best_efficiency(passing: Sequence[dict], cfg: SelectionConfig) -> tuple[dict, str]:
    chosen = max(passing, key=lambda c: (_score(c, "score_per_gb"), _score(c)))
    return chosen, "highest composite score per GB among passing candidates"


STRATEGY_FUNCS: dict[str, Callable[[Sequence[dict], SelectionConfig], tuple[dict, str]]] = {
    "smallest_passing": _smallest_passing,
    "best_score": _best_score,
    "best_efficiency": _best_efficiency,
}


def _decide_group(candidates: list[dict], cfg: SelectionConfig) -> dict[str, Any]:
    """Pareto front + choice for the candidates of one model."""
    lower = cfg.direction(cfg.primary_metric) == "lower"
    points = [_point(c) for c in candidates if c["status"] == "ok"]
    front = pareto_front(points, lower_is_better=lower)
    front_ids = [p.id for p in front]
    for c in candidates:
        c["on_pareto_front"] = c["id"] in front_ids
    passing = [c for c in candidates if c["passed"]]
    usable = [c for c in candidates if not c["catastrophic"]]
    decision: dict[str, Any] = {
        "n_candidates": len(candidates),
        "n_passed": len(passing),
        "pareto_front": front_ids,
        "chosen_id": None,
        "fallback_id": None,
        "target_achieved": bool(passing),
    }
    if passing:
        chosen, rule = STRATEGY_FUNCS[cfg.strategy](passing, cfg)
        decision.update(chosen_id=chosen["id"], rule=rule, reason=_why(chosen, cfg))
    else:
        decision["rule"] = "target not achieved: no candidate passes every target"
        decision["reason"] = "no candidate chosen"
        if usable:
            closest = max(usable, key=lambda c: (_score(c), -_size_key(c)))
            decision["fallback_id"] = closest["id"]
            decision["reason"] = (
                f"no candidate chosen; best non-catastrophic by composite score: {closest['id']}"
            )
    return decision


def _point(c: Mapping[str, Any]) -> Point:
    size = c.get("size_mb")
    quality = c.get("primary_value")
    label = f"{c.get('quant_format')}/{c.get('method')}"
    return Point(
        id=c["id"],
        size=float(size) if _finite(size) else math.nan,
        quality=float(quality) if _finite(quality) else math.nan,
        label=label,
    )


def _why(c: Mapping[str, Any], cfg: SelectionConfig) -> str:
    parts = [f"{c['id']} ({c.get('quant_format')}, {c.get('method')})"]
    if _finite(c.get("size_mb")):
        parts.append(f"{c['size_mb']:.4g} MB")
    deg = c["degradation"].get(cfg.primary_metric)
    if _finite(deg):
        parts.append(f"{cfg.primary_metric} degradation {deg:+.2%}")
    if _finite(c.get("composite_score")):
        parts.append(f"composite {c['composite_score']:.4f}")
    return ", ".join(parts) + " meets every target"


def select(
    results: Sequence[Mapping[str, Any]], cfg: SelectionConfig | Mapping | None = None
) -> dict[str, Any]:
    """The decision for a set of job results (pure: no files). One choice per model."""
    cfg = SelectionConfig.from_mapping(cfg).validate()
    target = cfg.parsed_size_target()
    candidates = [evaluate_candidate(r, cfg, target) for r in results]
    models: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(str(c["model_name"]) for c in candidates):
        group = [c for c in candidates if str(c["model_name"]) == name]
        models[name] = _decide_group(group, cfg)
    by_id = {c["id"]: c for c in candidates}
    single = next(iter(models.values())) if len(models) == 1 else None
    chosen = by_id.get(single["chosen_id"]) if single and single["chosen_id"] else None
    return {
        "schema_version": SELECTION_SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": asdict(cfg),
        "size_target": asdict(target) if target else None,
        "primary_metric": cfg.primary_metric,
        "primary_direction": cfg.direction(cfg.primary_metric),
        "strategy": cfg.strategy,
        "candidates": candidates,
        "models": models,
        "chosen": chosen,
        "rule": single["rule"] if single else "per model (see models)",
        "target_achieved": bool(models) and all(m["target_achieved"] for m in models.values()),
        "efficiency": _efficiency(candidates, chosen),
    }


def _efficiency(candidates: Sequence[Mapping], chosen: Mapping | None) -> dict[str, Any]:
    scored = [c for c in candidates if _finite(c.get("score_per_gb")) and not c["catastrophic"]]
    best = max(scored, key=lambda c: c["score_per_gb"]) if scored else None
    return {
        "definition": "composite score / size in GB (1 GB = 1000 MB)",
        "chosen_score_per_gb": chosen.get("score_per_gb") if chosen else None,
        "best_score_per_gb": best["score_per_gb"] if best else None,
        "best_score_per_gb_id": best["id"] if best else None,
    }


# --------------------------------------------------------------------------- writing


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _fmt(value: Any, spec: str = ".4g") -> str:
    return format(value, spec) if _finite(value) else "–"


def render_markdown(decision: Mapping[str, Any]) -> str:
    """The decision as a human-readable report."""
    metric = decision["primary_metric"]
    target = decision["size_target"]
    lines = [
        "# Selection",
        "",
        f"- primary metric: `{metric}` ({decision['primary_direction']} is better)",
        f"- size target: {target['text'] if target else 'none'}",
        f"- strategy: `{decision['strategy']}`",
        f"- target achieved: **{'yes' if decision['target_achieved'] else 'no'}**",
        "",
    ]
    by_id = {c["id"]: c for c in decision["candidates"]}
    for name, model in decision["models"].items():
        chosen = model["chosen_id"]
        lines += [
            f"## {name}",
            "",
            f"- chosen: **{chosen or 'none (target not achieved)'}**",
            f"- rule: {model['rule']}",
            f"- reason: {model['reason']}",
            f"- Pareto front (size vs {metric}): {', '.join(model['pareto_front']) or '–'}",
        ]
        if chosen and _finite(by_id[chosen].get("score_per_gb")):
            lines.append(f"- score per GB: {by_id[chosen]['score_per_gb']:.4g}")
        lines.append("")
    header = (
        f"| id | model | format | method | size MB | bpw | {metric} | Δ{metric} | composite "
        "| score/GB | front | pass | reasons |"
    )
    lines += ["## Candidates", "", header, "|" + "---|" * 13]
    for c in decision["candidates"]:
        deg = c["degradation"].get(metric)
        row = [
            c["id"],
            c["model_name"],
            c["quant_format"],
            c["method"],
            _fmt(c["size_mb"]),
            _fmt(c["bits_per_weight"]),
            _fmt(c["primary_value"]),
            _fmt(deg, "+.2%"),
            _fmt(c["composite_score"]),
            _fmt(c["score_per_gb"]),
            "●" if c["on_pareto_front"] else "",
            "yes" if c["passed"] else "no",
            "; ".join(c["reasons"]).replace("|", "/") or "",
        ]
        lines.append("| " + " | ".join(str(x) for x in row) + " |")
    if decision.get("skipped"):
        lines += ["", "Skipped files:"]
        lines += [f"- {s['path']}: {s['reason']}" for s in decision["skipped"]]
    return "\n".join(lines) + "\n"


def write_decision(sweep_dir: str | Path, decision: dict[str, Any]) -> dict[str, Path | None]:
    """Write selection.json, selection.md and pareto.png (when any point is plottable)."""
    root = Path(sweep_dir)
    plot_path = _write_plot(root / PARETO_PNG, decision)
    decision["files"] = {
        "json": SELECTION_JSON,
        "markdown": SELECTION_MD,
        "plot": PARETO_PNG if plot_path else None,
    }
    (root / SELECTION_JSON).write_text(json.dumps(json_safe(decision), indent=2) + "\n")
    (root / SELECTION_MD).write_text(render_markdown(decision))
    return {"json": root / SELECTION_JSON, "markdown": root / SELECTION_MD, "plot": plot_path}


def _write_plot(path: Path, decision: Mapping[str, Any]) -> Path | None:
    points = [_point(c) for c in decision["candidates"] if c["status"] == "ok"]
    if not any(math.isfinite(p.size) and math.isfinite(p.quality) for p in points):
        return None
    by_id = {p.id: p for p in points}
    fronts = {
        name: [by_id[i] for i in model["pareto_front"] if i in by_id]
        for name, model in decision["models"].items()
    }
    chosen = [m["chosen_id"] for m in decision["models"].values() if m["chosen_id"]]
    metric = decision["primary_metric"]
    return plot_pareto(
        points,
        fronts,
        path,
        y_label=f"{metric} ({decision['primary_direction']} is better)",
        chosen_ids=chosen,
        title=f"size vs {metric}",
    )


def run_selection(
    sweep_dir: str | Path,
    selection_cfg: SelectionConfig | Mapping | None = None,
    tracker: DecisionTracker | None = None,
) -> dict[str, Any]:
    """Judge every job under ``sweep_dir``, write the decision files, hand them to ``tracker``.

    Returns the decision dict (also in ``selection.json``); ``decision["files"]`` names the
    written files relative to ``sweep_dir``. ``tracker.log_decision(sweep_dir, decision,
    plot_path)`` is called last; its failure is logged and does not lose the files.
    """
    results, skipped = load_results(sweep_dir)
    decision = select(results, selection_cfg)
    decision["sweep_dir"] = str(sweep_dir)
    decision["skipped"] = skipped
    paths = write_decision(sweep_dir, decision)
    if tracker is not None:
        try:
            tracker.log_decision(sweep_dir, decision, paths["plot"])
        except Exception as exc:  # the decision files are written; tracking is best effort
            log.warning("tracker.log_decision failed: %s", exc)
            decision["tracker_error"] = str(exc)
    return decision
