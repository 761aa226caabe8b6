"""tracking.api served by a real uvicorn process on 127.0.0.1 (``python -m tracking.cli serve``)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _tracking_records import ROOT, Server, make_result, real_sweep

pytest.importorskip("fastapi", reason="the dashboard extra (fastapi, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the dashboard extra (fastapi, uvicorn) is not installed")

from runner.store import ResultStore  # noqa: E402
from tracking import analytics as an  # noqa: E402
from tracking.cli import build_parser  # noqa: E402

N = 45


def _records():
    out = []
    for i in range(N):
        failed = i % 9 == 4
        out.append(
            make_result(
                i,
                model_name=("tiny_llama", "smollm2_135m")[i % 2],
                quant_format=("int8", "int4", "int2")[i % 3],
                sweep_id=("sweep-a", "sweep-b")[i // 30],
                size_mb=60.0 - (i % 3) * 15.0,
                status="failed" if failed else "ok",
                score=None if failed else round(0.45 + (i % 11) * 0.05, 2),
                **({"errors": ["OOM"], "error_count": 1} if failed else {}),
            )
        )
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("api")
    store = ResultStore(base / "store.sqlite")
    records = _records()
    for r in records:
        store.add(r)
    server = Server(store.path, base / "server.log")
    yield server, records, store
    server.stop()


def test_health(served):
    server, records, _ = served
    status, body = server.get("/health")
    assert status == 200
    assert body["status"] == "ok" and body["tracking_enabled"] is True
    assert body["total_results"] == len(records)


def test_history_shape_and_default_page(served):
    server, records, _ = served
    status, body = server.get("/api/quantization/history")
    assert status == 200
    assert set(body) >= {"summary", "history", "total_results", "tracking_enabled"}
    assert body["tracking_enabled"] is True
    assert body["total_results"] == N
    assert len(body["history"]) == 20
    stamps = [r["timestamp"] for r in body["history"]]
    assert stamps == sorted(stamps, reverse=True)
    assert body["history"][0]["id"] == f"job-{N - 1:04d}"
    summary = body["summary"]
    assert set(summary) >= {"total_loops", "success_rate", "avg_score", "trend_direction"}
    assert summary == an.summary(records)
    assert summary["total_loops"] == N
    n_failed = sum(r["status"] == "failed" for r in records)
    assert n_failed == 5
    assert summary["success_rate"] == pytest.approx(sum(r["passed_threshold"] for r in records) / N)


def test_history_pages_cover_every_record_once(served):
    server, records, _ = served
    seen = []
    for offset in range(0, N, 20):
        status, body = server.get(f"/api/quantization/history?limit=20&offset={offset}")
        assert status == 200
        seen += [r["id"] for r in body["history"]]
    assert len(seen) == N and set(seen) == {r["id"] for r in records}
    _, oldest = server.get("/api/quantization/history?limit=1&order=oldest")
    assert oldest["history"][0]["id"] == "job-0000"


def test_history_filters(served):
    server, records, _ = served
    status, body = server.get(
        "/api/quantization/history?limit=100&model_name=tiny_llama&quant_format=int2&sweep_id=sweep-b"
    )
    assert status == 200
    expected = [
        r["id"]
        for r in records
        if (r["model_name"], r["quant_format"], r["sweep_id"]) == ("tiny_llama", "int2", "sweep-b")
    ]
    assert sorted(r["id"] for r in body["history"]) == sorted(expected)
    assert body["total_results"] == body["summary"]["total_loops"] == len(expected)
    _, failed = server.get("/api/quantization/history?status=failed&limit=100")
    assert failed["total_results"] == 5
    assert all(r["status"] == "failed" for r in failed["history"])
    _, none = server.get("/api/quantization/history?method=gptq")
    assert none["total_results"] == 0 and none["history"] == []
    assert none["summary"]["success_rate"] is None


def test_seed_style_empty_parameters_mean_not_given(served):
    server, *_ = served
    status, body = server.get("/api/quantization/history?limit=20&offset=&model_name=")
    assert status == 200
    assert body["total_results"] == N and body["offset"] == 0


@pytest.mark.parametrize(
    ("query", "status", "needle"),
    [
        ("limit=0", 422, "limit must be an integer in [1, 1000]"),
        ("limit=abc", 422, "limit must be an integer"),
        ("limit=1001", 422, "limit"),
        ("limit=2.5", 422, "limit"),
        ("offset=-1", 422, "offset"),
        ("order=random", 422, "order must be one of newest, oldest"),
        ("status=done", 422, "status must be one of ok, failed"),
        ("trend_window=1", 422, "trend_window"),
        ("model=tiny_llama", 400, "unknown query parameter(s) ['model']"),
        ("limit=5&limit=6", 400, "limit given 2 times"),
    ],
)
def test_history_rejects_bad_parameters(served, query, status, needle):
    server, *_ = served
    code, body = server.get(f"/api/quantization/history?{query}")
    assert code == status
    assert needle in body["detail"]


def test_performance_shape_and_values(served):
    server, records, _ = served
    status, body = server.get("/api/quantization/performance")
    assert status == 200
    assert body["total_loops"] == N
    assert set(body["trend_analysis"]) >= {"trend_direction", "percent_change"}
    assert body["trend_analysis"]["trend_direction"] in an.TREND_DIRECTIONS
    dist = body["quality_distribution"]
    assert set(dist) >= {"excellent", "good", "fair", "poor"}
    assert sum(dist.values()) == N and dist["unscored"] == 5
    assert set(body["by_model"]) == {"tiny_llama", "smollm2_135m"}
    assert set(body["by_format"]) == {"int8", "int4", "int2"}
    assert body["tracking_enabled"] is True
    expected = json.loads(json.dumps(an.performance(records)))
    assert {k: body[k] for k in expected} == expected
    code, bad = server.get("/api/quantization/performance?trend_tolerance=nan")
    assert code == 422 and "trend_tolerance" in bad["detail"]
    code, bad = server.get("/api/quantization/performance?limit=5")
    assert code == 400 and "valid parameters" in bad["detail"]


def test_performance_trend_parameters(served):
    server, records, _ = served
    _, body = server.get("/api/quantization/performance?trend_window=10&trend_tolerance=50")
    assert body["trend_analysis"] == an.trend_analysis(records, window=10, tolerance=50.0)
    assert body["trend_analysis"]["trend_direction"] == "stable"


def test_points_facets_export(served):
    server, records, _ = served
    _, body = server.get("/api/quantization/points?model_name=smollm2_135m")
    pts = body["points"]
    assert len(pts) == sum(r["model_name"] == "smollm2_135m" for r in records)
    smol = [r for r in records if r["model_name"] == "smollm2_135m"]
    assert {p["id"] for p in pts if p["on_pareto_front"]} == set(an.pareto_front(smol))
    _, facets = server.get("/api/quantization/facets")
    assert facets["facets"]["quant_format"] == ["int2", "int4", "int8"]
    status, ctype, text = server.get_text("/api/quantization/export?format=csv&quant_format=int8")
    assert status == 200 and ctype.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == sum(r["quant_format"] == "int8" for r in records)
    _, ctype, text = server.get_text("/api/quantization/export?format=json")
    assert ctype.startswith("application/json") and len(json.loads(text)) == N
    code, bad = server.get("/api/quantization/export?format=xml")
    assert code == 422 and "csv, json" in bad["detail"]


def test_dashboard_page_and_assets(served):
    server, *_ = served
    status, ctype, page = server.get_text("/")
    assert status == 200 and ctype.startswith("text/html")
    assert 'src="/static/dashboard.js"' in page
    for asset, kind in (("dashboard.js", "javascript"), ("dashboard.css", "text/css")):
        status, ctype, text = server.get_text(f"/static/{asset}")
        assert status == 200 and kind in ctype and len(text) > 1000
    assert "http://" not in page.replace("http://www.w3.org", "")  # no CDN
    code, body = server.get("/api/nothing")
    assert code == 404
    code, body = server.get("/api/docs")  # Swagger UI would load a CDN: switched off
    assert code == 404


def test_missing_store_is_reported_and_not_created(tmp_path):
    path = tmp_path / "absent" / "store.sqlite"
    server = Server(path, tmp_path / "server.log")
    try:
        _, health = server.get("/health")
        assert health["tracking_enabled"] is False and health["total_results"] == 0
        _, body = server.get("/api/quantization/history")
        assert body["tracking_enabled"] is False and body["history"] == []
        _, perf = server.get("/api/quantization/performance")
        assert perf["total_loops"] == 0
        assert perf["trend_analysis"]["trend_direction"] == "insufficient_data"
    finally:
        server.stop()
    assert not path.exists() and not path.parent.exists()


def test_serve_binds_loopback_by_default():
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8765


_WRITER = """
import sys, time
sys.path.insert(0, sys.argv[3])
from _tracking_records import make_result
from runner.store import ResultStore
store, start, n = ResultStore(sys.argv[1]), int(sys.argv[2]), int(sys.argv[4])
for i in range(start, start + n):
    store.add(make_result(i, sweep_id="sweep-live", score=0.95))
    time.sleep(0.02)
"""


def test_reads_stay_consistent_while_a_writer_process_adds_records(tmp_path):
    store = ResultStore(tmp_path / "store.sqlite")
    for r in _records()[:10]:
        store.add(r)
    server = Server(store.path, tmp_path / "server.log")
    n_new = 80
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(store.path), "1000", str(ROOT / "tests"), str(n_new)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        totals = []
        deadline = time.monotonic() + 120
        while len(totals) < 400 and time.monotonic() < deadline:
            path = ("/api/quantization/history?limit=5", "/api/quantization/performance")
            code, body = server.get(path[len(totals) % 2])
            assert code == 200, body
            total = body["total_results"] if "summary" in body else body["total_loops"]
            if "summary" in body:
                assert body["summary"]["total_loops"] == total
                assert len(body["history"]) == min(5, total)
            else:
                assert sum(body["quality_distribution"].values()) == total
            totals.append(total)
            if writer.poll() is not None and len(totals) > 10:
                break
        assert writer.wait(timeout=120) == 0
        assert totals == sorted(totals), "a later read saw fewer records than an earlier one"
        assert totals[0] >= 10 and len(set(totals)) > 1, "the reads did not overlap the writes"
        _, final = server.get("/api/quantization/history?sweep_id=sweep-live")
        assert final["total_results"] == n_new
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        server.stop()


@pytest.mark.slow
def test_api_over_the_store_of_a_real_sweep(tmp_path):
    sweep = real_sweep()
    server = Server(sweep["store"], tmp_path / "server.log")
    try:
        _, body = server.get("/api/quantization/history")
        files = {r["id"]: r for r in sweep["results"]}
        assert body["total_results"] == len(files) == 3
        assert {r["id"]: r for r in body["history"]} == json.loads(json.dumps(files))
        _, perf = server.get("/api/quantization/performance")
        assert perf["by_format"].keys() == {"int8", "int4", "int2"}
        assert perf["trend_analysis"]["trend_direction"] == "declining"
    finally:
        server.stop()


def test_default_store_follows_the_runner_rule(monkeypatch, tmp_path):
    """The dashboard reads the store the runner writes (runner.config.PathsConfig.store)."""
    from omegaconf import OmegaConf

    from runner.config import PathsConfig
    from tracking import DEFAULT_STORE, default_store_path

    def runner_store():
        cfg = OmegaConf.create({"paths": OmegaConf.structured(PathsConfig)})
        return Path(cfg.paths.store).expanduser()

    monkeypatch.delenv("QUANTLOOP_STORE", raising=False)
    monkeypatch.delenv("QUANTLOOP_CACHE", raising=False)
    assert str(DEFAULT_STORE) == "~/.cache/quantloop/store.sqlite"
    assert default_store_path() == DEFAULT_STORE.expanduser() == runner_store()
    monkeypatch.setenv("QUANTLOOP_CACHE", str(tmp_path / "cache"))
    assert default_store_path() == tmp_path / "cache" / "store.sqlite" == runner_store()
    monkeypatch.setenv("QUANTLOOP_STORE", str(tmp_path / "s.sqlite"))
    assert default_store_path() == tmp_path / "s.sqlite" == runner_store()


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "tracking.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_export_and_report(served, tmp_path):
    _, records, store = served
    proc = _cli("export", "--store", str(store.path), "--format", "csv", "--quant-format", "int4")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    expected = an.history(records, limit=None, quant_format="int4")
    assert [r["id"] for r in rows] == [r["id"] for r in expected]
    out = tmp_path / "h.json"
    proc = _cli(
        "export", "--store", str(store.path), "--format", "json", "--limit", "3", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["id"] for r in json.loads(out.read_text())] == [r["id"] for r in records[-3:][::-1]]
    bad = _cli("export", "--store", str(store.path), "--status", "done")
    assert bad.returncode == 2 and "invalid choice: 'done'" in bad.stderr
    missing = _cli("export", "--store", str(tmp_path / "nope.sqlite"))
    assert missing.returncode == 1 and "no results store" in missing.stderr
    sweep = tmp_path / "sweep"
    for r in records[:4]:
        (sweep / r["id"]).mkdir(parents=True)
        (sweep / r["id"] / "result.json").write_text(json.dumps(r))
    proc = _cli("report", str(sweep))
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == sweep / "report.html"
    assert records[3]["id"] in (sweep / "report.html").read_text()
