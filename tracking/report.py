"""A self-contained HTML report for one sweep: the dashboard page with its data inline.

``write_sweep_report(sweep_dir, results)`` writes ``<sweep_dir>/report.html``. The file carries
its CSS, JS and data; it needs no server and no network (open it straight from disk).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tracking import analytics as an

STATIC_DIR = Path(__file__).parent / "static"
REPORT_NAME = "report.html"
_CSS_TAG = '<link rel="stylesheet" href="/static/dashboard.css">'
_JS_TAG = '<script src="/static/dashboard.js"></script>'


def _script_json(obj: Any) -> str:
    """JSON that is safe inside a <script> element (no ``</script>``, no ``<!--``)."""
    text = json.dumps(an.finite(obj), sort_keys=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def report_data(results: Sequence[dict[str, Any]], title: str, subtitle: str) -> dict[str, Any]:
    """The four bodies the dashboard renders, computed over all ``results`` (no paging)."""
    results = list(results)
    newest_first = an.sort_by_time(results, newest_first=True)
    return {
        "title": title,
        "subtitle": subtitle,
        "history": {
            "summary": an.summary(results),
            "history": newest_first,
            "total_results": len(results),
            "offset": 0,
            "tracking_enabled": True,
        },
        "performance": an.performance(results),
        "points": {"points": an.points(results)},
    }


def render_report(results: Sequence[dict[str, Any]], title: str, subtitle: str = "") -> str:
    """The report as one HTML string."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    css = (STATIC_DIR / "dashboard.css").read_text(encoding="utf-8")
    js = (STATIC_DIR / "dashboard.js").read_text(encoding="utf-8")
    for tag in (_CSS_TAG, _JS_TAG):
        if tag not in page:
            raise RuntimeError(f"dashboard page lost its {tag!r} tag; the report needs it")
    data = _script_json(report_data(results, title, subtitle))
    page = page.replace(
        "<title>quantloop dashboard</title>", f"<title>{html.escape(title)}</title>"
    )
    page = page.replace(_CSS_TAG, f"<style>\n{css}</style>")
    page = page.replace(
        _JS_TAG,
        f"<script>window.QUANTLOOP_STATIC = {data};</script>\n<script>\n{js}</script>",
    )
    return page


def write_sweep_report(sweep_dir: str | Path, results: Sequence[dict[str, Any]]) -> Path:
    """Write ``<sweep_dir>/report.html`` for the sweep's job ``results``; returns its path."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    sweep_ids = sorted({str(r.get("sweep_id")) for r in results if r.get("sweep_id")})
    name = ", ".join(sweep_ids) or sweep_dir.name
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"{len(results)} job(s) · sweep dir {sweep_dir.name} · generated {now}"
    out = sweep_dir / REPORT_NAME
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(render_report(results, f"quantloop sweep report · {name}", subtitle), "utf-8")
    tmp.replace(out)
    return out


def load_results(root: str | Path) -> list[dict[str, Any]]:
    """Every ``result.json`` under ``root`` (for building a report after the fact)."""
    return [json.loads(p.read_text()) for p in sorted(Path(root).rglob("result.json"))]
