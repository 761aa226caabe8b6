"""Human preference collection: an interactive rating CLI, rating import, aggregation.

``quantloop-human rate --responses pass2/responses.json --session ratings/alice.json --rater alice``
shows each prompt with the candidates' responses side by side, anonymised as "Response A, B, ..."
in an order shuffled by ``--seed`` (per prompt), and asks for 1-5 ratings on the weighted
criteria (believability 0.25, connection 0.30, expressive strength 0.25, appropriateness 0.20)
plus an optional comment. The session file is rewritten atomically after every answer; running
the same command again resumes where it stopped (``q`` or end of input stops cleanly).

``quantloop-human import ratings.csv --session ratings/panel.json [--responses ...]`` imports
ratings from CSV or JSONL (columns: rater, prompt_id, candidate, one column per criterion,
optional comment). ``quantloop-human summary --session ...`` prints the aggregated scores.

Aggregation: weighted = sum(weight * rating); a candidate's human score is the mean over complete
ratings of (weighted - 1) / 4, in [0, 1]. Pairwise preferences for Bradley-Terry come from the
same rater on the same prompt (higher weighted rating wins, equal = tie).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import difflib
import itertools
import json
import os
import random
import shutil
import string
import sys
import textwrap
from pathlib import Path
from typing import Any, TextIO

SCHEMA = "quantloop.human/1"
SCALE = (1, 5)
DEFAULT_CRITERIA = {
    "believability": 0.25,
    "connection": 0.30,
    "expressive_strength": 0.25,
    "appropriateness": 0.20,
}
CRITERIA_HELP = {
    "believability": "does it sound like a real, sincere person?",
    "connection": "does it engage with what the person said and felt?",
    "expressive_strength": "is the emotional expression vivid and specific?",
    "appropriateness": "is the tone and advice right for the situation?",
}


class HumanInputError(ValueError):
    """Bad ratings input (the message names the row, the field and the valid values)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def check_criteria(criteria: dict[str, float]) -> dict[str, float]:
    if not criteria or any(w < 0 for w in criteria.values()) or sum(criteria.values()) <= 0:
        raise HumanInputError("criteria weights must be >= 0 with a positive sum")
    total = sum(criteria.values())
    return {k: v / total for k, v in criteria.items()}


def weighted_rating(scores: dict[str, int], criteria: dict[str, float]) -> float:
    w = check_criteria(criteria)
    return sum(w[c] * scores[c] for c in w)


# -- session files -----------------------------------------------------------------------------
def save_session(path: Path, session: dict[str, Any]) -> None:
    """Atomic: write a temp file in the same directory, fsync, rename over the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    session["updated"] = _now()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(session, fh, indent=2, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_session(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("schema") != SCHEMA:
        raise HumanInputError(f"{path}: not a ratings session (schema {data.get('schema')!r})")
    return data


def load_responses(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    for key in ("prompt_set", "candidates"):
        if key not in data:
            raise HumanInputError(
                f"{path}: responses file needs '{key}' (written by quantloop-pass2)"
            )
    return data


def new_session(
    responses: dict[str, Any], rater: str, seed: int, criteria: dict[str, float]
) -> dict:
    """A session with a fixed, seeded presentation order (prompts and anonymous labels)."""
    rng = random.Random(seed)
    prompts = [p["id"] for p in responses["prompt_set"]["prompts"]]
    rng.shuffle(prompts)
    cands = sorted(responses["candidates"])
    if len(cands) > 26:
        raise HumanInputError("at most 26 candidates can be rated side by side")
    order = []
    for pid in prompts:
        shuffled = cands[:]
        rng.shuffle(shuffled)
        order.append(
            {"prompt_id": pid, "labels": dict(zip(string.ascii_uppercase, shuffled, strict=False))}
        )
    return {
        "schema": SCHEMA,
        "rater": rater,
        "seed": seed,
        "criteria": criteria,
        "prompt_set": {k: responses["prompt_set"][k] for k in ("name", "sha256")},
        "created": _now(),
        "order": order,
        "ratings": [],
    }


def _find(session, rater, pid, cand) -> dict[str, Any] | None:
    for r in session["ratings"]:
        if (r["rater"], r["prompt_id"], r["candidate"]) == (rater, pid, cand):
            return r
    return None


# -- interactive rating ------------------------------------------------------------------------
class _Stop(Exception):
    pass


def _columns(blocks: list[tuple[str, str]], width: int) -> str:
    """Render (title, text) blocks side by side if they fit, else one under another."""
    gap = 3
    n = len(blocks)
    col = (width - gap * (n - 1)) // max(n, 1)
    if col < 28:
        parts = []
        for title, text in blocks:
            parts.append(f"--- {title} ---\n" + "\n".join(textwrap.wrap(text, width) or [""]))
        return "\n\n".join(parts)
    wrapped = [[f"--- {t} ---".ljust(col)] + textwrap.wrap(x, col) for t, x in blocks]
    rows = itertools.zip_longest(*wrapped, fillvalue="")
    return "\n".join((" " * gap).join(c.ljust(col) for c in row).rstrip() for row in rows)


def rate_interactive(
    session_path: Path,
    responses: dict[str, Any],
    rater: str,
    seed: int = 0,
    criteria: dict[str, float] | None = None,
    inp: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    width: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) a rating session; returns {status, answered, remaining, session}."""
    criteria = dict(criteria or DEFAULT_CRITERIA)
    check_criteria(criteria)
    session_path = Path(session_path)
    if session_path.exists():
        session = load_session(session_path)
        if session["prompt_set"]["sha256"] != responses["prompt_set"]["sha256"]:
            raise HumanInputError(f"{session_path} was started on a different prompt set")
        criteria = session["criteria"]
        rater = session["rater"]
        resumed = True
    else:
        session = new_session(responses, rater, seed, criteria)
        save_session(session_path, session)
        resumed = False
    width = width or shutil.get_terminal_size((100, 24)).columns
    prompts = {p["id"]: p for p in responses["prompt_set"]["prompts"]}
    texts = responses["candidates"]
    lo, hi = SCALE
    answered = 0

    def ask(question: str) -> str:
        out.write(question)
        out.flush()
        line = inp.readline()
        if line == "":
            raise _Stop("end of input")
        line = line.strip()
        if line.lower() in ("q", "quit"):
            raise _Stop("quit")
        return line

    total = sum(len(o["labels"]) for o in session["order"])
    done = sum(1 for r in session["ratings"] if r["rater"] == rater and r.get("complete"))
    if resumed:
        out.write(f"Resuming session {session_path.name}: {done}/{total} ratings done.\n")
    out.write(
        f"Ratings {lo}-{hi}; 'q' saves and quits. Criteria: "
        + ", ".join(f"{c} {w:.2f}" for c, w in criteria.items())
        + "\n"
    )
    try:
        for n, item in enumerate(session["order"], 1):
            pid, labels = item["prompt_id"], item["labels"]
            pending = [
                (lab, c)
                for lab, c in labels.items()
                if not (_find(session, rater, pid, c) or {}).get("complete")
            ]
            if not pending:
                continue
            p = prompts[pid]
            out.write(
                f"\n=== Prompt {n}/{len(session['order'])}"
                + (f" [{p.get('emotion')}]" if p.get("emotion") else "")
                + " ===\n"
            )
            out.write("\n".join(textwrap.wrap(p["text"], width)) + "\n\n")
            out.write(
                _columns([(f"Response {lab}", texts[c][pid]) for lab, c in labels.items()], width)
                + "\n"
            )
            for lab, cand in pending:
                rec = _find(session, rater, pid, cand)
                if rec is None:
                    rec = {
                        "rater": rater,
                        "prompt_id": pid,
                        "candidate": cand,
                        "label": lab,
                        "scores": {},
                        "comment": "",
                        "complete": False,
                        "source": "interactive",
                    }
                    session["ratings"].append(rec)
                out.write(f"\nRate Response {lab}:\n")
                for crit in criteria:
                    if crit in rec["scores"]:
                        continue
                    while True:
                        ans = ask(f"  {crit} ({CRITERIA_HELP.get(crit, '')}) [{lo}-{hi}]: ")
                        if ans.isdigit() and lo <= int(ans) <= hi:
                            break
                        out.write(f"    please enter a whole number from {lo} to {hi} (or q)\n")
                    rec["scores"][crit] = int(ans)
                    rec["timestamp"] = _now()
                    save_session(session_path, session)
                    answered += 1
                rec["comment"] = ask("  comment (optional, Enter to skip): ")
                rec["complete"] = True
                rec["weighted"] = weighted_rating(rec["scores"], criteria)
                rec["timestamp"] = _now()
                save_session(session_path, session)
                answered += 1
        status = "complete"
    except _Stop as stop:
        save_session(session_path, session)
        status = "interrupted"
        out.write(f"\nSaved ({stop}). Run the same command to resume.\n")
    done = sum(1 for r in session["ratings"] if r["rater"] == rater and r.get("complete"))
    if status == "complete":
        out.write(f"\nAll {total} ratings done; saved to {session_path}.\n")
    return {
        "status": status,
        "answered": answered,
        "complete": done,
        "remaining": total - done,
        "session": session,
    }


# -- import ------------------------------------------------------------------------------------
def _closest(value: str, valid) -> str:
    close = difflib.get_close_matches(value, list(valid), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _rows(path: Path):
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            yield from enumerate(csv.DictReader(fh), 2)
    elif path.suffix in (".jsonl", ".ndjson"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise HumanInputError(f"{path.name} line {n}: not JSON ({e})") from e
                if isinstance(row.get("scores"), dict):
                    row = {**row, **row.pop("scores")}
                yield n, row
    else:
        raise HumanInputError(f"{path.name}: ratings must be .csv or .jsonl")


def import_ratings(
    path: Path,
    session_path: Path,
    responses: dict[str, Any] | None = None,
    criteria: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Validate and merge ratings into a session file (same rater/prompt/candidate replaces)."""
    path, session_path = Path(path), Path(session_path)
    if session_path.exists():
        session = load_session(session_path)
        criteria = session["criteria"]
    else:
        criteria = dict(criteria or DEFAULT_CRITERIA)
        ps = (responses or {}).get("prompt_set", {})
        session = {
            "schema": SCHEMA,
            "rater": None,
            "seed": None,
            "criteria": criteria,
            "prompt_set": {"name": ps.get("name"), "sha256": ps.get("sha256")},
            "created": _now(),
            "order": [],
            "ratings": [],
        }
    check_criteria(criteria)
    prompt_ids = {p["id"] for p in responses["prompt_set"]["prompts"]} if responses else None
    cand_ids = set(responses["candidates"]) if responses else None
    lo, hi = SCALE
    new, replaced = 0, 0
    for n, row in _rows(path):
        where = f"{path.name} row {n}"
        for key in ("rater", "prompt_id", "candidate", *criteria):
            if row.get(key) in (None, ""):
                raise HumanInputError(
                    f"{where}: missing field '{key}'; required: rater, prompt_id, "
                    f"candidate, {', '.join(criteria)}"
                )
        pid, cand = str(row["prompt_id"]), str(row["candidate"])
        if prompt_ids is not None and pid not in prompt_ids:
            raise HumanInputError(f"{where}: unknown prompt_id '{pid}'{_closest(pid, prompt_ids)}")
        if cand_ids is not None and cand not in cand_ids:
            raise HumanInputError(
                f"{where}: unknown candidate '{cand}'{_closest(cand, cand_ids)}; "
                f"valid: {', '.join(sorted(cand_ids))}"
            )
        scores = {}
        for c in criteria:
            v = row[c]
            try:
                iv = int(str(v).strip())
            except ValueError:
                iv = None
            if iv is None or str(v).strip() not in (str(iv), f"{iv}.0") or not lo <= iv <= hi:
                raise HumanInputError(
                    f"{where}: {c}={v!r} must be a whole number from {lo} to {hi}"
                )
            scores[c] = iv
        rec = {
            "rater": str(row["rater"]),
            "prompt_id": pid,
            "candidate": cand,
            "label": None,
            "scores": scores,
            "comment": str(row.get("comment") or ""),
            "complete": True,
            "weighted": weighted_rating(scores, criteria),
            "timestamp": _now(),
            "source": f"import:{path.name}",
        }
        old = _find(session, rec["rater"], pid, cand)
        if old is not None:
            session["ratings"].remove(old)
            replaced += 1
        else:
            new += 1
        session["ratings"].append(rec)
    save_session(session_path, session)
    return {
        "imported": new + replaced,
        "new": new,
        "replaced": replaced,
        "session": str(session_path),
    }


# -- aggregation -------------------------------------------------------------------------------
def complete_ratings(sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in sessions:
        for r in s["ratings"]:
            if r.get("complete"):
                out.append({**r, "weighted": weighted_rating(r["scores"], s["criteria"])})
    return out


def human_scores(sessions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per candidate: mean normalised weighted rating in [0, 1], count, per-criterion means."""
    lo, hi = SCALE
    by: dict[str, list[dict[str, Any]]] = {}
    for r in complete_ratings(sessions):
        by.setdefault(r["candidate"], []).append(r)
    out = {}
    for cand, rs in sorted(by.items()):
        crits = sorted({c for r in rs for c in r["scores"]})
        out[cand] = {
            "score": sum((r["weighted"] - lo) / (hi - lo) for r in rs) / len(rs),
            "n_ratings": len(rs),
            "raters": sorted({r["rater"] for r in rs}),
            "criteria_mean": {
                c: sum(r["scores"][c] for r in rs if c in r["scores"])
                / sum(1 for r in rs if c in r["scores"])
                for c in crits
            },
            "comments": [r["comment"] for r in rs if r.get("comment")],
        }
    return out


def human_comparisons(sessions: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(a, b, outcome) from the same rater rating two candidates on the same prompt."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in complete_ratings(sessions):
        groups.setdefault((r["rater"], r["prompt_id"]), []).append(r)
    comps = []
    for _, rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["candidate"])
        for x, y in itertools.combinations(rs, 2):
            diff = x["weighted"] - y["weighted"]
            comps.append(
                (x["candidate"], y["candidate"], 0.5 if abs(diff) < 1e-9 else float(diff > 0))
            )
    return comps


# -- CLI ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="quantloop-human", description="Collect human ratings.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rate", help="rate candidates interactively (resumable)")
    r.add_argument("--responses", required=True, help="responses.json written by quantloop-pass2")
    r.add_argument("--session", required=True, help="session file (created or resumed)")
    r.add_argument("--rater", default=os.environ.get("USER", "rater"))
    r.add_argument("--seed", type=int, default=0, help="seed of the anonymised presentation order")
    r.add_argument("--config", help="pass-2 YAML whose human.criteria to use [built-in weights]")
    i = sub.add_parser("import", help="import ratings from CSV or JSONL")
    i.add_argument("file")
    i.add_argument("--session", required=True)
    i.add_argument("--responses", help="check prompt ids and candidates against this file")
    s = sub.add_parser("summary", help="aggregate sessions")
    s.add_argument("--session", nargs="+", required=True)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "rate":
            criteria = None
            if args.config:
                from sweeps.pass2 import load_config

                criteria = load_config(args.config)["human"]["criteria"]
            res = rate_interactive(
                Path(args.session),
                load_responses(Path(args.responses)),
                args.rater,
                args.seed,
                criteria,
            )
            print(json.dumps({k: v for k, v in res.items() if k != "session"}), file=sys.stderr)
        elif args.cmd == "import":
            responses = load_responses(Path(args.responses)) if args.responses else None
            print(
                json.dumps(import_ratings(Path(args.file), Path(args.session), responses), indent=2)
            )
        else:
            sessions = [load_session(Path(p)) for p in args.session]
            print(
                json.dumps(
                    {
                        "scores": human_scores(sessions),
                        "comparisons": len(human_comparisons(sessions)),
                    },
                    indent=2,
                )
            )
    except (HumanInputError, FileNotFoundError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
