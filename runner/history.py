"""List job history from the local results store.

python -m runner.history [--store PATH] [--limit 20] [--model-name X] [--quant-format Y]
                         [--method Z] [--sweep-id S] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runner.store import FILTERS, ResultStore, default_store_path


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_rows(rows: list[dict]) -> str:
    head = f"{'time':19}  {'model':16} {'format':8} {'method':6} {'MB':>9} {'bpw':>6} "
    head += f"{'PPL':>10} {'KLD':>8} {'top1%':>6}  pass  sweep"
    lines = [head]
    for r in rows:
        m = r.get("metrics", {})
        lines.append(
            f"{r['timestamp'][:19]:19}  {r['model_name'][:16]:16} {r['quant_format'][:8]:8} "
            f"{r['method'][:6]:6} {_fmt(r.get('size_mb'), '9.2f')} "
            f"{_fmt(r.get('bits_per_weight'), '6.3f')} {_fmt(m.get('perplexity'), '10.4f')} "
            f"{_fmt(m.get('kld_mean'), '8.5f')} {_fmt(m.get('top1_agreement'), '6.2f')}  "
            f"{'yes ' if r.get('passed_threshold') else 'no  '}  {r.get('sweep_id') or '-'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runner.history", description=__doc__.strip())
    p.add_argument("--store", type=Path, default=default_store_path())
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true", help="print full records as JSON")
    for f in FILTERS:
        p.add_argument(f"--{f.replace('_', '-')}", dest=f)
    args = p.parse_args(argv)
    if args.limit < 1:
        p.error("--limit must be >= 1")
    if not args.store.exists():
        print(f"no results store at {args.store} yet: run a job first", file=sys.stderr)
        return 1
    filters = {f: getattr(args, f) for f in FILTERS}
    rows = ResultStore(args.store).query(limit=args.limit, **filters)
    print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
