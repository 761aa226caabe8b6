"""Read-only HTTP API and dashboard over the results store (needs the ``dashboard`` extra).

``create_app(store_path)`` builds the app; ``python -m tracking.cli serve`` runs it with uvicorn
on 127.0.0.1. Endpoints (all GET):

* ``/health``
* ``/api/quantization/history``  ``limit`` (1..1000, default 20), ``offset``, ``order``
  (newest|oldest), filters ``model_name quant_format method sweep_id status``, ``trend_window``
* ``/api/quantization/performance``  filters, ``trend_window``, ``trend_tolerance``
* ``/api/quantization/points``  filters: compact per-job points for the charts
* ``/api/quantization/facets``  the distinct values of each filter field
* ``/api/quantization/export``  ``format`` (csv|json) and filters
* ``/`` the dashboard page, ``/static/*`` its assets

Bad query parameters (unknown name, wrong type, out of range, unknown choice) get a 4xx answer
whose ``detail`` names the parameter and the valid values. An empty value (``offset=``) means
"not given".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from tracking import analytics as an
from tracking import default_store_path

STATIC_DIR = Path(__file__).parent / "static"
MAX_LIMIT = 1000


class QueryError(Exception):
    """A bad query parameter: answered with ``status`` and ``{"detail": message}``."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------
# query-parameter parsing: one small parser per kind, each raising QueryError with a clear message

Parser = Callable[[str, str], Any]


def _int(lo: int, hi: int) -> Parser:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise QueryError(f"{name} must be an integer in [{lo}, {hi}]; got {raw!r}") from None
        if not lo <= value <= hi:
            raise QueryError(f"{name} must be an integer in [{lo}, {hi}]; got {value}")
        return value

    return parse


def _float(lo: float, hi: float) -> Parser:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise QueryError(f"{name} must be a number in [{lo}, {hi}]; got {raw!r}") from None
        if not lo <= value <= hi:  # also rejects nan
            raise QueryError(f"{name} must be a number in [{lo}, {hi}]; got {raw!r}")
        return value

    return parse


def _choice(*choices: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        if raw not in choices:
            raise QueryError(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
        return raw

    return parse


def _text(name: str, raw: str) -> str:
    if len(raw) > 500:
        raise QueryError(f"{name} is too long ({len(raw)} characters; at most 500)")
    return raw


FILTER_PARSERS: dict[str, Parser] = {
    "model_name": _text,
    "quant_format": _text,
    "method": _text,
    "sweep_id": _text,
    "status": _choice(*an.STATUSES),
}
TREND_PARSERS: dict[str, Parser] = {"trend_window": _int(2, 100_000)}
HISTORY_PARSERS = {
    "limit": _int(1, MAX_LIMIT),
    "offset": _int(0, 10**9),
    "order": _choice("newest", "oldest"),
    **FILTER_PARSERS,
    **TREND_PARSERS,
}
PERFORMANCE_PARSERS = {
    **FILTER_PARSERS,
    **TREND_PARSERS,
    "trend_tolerance": _float(0.0, 1000.0),
}
EXPORT_PARSERS = {"format": _choice(*an.EXPORT_FORMATS), **FILTER_PARSERS}


def parse_query(request: Request, parsers: dict[str, Parser]) -> dict[str, Any]:
    """Parse the query string with ``parsers``; unknown names are a 400, bad values a 422."""
    unknown = sorted(set(request.query_params) - set(parsers))
    if unknown:
        raise QueryError(
            f"unknown query parameter(s) {unknown}; valid parameters: {', '.join(parsers)}",
            status=400,
        )
    out: dict[str, Any] = {}
    for name, parser in parsers.items():
        values = request.query_params.getlist(name)
        if len(values) > 1:
            raise QueryError(f"{name} given {len(values)} times; give it at most once", 400)
        if values and values[0] != "":
            out[name] = parser(name, values[0])
    return out


def _filters(params: dict[str, Any]) -> dict[str, Any]:
    return {k: params[k] for k in an.FILTERS if k in params}


# ---------------------------------------------------------------------------------------------
# the app


class _StoreReader:
    """Opens the store lazily, only once its file exists (the app never creates one)."""

    def __init__(self, path: Path):
        self.path = path
        self._store: Any = None

    @property
    def enabled(self) -> bool:
        return self.path.is_file()

    def _call(self, what: str, /, **kwargs: Any) -> Any:
        if self._store is None:
            from runner.store import ResultStore

            self._store = ResultStore(self.path)
        try:
            return getattr(self._store, what)(**kwargs)
        except sqlite3.Error as exc:
            raise QueryError(f"results store {self.path} is unreadable: {exc}", 503) from exc

    def records(self, **filters: Any) -> list[dict[str, Any]]:
        return self._call("query", newest_first=False, **filters) if self.enabled else []

    def count(self) -> int:
        return self._call("count") if self.enabled else 0


def create_app(store_path: str | Path | None = None) -> FastAPI:
    """The dashboard app over the store at ``store_path`` (default: :func:`default_store_path`)."""
    path = Path(store_path).expanduser() if store_path else default_store_path()
    reader = _StoreReader(path)
    # No Swagger/ReDoc pages: they load their assets from a CDN. The schema stays at /openapi.json.
    app = FastAPI(title="quantloop dashboard", docs_url=None, redoc_url=None)
    app.state.store_path = path

    @app.exception_handler(QueryError)
    async def _query_error(_: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    def ok(body: dict[str, Any]) -> JSONResponse:
        return JSONResponse(an.finite(body), headers={"Cache-Control": "no-store"})

    @app.get("/health")
    def health(request: Request) -> JSONResponse:
        parse_query(request, {})
        return ok(
            {
                "status": "ok",
                "tracking_enabled": reader.enabled,
                "store": str(path),
                "total_results": reader.count(),
            }
        )

    @app.get("/api/quantization/history")
    def history(request: Request) -> JSONResponse:
        q = parse_query(request, HISTORY_PARSERS)
        filters = _filters(q)
        records = reader.records(**filters)
        limit, offset = q.get("limit", 20), q.get("offset", 0)
        page = an.history(
            records, limit=limit, offset=offset, newest_first=q.get("order", "newest") == "newest"
        )
        window = q.get("trend_window", an.DEFAULT_TREND_WINDOW)
        return ok(
            {
                "summary": an.summary(records, trend_window=window),
                "history": page,
                "total_results": len(records),
                "limit": limit,
                "offset": offset,
                "filters": filters,
                "tracking_enabled": reader.enabled,
            }
        )

    @app.get("/api/quantization/performance")
    def performance(request: Request) -> JSONResponse:
        q = parse_query(request, PERFORMANCE_PARSERS)
        records = reader.records(**_filters(q))
        body = an.performance(
            records,
            trend_window=q.get("trend_window", an.DEFAULT_TREND_WINDOW),
            trend_tolerance=q.get("trend_tolerance", an.DEFAULT_TREND_TOLERANCE),
        )
        return ok({**body, "filters": _filters(q), "tracking_enabled": reader.enabled})

    @app.get("/api/quantization/points")
    def points(request: Request) -> JSONResponse:
        q = parse_query(request, FILTER_PARSERS)
        records = reader.records(**_filters(q))
        return ok({"points": an.points(records), "tracking_enabled": reader.enabled})

    @app.get("/api/quantization/facets")
    def facets(request: Request) -> JSONResponse:
        parse_query(request, {})
        return ok({"facets": an.facets(reader.records()), "tracking_enabled": reader.enabled})

    @app.get("/api/quantization/export")
    def export(request: Request) -> Response:
        q = parse_query(request, EXPORT_PARSERS)
        fmt = q.get("format", "csv")
        records = an.sort_by_time(reader.records(**_filters(q)), newest_first=True)
        media = {"csv": "text/csv; charset=utf-8", "json": "application/json"}[fmt]
        return Response(
            an.export(records, fmt),
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="quantloop-history.{fmt}"'},
        )

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    return app
