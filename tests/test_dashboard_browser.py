"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by playwright).

Checks what a person sees: the page loads without script errors, the history table has the
right rows and colour bands, the cards equal the API's numbers before and after a refresh while
records arrive, paging/filters/auto-refresh work, and the static sweep report opens from disk.
Screenshots go to ``test-artifacts/``. Skipped (with the reason) without chromium or playwright.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest
from _tracking_records import ROOT, Server, make_result, real_sweep

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
pytest.importorskip("fastapi", reason="the dashboard extra (fastapi, uvicorn) is not installed")

from runner.store import ResultStore  # noqa: E402
from tracking import analytics as an  # noqa: E402
from tracking.report import write_sweep_report  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts"
N = 27


def _score(i: int) -> float:
    """Scores on and around each band boundary (0.9, 0.8, 0.6) plus a clearly poor one."""
    return round((0.9, 0.8, 0.6, 0.31)[i % 4] + 0.01 * (i % 3) - 0.01, 2)


def _records(start: int, n: int, sweep: str = "sweep-a") -> list[dict]:
    out = []
    for i in range(start, start + n):
        failed = i % 10 == 7
        out.append(
            make_result(
                i,
                model_name=("tiny_llama", "smollm2_135m")[i % 2],
                quant_format=("int8", "int4", "int3", "int2")[i % 4],
                size_mb=(54.0, 52.0, 51.5, 51.0)[i % 4] * (1 + (i % 2)),
                bits_per_weight=(8.5, 4.5, 3.5, 2.5)[i % 4],
                status="failed" if failed else "ok",
                score=None if failed else _score(i),
                sweep_id=sweep,
                **({"errors": ["oom"], "error_count": 1} if failed else {}),
            )
        )
    return out


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        user_data = tempfile.mkdtemp(prefix="quantloop-chromium-")
        args = [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ]
        ctx = p.chromium.launch_persistent_context(
            user_data,
            executable_path=CHROMIUM,
            headless=True,
            args=args,
            viewport={"width": 1280, "height": 1000},
        )
        yield ctx
        ctx.close()
        shutil.rmtree(user_data, ignore_errors=True)


@pytest.fixture
def page(browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
    page.errors = errors
    yield page
    page.close()


def _wait_refresh(page, n: int) -> None:
    page.wait_for_selector(f"body[data-refresh-count='{n}']", timeout=20_000)


def _card(page, name: str) -> str:
    return page.get_attribute(f"#card-{name}", "data-value")


def _check_cards_match(page, summary: dict, trend: str) -> None:
    assert int(_card(page, "total-loops")) == summary["total_loops"]
    assert float(_card(page, "success-rate")) == summary["success_rate"]
    assert float(_card(page, "avg-score")) == summary["avg_score"]
    assert float(_card(page, "avg-top1")) == summary["avg_top1_agreement"]
    assert float(_card(page, "avg-size")) == summary["avg_size_mb"]
    assert float(_card(page, "avg-bpw")) == summary["avg_bits_per_weight"]
    assert _card(page, "trend") == trend == summary["trend_direction"]
    assert page.text_content("#card-total-loops") == str(summary["total_loops"])
    assert page.text_content("#card-success-rate") == f"{100 * summary['success_rate']:.1f}%"


def _check_rows(page, history: list[dict]) -> None:
    rows = page.query_selector_all("#history-body tr")
    assert len(rows) == len(history)
    for row, rec in zip(rows, history, strict=True):
        assert row.get_attribute("data-id") == rec["id"]
        score = rec["score"] if rec["status"] == "ok" else None
        band = an.quality_band(score)
        assert row.get_attribute("data-band") == band
        cell = row.query_selector("td.band")
        assert f"band-{band}" in cell.get_attribute("class")
        colour = cell.evaluate("c => getComputedStyle(c).backgroundColor")
        if band != "unscored":
            hex_rgb = an.BAND_COLORS[band].lstrip("#")
            rgb = tuple(int(hex_rgb[i : i + 2], 16) for i in (0, 2, 4))
            assert colour == f"rgb({rgb[0]}, {rgb[1]}, {rgb[2]})"
        mark = row.query_selector("td.pass").text_content()
        assert mark == ("\u2714 pass" if rec["passed_threshold"] else "\u2718 fail")


def test_dashboard_in_chromium(tmp_path, page):
    store = ResultStore(tmp_path / "store.sqlite")
    for r in _records(0, N):
        store.add(r)
    server = Server(store.path, tmp_path / "server.log")
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.clock.install()  # lets the test move time to fire the 60 s auto-refresh
        page.goto(server.base + "/")
        _wait_refresh(page, 1)
        _, api = server.get("/api/quantization/history")
        _, perf = server.get("/api/quantization/performance")
        assert api["total_results"] == N
        _check_cards_match(page, api["summary"], perf["trend_analysis"]["trend_direction"])
        _check_rows(page, api["history"])
        assert len(api["history"]) == 20
        dist = perf["quality_distribution"]
        for band, count in dist.items():
            assert int(page.get_attribute(f"#dist-{band}", "data-count")) == count
        front = page.query_selector_all("#chart-pareto circle.on-front")
        assert {c.get_attribute("data-id") for c in front} == set(perf["pareto_front"])
        assert len(page.query_selector_all("#chart-trend circle.pt")) == N - dist["unscored"]
        assert page.query_selector_all("#by-format tbody tr")
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # New jobs arrive; the refresh button brings cards and table up to date.
        for r in _records(N, 6, sweep="sweep-b"):
            store.add(r)
        page.click("#refresh-btn")
        _wait_refresh(page, 2)
        _, api = server.get("/api/quantization/history")
        _, perf = server.get("/api/quantization/performance")
        assert api["total_results"] == N + 6
        _check_cards_match(page, api["summary"], perf["trend_analysis"]["trend_direction"])
        _check_rows(page, api["history"])
        assert page.get_attribute("#history-body tr", "data-id") == f"job-{N + 5:04d}"

        # The next page holds the remaining rows.
        page.click("#next-page")
        _wait_refresh(page, 3)
        _, api2 = server.get("/api/quantization/history?offset=20")
        _check_rows(page, api2["history"])
        assert len(api2["history"]) == N + 6 - 20

        # A filter narrows table, cards and charts, and shows in the URL.
        page.select_option("select[data-filter='quant_format']", "int2")
        _wait_refresh(page, 4)
        _, f = server.get("/api/quantization/history?quant_format=int2")
        _check_rows(page, f["history"])
        assert int(_card(page, "total-loops")) == f["total_results"]
        assert "quant_format=int2" in page.url

        # Auto-refresh: 60 s later the page fetches again by itself.
        page.clock.run_for(61_000)
        _wait_refresh(page, 5)
        assert not page.errors, page.errors
        # Every asset and call is local: no CDN, nothing outside the served app.
        assert requested and all(u.startswith(server.base + "/") for u in requested), requested
    finally:
        server.stop()


def test_static_report_opens_from_disk(tmp_path, page):
    sweep_dir = tmp_path / "sweep-a"
    results = _records(0, N)
    path = write_sweep_report(sweep_dir, results)
    assert path == sweep_dir / "report.html"
    html = path.read_text()
    assert "/static/" not in html and "src=" not in html  # everything inline
    page.route(
        "**/*",
        lambda route: (
            route.abort() if not route.request.url.startswith("file:") else route.continue_()
        ),
    )  # prove it needs no network
    page.goto(path.as_uri())
    page.wait_for_selector("#history-body tr")
    rows = page.query_selector_all("#history-body tr")
    assert len(rows) == N  # the report lists every job of the sweep
    summary = an.summary(results)
    _check_cards_match(page, summary, summary["trend_direction"])
    _check_rows(page, an.sort_by_time(results))
    assert not page.is_visible("#refresh-btn")
    front = page.query_selector_all("#chart-pareto circle.on-front")
    assert {c.get_attribute("data-id") for c in front} == set(an.pareto_front(results))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sweep_report.png"), full_page=True)
    assert not page.errors, page.errors


@pytest.mark.slow
def test_report_of_a_real_sweep_in_chromium(page):
    """The report of run.py's tiny_llama int8/int4/int2 sweep, opened from disk."""
    sweep = real_sweep()
    path = write_sweep_report(sweep["sweep_dir"], sweep["results"])
    page.goto(path.as_uri())
    page.wait_for_selector("#history-body tr")
    results = sweep["results"]
    _check_rows(page, an.sort_by_time(results))
    summary = an.summary(results)
    _check_cards_match(page, summary, "declining")
    fmts = [r.get_attribute("data-name") for r in page.query_selector_all("#by-format tbody tr")]
    assert fmts == ["int2", "int4", "int8"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "real_sweep_report.png"), full_page=True)
    assert not page.errors, page.errors
