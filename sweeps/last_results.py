"""Print the most recent Pass-1 summary and selection decision.

    python -m sweeps.last_results [--sweeps-root outputs/sweeps] [--sweep DIR] [--json]

The most recent sweep is the one whose ``pass1_summary_*.json`` or ``selection.json`` was
written last. Exit status 1 when there is none.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from sweeps.progressive import SUMMARY_PREFIX
from sweeps.selection import SELECTION_JSON


def default_sweeps_root() -> Path:
    return Path(os.environ.get("QUANTLOOP_OUTPUTS", "outputs")) / "sweeps"


def _decision_files(root: Path) -> list[Path]:
    patterns = (f"{SUMMARY_PREFIX}*.json", SELECTION_JSON, f"*/{SUMMARY_PREFIX}*.json")
    found = {p for pattern in patterns for p in root.glob(pattern)}
    found |= set(root.glob(f"*/{SELECTION_JSON}"))
    return [p for p in found if p.is_file()]


def latest_sweep(root: str | Path) -> Path | None:
    """The sweep directory (``root`` itself or a child) with the newest decision file."""
    files = _decision_files(Path(root))
    if not files:
        return None
    return max(files, key=lambda p: p.stat().st_mtime).parent


def latest_summary(sweep_dir: str | Path) -> Path | None:
    summaries = sorted(Path(sweep_dir).glob(f"{SUMMARY_PREFIX}*.json"), key=_mtime)
    return summaries[-1] if summaries else None


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _fmt(value: Any, spec: str = ".4g") -> str:
    return format(value, spec) if isinstance(value, int | float) else "–"


def format_summary(summary: dict[str, Any]) -> list[str]:
    stats = summary["statistics"]
    lines = [
        f"Pass-1: {summary['message']} ({summary['stopped_because']})",
        f"  ladder {summary['ladder_key']}: {' → '.join(summary['ladder'])}",
        f"  levels tried {stats['levels_tried']}/{stats['levels_planned']}, passed "
        f"{stats['levels_passed']}, failed jobs {stats['jobs_failed']}, total "
        f"{_fmt(stats['total_seconds'], '.1f')} s",
    ]
    for it in summary["iterations"]:
        c = it.get("candidate") or {}
        verdict = "PASS" if it["passed"] else "fail"
        why = "" if it["passed"] else "  " + "; ".join(it["reasons"])
        lines.append(
            f"  [{it['index']}] {it['level']:<8} {verdict}  size {_fmt(c.get('size_mb'))} MB  "
            f"composite {_fmt(c.get('composite_score'))}{why}"
        )
    best = summary.get("best")
    if best:
        lines.append(
            f"  best: {summary['best_level']} ({best['id']}, {_fmt(best.get('size_mb'))} MB, "
            f"score/GB {_fmt(best.get('score_per_gb'))}) — {summary['best_rule']}"
        )
    return lines


def format_selection(decision: dict[str, Any]) -> list[str]:
    lines = [
        f"Selection ({decision['strategy']}, primary {decision['primary_metric']}): target "
        f"{'achieved' if decision['target_achieved'] else 'not achieved'}"
    ]
    for name, model in decision["models"].items():
        lines.append(f"  {name}: chosen {model['chosen_id'] or 'none'} — {model['reason']}")
        lines.append(f"    rule: {model['rule']}")
        lines.append(f"    Pareto front: {', '.join(model['pareto_front']) or '–'}")
    eff = decision.get("efficiency") or {}
    if eff.get("chosen_score_per_gb") is not None:
        lines.append(f"  chosen score per GB: {_fmt(eff['chosen_score_per_gb'])}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.last_results", description=__doc__)
    parser.add_argument("--sweeps-root", type=Path, default=default_sweeps_root())
    parser.add_argument("--sweep", type=Path, default=None, help="a given sweep directory")
    parser.add_argument("--json", action="store_true", help="print the raw JSON instead")
    args = parser.parse_args(argv)
    sweep = args.sweep or latest_sweep(args.sweeps_root)
    if sweep is None or not sweep.is_dir():
        where = args.sweep or args.sweeps_root
        print(f"no Pass-1 summary or selection found under {where}", file=sys.stderr)
        return 1
    summary_path = latest_summary(sweep)
    selection_path = sweep / SELECTION_JSON
    summary = json.loads(summary_path.read_text()) if summary_path else None
    decision = json.loads(selection_path.read_text()) if selection_path.is_file() else None
    if summary is None and decision is None:
        print(f"no Pass-1 summary or selection in {sweep}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"sweep_dir": str(sweep), "pass1": summary, "selection": decision}))
        return 0
    print(f"sweep: {sweep}")
    if summary is not None:
        print(f"summary: {summary_path.name}")
        print("\n".join(format_summary(summary)))
    if decision is not None:
        print("\n".join(format_selection(decision)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
