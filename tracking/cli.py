"""``python -m tracking.cli``: serve the dashboard, export history, build a sweep report.

    python -m tracking.cli serve [--store PATH] [--host 127.0.0.1] [--port 8765]
    python -m tracking.cli export --format csv|json [--store PATH] [--output FILE]
                                  [--model-name M] [--quant-format F] [--method X]
                                  [--sweep-id S] [--status ok|failed] [--limit N]
    python -m tracking.cli report SWEEP_DIR

The store defaults to ``$QUANTLOOP_STORE`` or ``~/.cache/quantloop/store.sqlite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tracking import analytics, default_store_path

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        type=Path,
        default=None,
        help="results store (SQLite); default $QUANTLOOP_STORE or ~/.cache/quantloop/store.sqlite",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tracking.cli", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the dashboard and HTTP API")
    _store_arg(serve)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free)")

    export = sub.add_parser("export", help="write the (filtered) history as CSV or JSON")
    _store_arg(export)
    export.add_argument("--format", choices=sorted(analytics.EXPORT_FORMATS), default="csv")
    export.add_argument("--output", "-o", type=Path, default=None, help="file (default stdout)")
    for name in analytics.FILTERS:
        kwargs = {"choices": analytics.STATUSES} if name == "status" else {}
        export.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **kwargs)
    export.add_argument("--limit", type=int, default=None, help="newest N records only")

    report = sub.add_parser("report", help="write report.html for a sweep directory")
    report.add_argument("sweep_dir", type=Path)
    return parser


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from tracking.api import create_app
    except ImportError as exc:
        print(
            f"serve needs the dashboard extra: pip install -e '.[dashboard]' ({exc})",
            file=sys.stderr,
        )
        return 2
    if not 0 <= args.port <= 65535:
        print(f"--port must be in [0, 65535]; got {args.port}", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK:
        print(f"warning: serving on {args.host}, reachable from other hosts", file=sys.stderr)
    store = args.store or default_store_path()
    print(f"quantloop dashboard: store {store}", file=sys.stderr)
    uvicorn.run(create_app(store), host=args.host, port=args.port, log_level="info")
    return 0


def _export(args: argparse.Namespace) -> int:
    from runner.store import ResultStore

    store_path = (args.store or default_store_path()).expanduser()
    if not store_path.is_file():
        print(f"no results store at {store_path}", file=sys.stderr)
        return 1
    if args.limit is not None and args.limit < 1:
        print(f"--limit must be >= 1; got {args.limit}", file=sys.stderr)
        return 2
    filters = {k: getattr(args, k) for k in analytics.FILTERS}
    records = analytics.history(ResultStore(store_path).query(**filters), limit=args.limit)
    text = analytics.export(records, args.format)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {len(records)} record(s) to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _report(args: argparse.Namespace) -> int:
    from tracking.report import load_results, write_sweep_report

    if not args.sweep_dir.is_dir():
        print(f"sweep dir {args.sweep_dir} does not exist", file=sys.stderr)
        return 1
    results = load_results(args.sweep_dir)
    if not results:
        print(f"no result.json under {args.sweep_dir}", file=sys.stderr)
        return 1
    print(write_sweep_report(args.sweep_dir, results))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"serve": _serve, "export": _export, "report": _report}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
