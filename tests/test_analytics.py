"""tracking.analytics: known answers on small hand-made records, then real tiny_llama runs."""

from __future__ import annotations

import csv
import io
import json
import math
import random

import pytest
from _tracking_records import make_result, real_sweep

from sweeps.pareto import Point
from sweeps.pareto import pareto_front as reference_front
from tracking import analytics as an


def _scores(scores, **fields):
    """Records with the given scores, in time order (one minute apart)."""
    return [make_result(i, score=s, **fields) for i, s in enumerate(scores)]


# --------------------------------------------------------------------------------- bands


@pytest.mark.parametrize(
    ("score", "band"),
    [
        (1.0, "excellent"),
        (0.9, "excellent"),
        (0.8999, "good"),
        (0.8, "good"),
        (0.7999, "fair"),
        (0.6, "fair"),
        (0.5999, "poor"),
        (0.0, "poor"),
        (None, "unscored"),
        (float("nan"), "unscored"),
    ],
)
def test_quality_band_boundaries(score, band):
    assert an.quality_band(score) == band


def test_quality_distribution_counts():
    records = _scores([0.95, 0.91, 0.85, 0.7, 0.3, 0.6, 0.59])
    records.append(make_result(99, status="failed", score=None, errors=["boom"], error_count=1))
    dist = an.quality_distribution(records)
    assert dist == {"excellent": 2, "good": 1, "fair": 2, "poor": 2, "unscored": 1}
    assert sum(dist.values()) == len(records)


# --------------------------------------------------------------------------------- summary


def test_success_rate_counts_every_loop():
    records = _scores([0.95, 0.85, 0.5])  # passed: score >= 0.8 in make_result
    records.append(make_result(9, status="failed", score=None, passed_threshold=False))
    assert an.success_rate(records) == pytest.approx(2 / 4)
    assert an.success_rate([]) is None


def test_averages_use_ok_records_and_nested_metrics():
    records = [
        make_result(0, score=0.9, size_mb=10.0, bits_per_weight=4.0, metrics={"perplexity": 10.0}),
        make_result(1, score=0.7, size_mb=20.0, bits_per_weight=5.0, metrics={"perplexity": 14.0}),
        make_result(2, score=0.5, size_mb=30.0, bits_per_weight=6.0, metrics={"perplexity": 18.0}),
        make_result(3, status="failed", score=None, size_mb=1000.0, metrics={"perplexity": 1e9}),
    ]
    avg = an.averages(records)
    assert avg["score"] == pytest.approx(0.7)
    assert avg["size_mb"] == pytest.approx(20.0)
    assert avg["bits_per_weight"] == pytest.approx(5.0)
    assert avg["perplexity"] == pytest.approx(14.0)
    assert avg["top1_agreement"] == pytest.approx(90.0)
    assert an.averages([])["score"] is None


def test_non_finite_metric_is_left_out_of_averages():
    records = [
        make_result(0, metrics={"perplexity": 10.0}),
        make_result(1, metrics={"perplexity": 30.0}),
    ]
    records[1]["metrics"]["perplexity"] = float("inf")  # a diverged job (PPL overflow)
    assert an.averages(records)["perplexity"] == pytest.approx(10.0)


# --------------------------------------------------------------------------------- trend


@pytest.mark.parametrize(
    ("scores", "direction", "percent"),
    [
        ([0.5, 0.6, 0.7, 0.8], "improving", (0.75 - 0.55) / 0.55 * 100),
        ([0.8, 0.7, 0.6, 0.5], "declining", (0.55 - 0.75) / 0.75 * 100),
        ([0.80, 0.82, 0.81, 0.83], "stable", (0.82 - 0.81) / 0.81 * 100),
        ([0.5, 0.99, 0.6], "improving", 20.0),  # odd n: the middle record is left out
        ([0.9, 0.1, 0.86], "stable", (0.86 - 0.9) / 0.9 * 100),  # -4.4 % is within 5 %
        ([0.9, 0.1, 0.85], "declining", (0.85 - 0.9) / 0.9 * 100),  # -5.6 %
    ],
)
def test_trend_known_answers(scores, direction, percent):
    trend = an.trend_analysis(_scores(scores))
    assert trend["trend_direction"] == direction
    assert trend["percent_change"] == pytest.approx(percent)
    assert trend["window"] == len(scores)


def test_trend_follows_timestamps_not_input_order():
    records = _scores([0.5, 0.6, 0.7, 0.8])
    random.Random(0).shuffle(records)
    assert an.trend_analysis(records)["trend_direction"] == "improving"
    # An offset timestamp is compared in UTC: 00:30+01:00 is before 00:00Z + 1 min.
    early = make_result(7, score=0.1, timestamp="2026-01-01T00:30:00+01:00")
    assert an.sort_by_time([*records, early], newest_first=False)[0]["id"] == early["id"]


def test_trend_window_uses_the_newest_records():
    # 10 old poor scores, then 20 rising ones: the default window (20) sees only the rise.
    scores = [0.1] * 10 + [0.5] * 10 + [0.6] * 10
    trend = an.trend_analysis(_scores(scores))
    assert trend["window"] == 20
    assert trend["older_mean"] == pytest.approx(0.5)
    assert trend["newer_mean"] == pytest.approx(0.6)
    assert trend["percent_change"] == pytest.approx(20.0)
    everything = an.trend_analysis(_scores(scores), window=None)
    assert everything["older_mean"] == pytest.approx((10 * 0.1 + 5 * 0.5) / 15)


def test_trend_tolerance_and_edge_cases():
    assert an.trend_analysis(_scores([0.5, 0.6]), tolerance=25.0)["trend_direction"] == "stable"
    single = an.trend_analysis(_scores([0.9]))
    assert single["trend_direction"] == "insufficient_data"
    assert single["percent_change"] is None
    zero = an.trend_analysis(_scores([0.0, 0.0, 0.5, 0.5]))
    assert zero["trend_direction"] == "improving"
    assert zero["percent_change"] is None  # relative change from 0 is undefined
    failed = make_result(9, status="failed", score=None)
    assert an.trend_analysis([*_scores([0.5]), failed])["trend_direction"] == "insufficient_data"
    with pytest.raises(ValueError, match="trend window"):
        an.trend_analysis([], window=1)


# --------------------------------------------------------------------------------- history


def _mixed():
    out = []
    for i in range(12):
        out.append(
            make_result(
                i,
                model_name=("tiny_llama", "smollm2_135m")[i % 2],
                quant_format=("int8", "int4", "int2")[i % 3],
                method=("rtn", "gptq")[i // 6],
                sweep_id=("sweep-a", "sweep-b")[i // 6],
                score=0.5 + i * 0.04,
            )
        )
    return out


def test_history_filters_sort_and_pages():
    records = _mixed()
    page = an.history(records, limit=5)
    assert [r["id"] for r in page] == [f"job-{i:04d}" for i in (11, 10, 9, 8, 7)]
    assert [r["id"] for r in an.history(records, limit=5, offset=10)] == ["job-0001", "job-0000"]
    assert an.history(records, limit=3, newest_first=False)[0]["id"] == "job-0000"
    tiny_int8 = an.history(records, limit=None, model_name="tiny_llama", quant_format="int8")
    assert [r["id"] for r in tiny_int8] == ["job-0006", "job-0000"]
    assert len(an.history(records, limit=None, sweep_id="sweep-b", method="gptq")) == 6
    assert an.history(records, limit=None, model_name="") == an.history(records, limit=None)


def test_history_rejects_unknown_filter_and_status():
    with pytest.raises(ValueError, match="valid filters: model_name, quant_format"):
        an.history(_mixed(), model="tiny_llama")
    with pytest.raises(ValueError, match="status must be one of ok, failed"):
        an.history(_mixed(), status="done")
    with pytest.raises(ValueError, match="limit"):
        an.paginate([], limit=-1)


# --------------------------------------------------------------------------------- pareto, groups


def test_pareto_front_known_answer():
    def rec(i, size, score, **kw):
        return make_result(i, size_mb=size, score=score, **kw)

    records = [
        rec(0, 10.0, 0.90),  # A: front
        rec(1, 5.0, 0.80),  # B: front
        rec(2, 5.0, 0.70),  # same size as B, worse
        rec(3, 12.0, 0.85),  # larger and worse than A
        rec(4, 3.0, 0.50),  # E: front
        rec(5, 3.0, 0.50),  # equal to E: kept as well
        rec(6, 1.0, 0.99, status="failed"),  # failed jobs never count
        rec(7, 10.0, 0.90),  # equal to A
    ]
    assert an.pareto_front(records) == ["job-0004", "job-0005", "job-0001", "job-0000", "job-0007"]
    flags = {p["id"]: p["on_pareto_front"] for p in an.points(records)}
    assert [k for k, v in flags.items() if v] == [
        "job-0000",
        "job-0001",
        "job-0004",
        "job-0005",
        "job-0007",
    ]


def test_pareto_front_agrees_with_sweeps_definition():
    rng = random.Random(3)
    records = [
        make_result(i, size_mb=rng.choice([1.0, 2.0, 3.0, 4.0]), score=rng.choice([0.2, 0.5, 0.8]))
        for i in range(60)
    ]
    pts = [Point(r["id"], r["size_mb"], r["score"]) for r in records]
    expected = sorted(p.id for p in reference_front(pts, lower_is_better=False))
    assert sorted(an.pareto_front(records)) == expected


def test_compare_by_format_and_model():
    perf = an.performance(_mixed())
    assert set(perf["by_format"]) == {"int8", "int4", "int2"}
    assert set(perf["by_model"]) == {"tiny_llama", "smollm2_135m"}
    int2 = perf["by_format"]["int2"]  # jobs 2, 5, 8, 11
    assert int2["total_loops"] == 4
    assert int2["best_score"] == pytest.approx(0.5 + 11 * 0.04)
    assert int2["averages"]["score"] == pytest.approx(0.5 + 0.04 * (2 + 5 + 8 + 11) / 4)
    assert sum(g["total_loops"] for g in perf["by_model"].values()) == 12


def test_performance_and_summary_shapes():
    records = _mixed()
    perf = an.performance(records)
    for key in ("total_loops", "success_rate", "averages", "trend_analysis"):
        assert key in perf
    assert {"trend_direction", "percent_change"} <= set(perf["trend_analysis"])
    assert {"excellent", "good", "fair", "poor"} <= set(perf["quality_distribution"])
    assert perf["avg_score"] == perf["averages"]["score"]
    s = an.summary(records)
    assert s["total_loops"] == 12
    assert s["trend_direction"] == perf["trend_analysis"]["trend_direction"] == "improving"
    json.dumps(perf, allow_nan=False)


# --------------------------------------------------------------------------------- export


def test_csv_export_round_trips():
    records = an.history(_mixed(), limit=None)
    text = an.export(records, "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(records)
    header = text.splitlines()[0].split(",")
    assert header[:3] == ["id", "timestamp", "sweep_id"]
    assert "metrics.perplexity" in header and "degradation.perplexity" in header
    for row, rec in zip(rows, records, strict=True):
        assert row["id"] == rec["id"]
        assert float(row["score"]) == rec["score"]
        assert float(row["metrics.top1_agreement"]) == rec["metrics"]["top1_agreement"]
        assert json.loads(row["thresholds"]) == rec["thresholds"]


def test_json_export_is_strict_json():
    records = _mixed()[:2]
    records[0]["metrics"]["perplexity"] = float("nan")
    back = json.loads(an.export(records, "json"))
    assert back[0]["metrics"]["perplexity"] is None
    assert back[1] == records[1]
    with pytest.raises(ValueError, match="valid formats: csv, json"):
        an.export(records, "xlsx")


# --------------------------------------------------------------------------------- real runs


@pytest.mark.slow
def test_analytics_on_real_tiny_llama_sweep():
    """run.py -m model=tiny_llama quant=int8,int4,int2 eval=smoke, then analytics on its files."""
    sweep = real_sweep()
    results = sweep["results"]
    assert len(results) == 3
    by_fmt = {r["quant_format"]: r for r in results}
    assert set(by_fmt) == {"int8", "int4", "int2"}
    perf = an.performance(results)
    assert perf["total_loops"] == 3
    passed = sum(r["passed_threshold"] is True for r in results)
    assert perf["success_rate"] == pytest.approx(passed / 3)
    # Fewer bits, worse agreement with the full-precision model: int8 > int4 > int2.
    assert by_fmt["int8"]["score"] > by_fmt["int4"]["score"] > by_fmt["int2"]["score"]
    # The sweep ran int8, int4, int2 in that order, so the score trend over time declines.
    assert perf["trend_analysis"]["trend_direction"] == "declining"
    dist = perf["quality_distribution"]
    assert sum(dist.values()) == 3
    assert dist[an.quality_band(by_fmt["int8"]["score"])] >= 1
    mean_size = sum(r["size_mb"] for r in results) / 3
    assert perf["averages"]["size_mb"] == pytest.approx(mean_size)
    pts = [Point(r["id"], r["size_mb"], r["score"]) for r in results]
    ref = {p.id for p in reference_front(pts, lower_is_better=False)}
    assert set(an.pareto_front(results)) == ref
    # The store the runner filled holds the same records.
    from runner.store import ResultStore

    stored = ResultStore(sweep["store"]).query(sweep_id=results[0]["sweep_id"])
    assert sorted(r["id"] for r in stored) == sorted(r["id"] for r in results)
    assert an.summary(stored) == an.summary(results)
    assert not any(math.isnan(v) for v in perf["averages"].values() if v is not None)
