"""Pure analytics over job results (the ``result.json`` records of ``runner/schema.py``).

Every function takes a list of result dicts and returns plain values (dicts, lists, numbers,
strings) that serialise to JSON as they are. Nothing here reads files, talks to the store or
imports a web framework.

Definitions (also in docs/dashboard.md):

* a *loop* is one job record, whatever its ``status``;
* ``success_rate`` = loops with ``passed_threshold`` true / all loops (``None`` when empty);
* averages are taken over records with ``status == "ok"`` whose value is a finite number;
* quality bands on ``score``: excellent >= 0.9, good >= 0.8, fair >= 0.6, poor < 0.6;
  records without a score count as ``unscored``;
* trend: the scored ``ok`` records in time order, last ``window`` of them; the older half is the
  first ``n // 2``, the newer half the last ``n // 2`` (the middle record is left out when ``n`` is
  odd); ``percent_change = (mean_newer - mean_older) / mean_older * 100``; ``improving`` when it
  is above ``+tolerance``, ``declining`` below ``-tolerance``, else ``stable``;
  ``insufficient_data`` with fewer than two scored records.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

Result = dict[str, Any]

#: Record fields the history can be filtered on (the same names as ``runner.store.FILTERS``).
FILTERS = ("model_name", "quant_format", "method", "sweep_id", "status")
STATUSES = ("ok", "failed")

#: (band, lower bound on score), best first. A score belongs to the first band it reaches.
QUALITY_BANDS: tuple[tuple[str, float], ...] = (
    ("excellent", 0.9),
    ("good", 0.8),
    ("fair", 0.6),
    ("poor", -math.inf),
)
#: Colour of each band, used by the dashboard and the static report (seed: green/yellow/orange/red).
BAND_COLORS = {
    "excellent": "#2e9e44",
    "good": "#d4b106",
    "fair": "#e8780c",
    "poor": "#d23a2f",
    "unscored": "#8c8c8c",
}

#: Main metrics averaged in summaries: name -> where it lives in a record.
MAIN_METRICS: dict[str, tuple[str, ...]] = {
    "score": ("score",),
    "size_mb": ("size_mb",),
    "bits_per_weight": ("bits_per_weight",),
    "perplexity": ("metrics", "perplexity"),
    "kld_mean": ("metrics", "kld_mean"),
    "top1_agreement": ("metrics", "top1_agreement"),
}

TREND_DIRECTIONS = ("improving", "declining", "stable", "insufficient_data")
DEFAULT_TREND_WINDOW = 20
DEFAULT_TREND_TOLERANCE = 5.0  # percent


# ---------------------------------------------------------------------------------------------
# small accessors


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, null, NaN, inf, bool, non-numeric)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def metric_value(result: Result, name: str) -> float | None:
    """One of :data:`MAIN_METRICS` (or any key of ``result['metrics']``) as a finite float."""
    path = MAIN_METRICS.get(name, ("metrics", name))
    value: Any = result
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return _number(value)


def parse_time(result: Result) -> datetime:
    """The record's ``timestamp`` as an aware datetime (naive timestamps are taken as UTC)."""
    raw = result.get("timestamp")
    try:
        t = datetime.fromisoformat(str(raw))
    except ValueError:
        raise ValueError(
            f"result {result.get('id')!r}: timestamp {raw!r} is not an ISO-8601 date-time"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def quality_band(score: float | None) -> str:
    """The quality band of a score: excellent, good, fair, poor, or unscored for ``None``."""
    score = _number(score)
    if score is None:
        return "unscored"
    for band, lower in QUALITY_BANDS:
        if score >= lower:
            return band
    raise AssertionError("unreachable: the last band has no lower bound")


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _scored(results: Iterable[Result]) -> list[Result]:
    """``ok`` records that carry a finite score."""
    return [r for r in results if r.get("status") == "ok" and _number(r.get("score")) is not None]


# ---------------------------------------------------------------------------------------------
# history


def check_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """Validate filter names (and ``status`` values); returns the filters that are set."""
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise ValueError(f"unknown filter(s) {unknown}; valid filters: {', '.join(FILTERS)}")
    status = filters.get("status")
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    return {k: v for k, v in filters.items() if v is not None and v != ""}


def filter_results(results: Iterable[Result], **filters: Any) -> list[Result]:
    """Records whose fields equal every given filter (``None``/empty filters are ignored)."""
    active = check_filters(filters)
    return [r for r in results if all(r.get(k) == v for k, v in active.items())]


def sort_by_time(results: Iterable[Result], newest_first: bool = True) -> list[Result]:
    """Records ordered by parsed timestamp, ties broken by id (stable and deterministic)."""
    return sorted(
        results, key=lambda r: (parse_time(r), str(r.get("id"))), reverse=bool(newest_first)
    )


def paginate(results: Sequence[Result], limit: int | None, offset: int = 0) -> list[Result]:
    """``limit`` records starting at ``offset`` (``limit=None``: all from ``offset``)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0; got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0; got {offset}")
    end = None if limit is None else offset + limit
    return list(results[offset:end])


def history(
    results: Iterable[Result],
    limit: int | None = 20,
    offset: int = 0,
    newest_first: bool = True,
    **filters: Any,
) -> list[Result]:
    """Filtered, time-sorted, paginated records."""
    rows = sort_by_time(filter_results(results, **filters), newest_first=newest_first)
    return paginate(rows, limit, offset)


# ---------------------------------------------------------------------------------------------
# performance


def success_rate(results: Sequence[Result]) -> float | None:
    """Share of loops with ``passed_threshold`` true; ``None`` for no loops."""
    if not results:
        return None
    return sum(1 for r in results if r.get("passed_threshold") is True) / len(results)


def averages(results: Iterable[Result]) -> dict[str, float | None]:
    """Mean of each of :data:`MAIN_METRICS` over ``ok`` records that have it."""
    ok = [r for r in results if r.get("status") == "ok"]
    out: dict[str, float | None] = {}
    for name in MAIN_METRICS:
        out[name] = _mean(v for r in ok if (v := metric_value(r, name)) is not None)
    return out


def trend_analysis(
    results: Iterable[Result],
    window: int | None = DEFAULT_TREND_WINDOW,
    tolerance: float = DEFAULT_TREND_TOLERANCE,
) -> dict[str, Any]:
    """Direction and percent change of the mean score, newer half vs older half (module doc)."""
    if window is not None and window < 2:
        raise ValueError(f"trend window must be >= 2 (or None for all records); got {window}")
    if tolerance < 0:
        raise ValueError(f"trend tolerance must be >= 0 percent; got {tolerance}")
    scored = sort_by_time(_scored(results), newest_first=False)
    if window is not None:
        scored = scored[-window:]
    n = len(scored)
    base = {"window": n, "tolerance_percent": tolerance}
    if n < 2:
        return {
            "trend_direction": "insufficient_data",
            "percent_change": None,
            "older_mean": None,
            "newer_mean": None,
            **base,
        }
    half = n // 2
    older = _mean(float(r["score"]) for r in scored[:half])
    newer = _mean(float(r["score"]) for r in scored[n - half :])
    assert older is not None and newer is not None
    if older == 0.0:
        percent = 0.0 if newer == 0.0 else None  # undefined relative change from zero
        direction = "stable" if newer == 0.0 else "improving"
    else:
        percent = (newer - older) / older * 100.0
        if percent > tolerance:
            direction = "improving"
        elif percent < -tolerance:
            direction = "declining"
        else:
            direction = "stable"
    return {
        "trend_direction": direction,
        "percent_change": percent,
        "older_mean": older,
        "newer_mean": newer,
        **base,
    }


def quality_distribution(results: Iterable[Result]) -> dict[str, int]:
    """Count of records per quality band of ``score`` (plus ``unscored``)."""
    counts = {band: 0 for band, _ in QUALITY_BANDS}
    counts["unscored"] = 0
    for r in results:
        score = r.get("score") if r.get("status") == "ok" else None
        counts[quality_band(score)] += 1
    return counts


def pareto_front(results: Iterable[Result], x: str = "size_mb", y: str = "score") -> list[str]:
    """Ids of ``ok`` records not dominated in (smaller ``x``, larger ``y``), by increasing ``x``.

    Same definition as ``sweeps.pareto`` (a record is dominated when another one is no larger,
    no worse, and strictly better in one of the two; equal points are all kept), computed with
    one sort and one sweep so it stays fast on a large store.
    """
    pts = [
        (vx, vy, str(r.get("id")))
        for r in results
        if r.get("status") == "ok"
        and (vx := metric_value(r, x)) is not None
        and (vy := metric_value(r, y)) is not None
    ]
    pts.sort(key=lambda p: (p[0], -p[1], p[2]))
    front: list[str] = []
    best_y = -math.inf
    last: tuple[float, float] | None = None
    for vx, vy, rid in pts:
        if vy > best_y or (vx, vy) == last:
            front.append(rid)
            best_y, last = vy, (vx, vy)
    return front


def _group_summary(group: Sequence[Result]) -> dict[str, Any]:
    scores = [float(r["score"]) for r in _scored(group)]
    return {
        "total_loops": len(group),
        "success_rate": success_rate(group),
        "averages": averages(group),
        "best_score": max(scores) if scores else None,
        "quality_distribution": quality_distribution(group),
    }


def compare_by(results: Iterable[Result], key: str) -> dict[str, dict[str, Any]]:
    """Per value of ``key`` (e.g. ``model_name`` or ``quant_format``): a small summary each."""
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(str(r.get(key)), []).append(r)
    return {name: _group_summary(groups[name]) for name in sorted(groups)}


def performance(
    results: Sequence[Result],
    trend_window: int | None = DEFAULT_TREND_WINDOW,
    trend_tolerance: float = DEFAULT_TREND_TOLERANCE,
) -> dict[str, Any]:
    """The full performance report (the ``/api/quantization/performance`` body)."""
    avg = averages(results)
    return {
        "total_loops": len(results),
        "success_rate": success_rate(results),
        **{f"avg_{k}": v for k, v in avg.items()},
        "averages": avg,
        "trend_analysis": trend_analysis(results, trend_window, trend_tolerance),
        "quality_distribution": quality_distribution(results),
        "by_model": compare_by(results, "model_name"),
        "by_format": compare_by(results, "quant_format"),
        "pareto_front": pareto_front(results),
    }


def summary(
    results: Sequence[Result],
    trend_window: int | None = DEFAULT_TREND_WINDOW,
    trend_tolerance: float = DEFAULT_TREND_TOLERANCE,
) -> dict[str, Any]:
    """The short summary (the ``summary`` of the history response)."""
    return {
        "total_loops": len(results),
        "success_rate": success_rate(results),
        **{f"avg_{k}": v for k, v in averages(results).items()},
        "trend_direction": trend_analysis(results, trend_window, trend_tolerance)[
            "trend_direction"
        ],
    }


def points(results: Iterable[Result]) -> list[dict[str, Any]]:
    """Compact per-record points for charts, oldest first, with the Pareto-front flag."""
    rows = sort_by_time(results, newest_first=False)
    front = set(pareto_front(rows))
    return [
        {
            "id": r.get("id"),
            "timestamp": r.get("timestamp"),
            "model_name": r.get("model_name"),
            "quant_format": r.get("quant_format"),
            "method": r.get("method"),
            "sweep_id": r.get("sweep_id"),
            "status": r.get("status"),
            "passed_threshold": r.get("passed_threshold") is True,
            "score": metric_value(r, "score") if r.get("status") == "ok" else None,
            "size_mb": metric_value(r, "size_mb"),
            "bits_per_weight": metric_value(r, "bits_per_weight"),
            "band": quality_band(r.get("score") if r.get("status") == "ok" else None),
            "on_pareto_front": r.get("id") in front,
        }
        for r in rows
    ]


def facets(results: Iterable[Result]) -> dict[str, list[str]]:
    """The distinct values of each filter field (for filter drop-downs), sorted."""
    seen: dict[str, set[str]] = {k: set() for k in FILTERS}
    for r in results:
        for k in FILTERS:
            if r.get(k) is not None:
                seen[k].add(str(r[k]))
    return {k: sorted(v) for k, v in seen.items()}


# ---------------------------------------------------------------------------------------------
# export

#: Leading CSV columns; ``metrics.*``, ``baseline.*``, ``degradation.*`` follow, then the rest.
CSV_COLUMNS = (
    "id",
    "timestamp",
    "sweep_id",
    "model_name",
    "quant_format",
    "method",
    "status",
    "passed_threshold",
    "score",
    "size_mb",
    "bits_per_weight",
    "compression_ratio",
    "duration_seconds",
    "memory_peak_mb",
    "cpu_avg_percent",
    "error_count",
    "seed",
    "config_hash",
    "git_hash",
    "job_dir",
)
_FLATTENED = ("metrics", "baseline", "degradation")


def _flatten(result: Result) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in result.items():
        if key in _FLATTENED and isinstance(value, dict):
            row.update({f"{key}.{k}": v for k, v in value.items()})
        elif isinstance(value, dict | list):
            row[key] = json.dumps(value, sort_keys=True)
        else:
            row[key] = value
    return row


def to_csv(results: Iterable[Result]) -> str:
    """CSV text: one row per record; ``metrics``/``baseline``/``degradation`` become
    ``<group>.<name>`` columns, other nested values are JSON text."""
    rows = [_flatten(r) for r in results]
    present = {k for row in rows for k in row}
    lead = [c for c in CSV_COLUMNS if c in present]
    nested = sorted(k for k in present if k.split(".", 1)[0] in _FLATTENED and "." in k)
    rest = sorted(present - set(lead) - set(nested))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*lead, *nested, *rest], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def finite(obj: Any) -> Any:
    """A copy of ``obj`` with every NaN/inf float replaced by ``None`` (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def to_json(results: Iterable[Result]) -> str:
    """JSON text: a list of the full records (non-finite numbers become ``null``)."""
    return json.dumps(finite(list(results)), indent=2, sort_keys=True, allow_nan=False)


EXPORT_FORMATS = {"csv": to_csv, "json": to_json}


def export(results: Iterable[Result], fmt: str) -> str:
    """Export records as ``csv`` or ``json`` text."""
    try:
        writer = EXPORT_FORMATS[fmt]
    except KeyError:
        raise ValueError(
            f"export format {fmt!r} unknown; valid formats: {', '.join(EXPORT_FORMATS)}"
        ) from None
    return writer(results)
