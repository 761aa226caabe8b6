"""Selection logic on hand-made candidate sets: targets, guard, Pareto front, strategies, files."""

from __future__ import annotations

import json
import math

import pytest

from sweeps.pareto import Point, pareto_front
from sweeps.selection import evaluate_candidate, run_selection, select
from sweeps.selection_config import (
    SelectionConfig,
    SelectionConfigError,
    parse_size_target,
)


def _result(
    rid: str,
    size_mb: float | None,
    ppl_deg: float,
    *,
    top1: float = 95.0,
    kld: float = 0.05,
    status: str = "ok",
    model: str = "m",
    base_ppl: float = 20.0,
) -> dict:
    """A result.json-shaped dict (schema v1 keys the selection reads)."""
    return {
        "schema_version": "1",
        "id": rid,
        "model_name": model,
        "quant_format": rid,
        "method": "rtn",
        "status": status,
        "size_mb": size_mb,
        "bits_per_weight": None if size_mb is None else size_mb / 10.0,
        "score": top1 / 100.0,
        "metrics": {
            "perplexity": base_ppl * (1.0 + ppl_deg),
            "kld_mean": kld,
            "top1_agreement": top1,
        },
        "degradation": {"perplexity": ppl_deg, "top1_agreement": (100.0 - top1) / 100.0},
        "errors": [] if status == "ok" else ["RuntimeError: out of memory"],
    }


# --------------------------------------------------------------------------- size targets


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [
        ("500MB", 500.0, "mb"),
        ("1.2GB", 1200.0, "mb"),
        ("1.2 gb", 1200.0, "mb"),
        ("800MiB", 800 * 1024**2 / 1e6, "mb"),
        ("750KB", 0.75, "mb"),
        ("4.5bpw", 4.5, "bpw"),
    ],
)
def test_parse_size_target(text, value, unit):
    target = parse_size_target(text)
    assert target.unit == unit
    assert target.value == pytest.approx(value)


@pytest.mark.parametrize("empty", [None, "", "null", "None"])
def test_no_size_target(empty):
    assert parse_size_target(empty) is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("500", "is not '<number><unit>'"),
        ("1.2XB", "unknown unit 'XB'"),
        ("4.5bwp", "did you mean 'bpw'"),
        ("0GB", "must be > 0"),
        ("40bpw", "(0, 32]"),
        ("big", "is not '<number><unit>'"),
    ],
)
def test_bad_size_target_names_field(text, fragment):
    with pytest.raises(SelectionConfigError) as err:
        parse_size_target(text)
    assert "selection.size_target" in str(err.value)
    assert fragment in str(err.value)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"max_degradation": -0.1}, "selection.max_degradation"),
        ({"max_degradations": {"top1_agreement": -1}}, "selection.max_degradations.top1_agreement"),
        ({"metric_min": {"top1_agreement": 150}}, "selection.metric_min.top1_agreement"),
        ({"metric_max": {"kld_mean": -0.5}}, "selection.metric_max.kld_mean"),
        ({"weights": {"perplexity": -1}}, "selection.weights.perplexity"),
        ({"weights": {"perplexity": 0.0}}, "selection.weights"),
        ({"weights": {"my_metric": 1.0}}, "selection.directions.my_metric"),
        ({"directions": {"my_metric": "up"}}, "selection.directions.my_metric"),
        ({"size_tie_tolerance": 1.5}, "selection.size_tie_tolerance"),
        ({"guard": {"max_ppl_ratio": 0.5}}, "selection.guard.max_ppl_ratio"),
        ({"guard": {"max_kld_mean": -1}}, "selection.guard.max_kld_mean"),
        ({"guard": {"min_top1_agreement": 101}}, "selection.guard.min_top1_agreement"),
        ({"primary_metric": "bleu"}, "selection.directions.bleu"),
        ({"strategy": "smalest_passing"}, "did you mean 'smallest_passing'"),
        ({"max_degradtion": 0.1}, "did you mean 'max_degradation'"),
        ({"guard": {"max_ppl": 2}}, "selection.guard.max_ppl"),
    ],
)
def test_invalid_settings_name_the_field(data, field):
    with pytest.raises(SelectionConfigError) as err:
        SelectionConfig.from_mapping(data).validate()
    assert field in str(err.value)


def test_custom_metric_direction_is_accepted():
    cfg = SelectionConfig.from_mapping(
        {"primary_metric": "bleu", "directions": {"bleu": "higher"}}
    ).validate()
    assert cfg.direction("bleu") == "higher"
    assert cfg.direction("perplexity") == "lower"
    assert cfg.direction("kld_p99") == "lower"


# --------------------------------------------------------------------------- Pareto front


def test_pareto_front_lower_is_better():
    points = [
        Point("a", 100, 10.0),
        Point("b", 60, 10.5),
        Point("c", 60, 11.0),  # same size as b, worse
        Point("d", 40, 12.0),
        Point("e", 80, 10.6),  # larger and worse than b
        Point("f", 20, math.nan),  # unmeasured: not on the plane
        Point("g", 100, 10.0),  # duplicate of a: neither dominates the other
    ]
    assert [p.id for p in pareto_front(points, lower_is_better=True)] == ["d", "b", "a", "g"]


def test_pareto_front_higher_is_better():
    points = [Point("a", 100, 99.0), Point("b", 60, 97.0), Point("c", 70, 96.0), Point("d", 30, 80)]
    assert [p.id for p in pareto_front(points, lower_is_better=False)] == ["d", "b", "a"]


def test_selection_marks_front_on_candidates():
    results = [
        _result("q8", 100, 0.01),
        _result("q6", 80, 0.03),
        _result("q5", 85, 0.05),  # dominated by q6
        _result("q4", 60, 0.06),
    ]
    decision = select(results, {"max_degradation": 0.07})
    front = {c["id"] for c in decision["candidates"] if c["on_pareto_front"]}
    assert front == {"q8", "q6", "q4"}
    assert decision["models"]["m"]["pareto_front"] == ["q4", "q6", "q8"]


# --------------------------------------------------------------------------- guard


def test_catastrophic_candidate_never_selected_even_when_smallest():
    results = [
        _result("q8", 100, 0.01),
        _result("q4", 60, 0.05),
        _result("q2", 30, 2.5),  # perplexity x3.5: trips max_ppl_ratio=3
    ]
    # No degradation cap and weights that only look at top-1: the guard alone must reject q2.
    cfg = {"max_degradation": None, "weights": {"top1_agreement": 1.0}}
    decision = select(results, cfg)
    by_id = {c["id"]: c for c in decision["candidates"]}
    assert by_id["q2"]["catastrophic"] and not by_id["q2"]["passed"]
    assert any(r.startswith("guard: perplexity ratio 3.5") for r in by_id["q2"]["reasons"])
    assert decision["chosen"]["id"] == "q4"


def test_guard_kld_and_failed_status():
    results = [
        _result("big", 100, 0.01),
        _result("kld", 50, 0.01, kld=1.5),
        _result("crash", 10, 0.0, status="failed"),
    ]
    decision = select(results, {"max_degradation": None})
    by_id = {c["id"]: c for c in decision["candidates"]}
    assert "guard: kld_mean 1.5 > guard 1" in by_id["kld"]["reasons"]
    assert by_id["crash"]["catastrophic"]
    assert "out of memory" in by_id["crash"]["reasons"][0]
    assert decision["chosen"]["id"] == "big"


def test_non_finite_metric_trips_guard():
    bad = _result("nan", 10, 0.0)
    bad["metrics"]["perplexity"] = math.inf
    cand = evaluate_candidate(bad, SelectionConfig().validate())
    assert cand["catastrophic"]
    assert any("perplexity is not finite" in r for r in cand["reasons"])


# --------------------------------------------------------------------------- targets, strategies


def test_size_and_degradation_targets():
    results = [_result("q8", 100, 0.01), _result("q4", 60, 0.05), _result("q3", 45, 0.09)]
    decision = select(results, {"size_target": "70MB"})
    by_id = {c["id"]: c for c in decision["candidates"]}
    assert by_id["q8"]["reasons"] == ["size 100 MB > target 70MB"]
    assert by_id["q3"]["reasons"] == ["perplexity degradation +9.00% > max 7.00%"]
    assert decision["chosen"]["id"] == "q4"
    assert decision["target_achieved"]
    assert decision["rule"].startswith("smallest passing candidate")


def test_bpw_target_uses_bits_per_weight():
    results = [_result("q8", 85, 0.01), _result("q4", 45, 0.03)]  # 8.5 and 4.5 bpw
    decision = select(results, {"size_target": "5bpw"})
    assert decision["chosen"]["id"] == "q4"
    assert not {c["id"]: c for c in decision["candidates"]}["q8"]["passed"]


def test_size_ties_broken_by_composite_score():
    results = [_result("a", 60.0, 0.06, top1=90), _result("b", 60.3, 0.02, top1=97)]
    decision = select(results, {"size_tie_tolerance": 0.01})
    assert decision["chosen"]["id"] == "b"
    decision = select(results, {"size_tie_tolerance": 0.0})
    assert decision["chosen"]["id"] == "a"


def test_strategies_differ():
    results = [_result("q8", 100, 0.0, top1=99), _result("q4", 50, 0.05, top1=93)]
    assert select(results, {"strategy": "best_score"})["chosen"]["id"] == "q8"
    assert select(results, {"strategy": "smallest_passing"})["chosen"]["id"] == "q4"
    eff = select(results, {"strategy": "best_efficiency"})
    assert eff["chosen"]["id"] == "q4"
    assert eff["efficiency"]["chosen_score_per_gb"] == pytest.approx(
        eff["chosen"]["composite_score"] / 0.05
    )


def test_composite_score_from_weights():
    cfg = SelectionConfig.from_mapping({"weights": {"perplexity": 1.0, "kld_mean": 1.0}})
    cand = evaluate_candidate(_result("x", 50, 0.25, kld=0.1), cfg.validate())
    # perplexity retention 1/(1+0.25) = 0.8; KL retention exp(-0.1)
    assert cand["composite_score"] == pytest.approx((0.8 + math.exp(-0.1)) / 2)


def test_target_not_achieved_reports_fallback():
    results = [_result("q8", 100, 0.10), _result("q2", 30, 2.5)]
    decision = select(results, {"max_degradation": 0.05})
    model = decision["models"]["m"]
    assert decision["chosen"] is None and not decision["target_achieved"]
    assert model["fallback_id"] == "q8"  # q2 is catastrophic, never even the fallback
    assert model["rule"].startswith("target not achieved")


def test_one_decision_per_model():
    results = [
        _result("a8", 100, 0.01, model="a"),
        _result("a4", 50, 0.05, model="a"),
        _result("b8", 300, 0.01, model="b"),
        _result("b4", 150, 0.2, model="b"),
    ]
    decision = select(results)
    assert decision["models"]["a"]["chosen_id"] == "a4"
    assert decision["models"]["b"]["chosen_id"] == "b8"
    assert decision["chosen"] is None and decision["rule"] == "per model (see models)"


# --------------------------------------------------------------------------- files


class _Tracker:
    def __init__(self, fail: bool = False):
        self.calls = []
        self.fail = fail

    def log_decision(self, sweep_dir, decision, plot_path):
        self.calls.append((sweep_dir, decision, plot_path))
        if self.fail:
            raise RuntimeError("wandb offline dir not writable")


def _write_sweep(root, results):
    for i, res in enumerate(results):
        job = root / f"m_{res['id']}_{i}"
        job.mkdir(parents=True)
        (job / "result.json").write_text(json.dumps(res))
    (root / "broken_9").mkdir()
    (root / "broken_9" / "result.json").write_text("{not json")


def test_run_selection_writes_files_and_calls_tracker(tmp_path):
    bad = _result("q2", 30, 0.0)
    bad["metrics"]["perplexity"] = float("nan")
    _write_sweep(tmp_path, [_result("q8", 100, 0.01), _result("q4", 60, 0.05), bad])
    tracker = _Tracker()
    decision = run_selection(tmp_path, {"size_target": "0.08GB"}, tracker=tracker)
    assert decision["chosen"]["id"] == "q4"
    for name in ("selection.json", "selection.md", "pareto.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "selection.json").read_text())  # strict JSON: no NaN
    assert saved["chosen"]["id"] == "q4"
    assert saved["skipped"][0]["path"].startswith("broken_9")
    assert {c["id"] for c in saved["candidates"]} == {"q8", "q4", "q2"}
    md = (tmp_path / "selection.md").read_text()
    assert "chosen: **q4**" in md and "guard: perplexity is not finite" in md
    (sweep_dir, logged, plot) = tracker.calls[0]
    assert logged is decision and plot == tmp_path / "pareto.png"


def test_tracker_failure_keeps_files(tmp_path):
    _write_sweep(tmp_path, [_result("q8", 100, 0.01)])
    decision = run_selection(tmp_path, None, tracker=_Tracker(fail=True))
    assert "not writable" in decision["tracker_error"]
    assert (tmp_path / "selection.json").is_file()


def test_rerun_result_with_same_id_keeps_latest(tmp_path):
    old, new = _result("q4", 60, 0.20), _result("q4", 60, 0.02)
    old["timestamp"], new["timestamp"] = "2026-01-01T00:00:00", "2026-01-02T00:00:00"
    _write_sweep(tmp_path, [new, old])
    decision = run_selection(tmp_path)
    assert len(decision["candidates"]) == 1
    assert decision["candidates"][0]["degradation"]["perplexity"] == 0.02
