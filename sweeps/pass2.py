"""Pass 2: judge the Pass-1 candidates (AI ensemble + human ratings), rank them, report.

Phases (``quantloop-pass2 <phase> --sweep-dir DIR``), each writing into ``DIR/pass2/``:

1. ``discover``  -> ``candidates.json``: jobs with ``status == "ok"`` and a model artifact
   (``model.gguf`` or an HF checkpoint); every artifact is sealed (``SHA256SUMS``) so the deployed
   bytes are the judged bytes.
2. ``responses`` -> ``responses.json``: greedy responses of the reference and of every candidate to
   the prompt set (cached per model hash + prompt-set hash + generation settings).
3. ``judge``     -> ``ai_judging.json``: the judge ensemble of the config.
4. ``rank``      -> ``pass2_report.json`` + ``pass2_report.md``: weighted final score
   (AI 0.4 / human 0.6 by default), Kendall tau-b AI-vs-human confidence, Bradley-Terry.
``full`` runs all four. Human ratings come from ``quantloop-human`` session files
(``--human``; default: every ``DIR/pass2/human/*.json``).

Python entry point for the runner: :func:`run_pass2` returns the report; :func:`wandb_payload`
turns it into flat metrics + tables for the tracking sink (this module never imports wandb).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from metrics.judges import CandidateResponses, Prompt, build_judge
from metrics.judges.base import JudgeError
from metrics.judges.responses import load_prompts
from sweeps import deploy as deploy_mod
from sweeps.human import human_comparisons, human_scores, load_session
from sweeps.ranking import final_ranking

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "judge"
REPORT_SCHEMA = "quantloop.pass2/1"
PHASES = ("discover", "responses", "judge", "rank")
PHASE_FILES = ("candidates.json", "responses.json", "ai_judging.json", "pass2_report.json")
CONFIG_KEYS = {
    "prompts",
    "prompt_limit",
    "max_new_tokens",
    "system_prompt",
    "reference",
    "require_passed_threshold",
    "max_candidates",
    "ai_weight",
    "human_weight",
    "bt_prior",
    "consensus_threshold",
    "judges",
    "human",
    "deploy",
}


class Pass2Error(RuntimeError):
    pass


# -- configuration -----------------------------------------------------------------------------
def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict:
    """Load a pass-2 YAML (following ``extends:``) and check its keys."""
    path = Path(path) if path else CONF_DIR / "default.yaml"
    if not path.exists():
        raise Pass2Error(f"config {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    parent = data.pop("extends", None)
    if parent:
        data = _merge(load_config(path.parent / f"{parent}.yaml"), data)
    data = _merge(data, overrides or {})
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        raise Pass2Error(
            f"{path.name}: unknown keys {sorted(unknown)}; valid keys: {sorted(CONFIG_KEYS)}"
        )
    data["_conf_dir"] = str(path.parent)
    return data


def resolve_model_path(spec: str) -> Path:
    """A path, or ``package:<pkg>/<file>`` for a file shipped in an installed package."""
    if spec.startswith("package:"):
        pkg, _, file = spec[len("package:") :].partition("/")
        found = importlib.util.find_spec(pkg)
        if found is None or not found.submodule_search_locations:
            raise Pass2Error(f"package '{pkg}' (from {spec!r}) is not installed")
        path = Path(next(iter(found.submodule_search_locations))) / file
    else:
        path = Path(spec).expanduser()
    if not path.exists():
        raise Pass2Error(f"model {spec!r} not found ({path})")
    return path


def _named_yaml(conf_dir: Path, kind: str, ref: str | dict) -> dict:
    if isinstance(ref, dict):
        return dict(ref)
    path = conf_dir / kind / f"{ref}.yaml"
    if not path.exists():
        valid = sorted(p.stem for p in (conf_dir / kind).glob("*.yaml"))
        from metrics.judges import unknown_name_error

        raise unknown_name_error(kind, ref, valid)
    return yaml.safe_load(path.read_text())


def build_ensemble(cfg: dict) -> Any:
    """The ensemble judge described by ``cfg['judges']``."""
    conf_dir = Path(cfg.get("_conf_dir", CONF_DIR))
    members, weights = [], {}
    for spec in cfg["judges"]:
        spec = dict(spec)
        kind = spec.pop("judge", None)
        if kind is None:
            raise Pass2Error("each entry of judges needs 'judge: <name>'")
        weight = float(spec.pop("weight", 1.0))
        if kind == "llm":
            spec["persona"] = _named_yaml(conf_dir, "persona", spec["persona"])
            backend = _named_yaml(conf_dir, "backend", spec["backend"])
            if "model_path" in backend and backend["model_path"]:
                backend["model_path"] = str(resolve_model_path(backend["model_path"]))
            spec["backend"] = backend
        judge = build_judge(kind, **spec)
        members.append(judge)
        weights[judge.name] = weight
    return build_judge(
        "ensemble", judges=members, weights=weights, consensus_threshold=cfg["consensus_threshold"]
    )


# -- phase 1: discover -------------------------------------------------------------------------
def discover(sweep_dir: Path, cfg: dict) -> dict[str, Any]:
    candidates, skipped = [], []
    for rpath in sorted(sweep_dir.glob("**/result.json")):
        if "pass2" in rpath.parts or rpath.parent.name.startswith("."):
            continue
        job = rpath.parent
        try:
            r = json.loads(rpath.read_text())
        except json.JSONDecodeError as e:
            skipped.append({"job_dir": str(job), "reason": f"result.json unreadable: {e}"})
            continue
        reason = None
        if r.get("status") != "ok":
            reason = f"status={r.get('status')}"
        elif cfg["require_passed_threshold"] and not r.get("passed_threshold"):
            reason = "did not pass the Pass-1 thresholds"
        elif not ((job / "model.gguf").is_file() or (job / "config.json").is_file()):
            reason = "no model artifact (export: gguf writes model.gguf)"
        if reason:
            skipped.append({"job_dir": str(job), "id": r.get("id"), "reason": reason})
            continue
        sums_path = job / deploy_mod.SUMS_FILE
        sums = deploy_mod.read_sums(sums_path) if sums_path.exists() else deploy_mod.seal(job)
        candidates.append(
            {
                "id": r.get("id") or job.name,
                "job_dir": str(job),
                "model_path": str(job / "model.gguf")
                if (job / "model.gguf").is_file()
                else str(job),
                "model_name": r.get("model_name"),
                "quant_format": r.get("quant_format"),
                "method": r.get("method"),
                "size_mb": r.get("size_mb"),
                "bits_per_weight": r.get("bits_per_weight"),
                "pass1_score": r.get("score"),
                "passed_threshold": r.get("passed_threshold"),
                "metrics": r.get("metrics", {}),
                "checksums": sums,
            }
        )
    candidates.sort(key=lambda c: (-(c["pass1_score"] or 0.0), c["id"]))
    limit = cfg.get("max_candidates")
    if limit and len(candidates) > limit:
        for c in candidates[limit:]:
            skipped.append(
                {"job_dir": c["job_dir"], "id": c["id"], "reason": f"beyond max_candidates={limit}"}
            )
        candidates = candidates[:limit]
    ids = [c["id"] for c in candidates]
    if len(set(ids)) != len(ids):
        raise Pass2Error(f"duplicate candidate ids in {sweep_dir}: {ids}")
    return {"sweep_dir": str(sweep_dir), "candidates": candidates, "skipped": skipped}


# -- phase 2: responses ------------------------------------------------------------------------
def _model_digest(path: Path) -> str:
    h = hashlib.sha256()
    files = (
        [path]
        if path.is_file()
        else sorted(
            p
            for p in path.iterdir()
            if p.suffix in (".safetensors", ".json", ".gguf") and p.name != "result.json"
        )
    )
    for f in files:
        h.update(f.name.encode())
        h.update(deploy_mod.sha256_file(f).encode())
    return h.hexdigest()


def responses_for(model_path: Path, prompt_set, cfg: dict, cache_dir: Path) -> dict[str, str]:
    """Responses of one model, from the cache if this model + prompts + settings were seen."""
    from metrics.judges.responses import generate_responses, load_candidate

    settings = {"max_new_tokens": cfg["max_new_tokens"], "system": cfg["system_prompt"]}
    key = hashlib.sha256(
        json.dumps(
            [_model_digest(model_path), prompt_set.sha256, settings], sort_keys=True
        ).encode()
    ).hexdigest()[:24]
    cached = cache_dir / f"{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())["responses"]
    model, tok = load_candidate(model_path)  # responses are cached; no float copy on disk
    out = generate_responses(
        model,
        tok,
        list(prompt_set.prompts),
        max_new_tokens=cfg["max_new_tokens"],
        system=cfg["system_prompt"],
        progress=True,
    )
    del model
    gc.collect()
    cache_dir.mkdir(parents=True, exist_ok=True)
    deploy_mod.atomic_write_json(
        cached, {"model": str(model_path), "settings": settings, "responses": out}
    )
    return out


def collect_responses(discovery: dict, reference: Path, cfg: dict, out_dir: Path) -> dict[str, Any]:
    prompt_set = load_prompts(cfg["prompts"], cfg.get("prompt_limit"))
    cache = out_dir / "cache" / "responses"
    data = {
        "prompt_set": prompt_set.to_dict(),
        "generation": {
            "max_new_tokens": cfg["max_new_tokens"],
            "system": cfg["system_prompt"],
            "decoding": "greedy",
        },
        "reference": {
            "model": str(reference),
            "responses": responses_for(reference, prompt_set, cfg, cache),
        },
        "candidates": {},
    }
    for c in discovery["candidates"]:
        data["candidates"][c["id"]] = responses_for(Path(c["model_path"]), prompt_set, cfg, cache)
    return data


# -- phase 3: AI judging -----------------------------------------------------------------------
def ai_judging(responses: dict[str, Any], cfg: dict) -> dict[str, Any]:
    prompts = [
        Prompt(p["id"], p["text"], p.get("emotion", "")) for p in responses["prompt_set"]["prompts"]
    ]
    reference = CandidateResponses("reference", responses["reference"]["responses"])
    cands = [CandidateResponses(c, r) for c, r in sorted(responses["candidates"].items())]
    if not cands:
        raise Pass2Error("no candidates to judge (see candidates.json 'skipped')")
    return build_ensemble(cfg).judge(prompts, reference, cands).to_dict()


# -- phase 4: ranking and reports --------------------------------------------------------------
def check_sessions(sessions: list[dict], paths: list[Path], prompt_sha: str | None) -> None:
    """Ratings made on another prompt set must not be mixed into this ranking."""
    for s, p in zip(sessions, paths, strict=True):
        sha = (s.get("prompt_set") or {}).get("sha256")
        if prompt_sha and sha and sha != prompt_sha:
            raise Pass2Error(f"human session {p} rates a different prompt set than responses.json")


def inter_rater(sessions: list[dict]) -> dict[str, Any]:
    """Krippendorff's alpha (interval) of the weighted ratings across raters."""
    from sweeps.human import complete_ratings
    from sweeps.ranking import krippendorff_alpha_interval

    units: dict[tuple[str, str], list[float]] = {}
    for r in complete_ratings(sessions):
        units.setdefault((r["prompt_id"], r["candidate"]), []).append(r["weighted"])
    raters = {r["rater"] for r in complete_ratings(sessions)}
    return {
        "method": "krippendorff_alpha_interval",
        "raters": len(raters),
        "alpha": krippendorff_alpha_interval(units.values()) if len(raters) > 1 else None,
    }


def rank(discovery: dict, ai: dict, sessions: list[dict], cfg: dict) -> dict[str, Any]:
    ids = {c["id"] for c in discovery["candidates"]}
    hs = {c: v for c, v in (human_scores(sessions) if sessions else {}).items() if c in ids}
    ai_scores = ai["scores"]
    comparisons = [
        (p["a"], p["b"], 0.5 if p["winner"] is None else float(p["winner"] == p["a"]))
        for p in ai["pairs"]
    ]
    h_comps = [c for c in (human_comparisons(sessions) if sessions else []) if {c[0], c[1]} <= ids]
    fr = final_ranking(
        ai_scores,
        {c: v["score"] for c, v in hs.items()},
        comparisons + h_comps,
        cfg["ai_weight"],
        cfg["human_weight"],
        cfg["bt_prior"],
    )
    from sweeps.ranking import bradley_terry

    fr["bradley_terry_ai"] = (
        bradley_terry(comparisons, ai_scores.keys(), cfg["bt_prior"]) if comparisons else None
    )
    fr["bradley_terry_human"] = (
        bradley_terry(h_comps, hs.keys(), cfg["bt_prior"]) if h_comps else None
    )
    by_id = {c["id"]: c for c in discovery["candidates"]}
    winner = fr["winner"]
    rec = None
    if winner:
        job = by_id[winner]["job_dir"]
        rec = {
            "candidate": winner,
            "job_dir": job,
            "quant_format": by_id[winner]["quant_format"],
            "human_rated": hs.get(winner) is not None,
            "deploy_command": f"quantloop-deploy deploy {job}",
        }
    return {
        "schema": REPORT_SCHEMA,
        "candidate_discovery": discovery,
        "ai_judging_results": ai,
        "human_judging_results": {
            "sessions": len(sessions),
            "ratings": sum(v["n_ratings"] for v in hs.values()),
            "criteria": cfg["human"]["criteria"],
            "scores": hs,
            "comparisons": len(h_comps),
            "inter_rater": inter_rater(sessions),
        },
        "final_rankings": fr,
        "recommendation": rec,
    }


def _fmt(x, nd=3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def markdown_report(report: dict[str, Any]) -> str:
    fr = report["final_rankings"]
    disc = {c["id"]: c for c in report["candidate_discovery"]["candidates"]}
    bt = (fr.get("bradley_terry") or {}).get("strengths", {})
    ex = report["pass2_execution"]
    conf = fr["confidence"]
    cons = report["ai_judging_results"]["details"].get("consensus", {})
    lines = [
        "# Pass 2 report",
        "",
        f"- sweep: `{report['candidate_discovery']['sweep_dir']}`",
        f"- finished: {ex['finished']}; phases: {', '.join(ex['phases_completed'])}",
        f"- candidates judged: {ex['total_candidates']}; skipped: {len(report['candidate_discovery']['skipped'])}",
        f"- weights: AI {fr['weights']['ai']:.2f} / human {fr['weights']['human']:.2f}",
        f"- AI-vs-human confidence (Kendall tau-b over {conf['n_candidates']} candidates): "
        f"tau = {_fmt(conf['tau_b'])}, confidence = {_fmt(conf['confidence'])}",
        f"- judge consensus: agreement = {_fmt(cons.get('agreement'))} "
        f"(threshold {cons.get('threshold')}, reached: {cons.get('reached')})",
        f"- judge errors: {report['ai_judging_results']['error_count']}",
        f"- human ratings: {report['human_judging_results']['ratings']} from "
        f"{report['human_judging_results']['inter_rater']['raters']} raters; inter-rater "
        f"Krippendorff alpha (interval) = {_fmt(report['human_judging_results']['inter_rater']['alpha'])}",
        "",
        "| rank | candidate | quant | size MB | AI | human | final | BT strength | partial |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for c, row in sorted(fr["candidates"].items(), key=lambda kv: kv[1].get("rank", 10**6)):
        d = disc.get(c, {})
        lines.append(
            f"| {row.get('rank', '–')} | {c} | {d.get('quant_format', '')} | {_fmt(d.get('size_mb'), 1)} "
            f"| {_fmt(row['ai'])} | {_fmt(row['human'])} | {_fmt(row['final'])} | {_fmt(bt.get(c))} "
            f"| {'yes' if row['partial'] else ''} |"
        )
    rec = report.get("recommendation")
    lines += ["", "## Recommendation", ""]
    if rec:
        lines += [
            f"Winner: **{rec['candidate']}** ({rec['quant_format']}).",
            ""
            if rec["human_rated"]
            else "Not yet rated by humans: the final score is the AI score alone.",
            "",
            f"    {rec['deploy_command']}",
            "",
        ]
    else:
        lines.append("No candidate could be ranked.")
    members = report["ai_judging_results"]["details"].get("members", {})
    if members:
        lines += [
            "## Judges",
            "",
            "| judge | " + " | ".join(sorted(fr["candidates"])) + " | errors |",
            "|---|" + "---:|" * len(fr["candidates"]) + "---:|",
        ]
        for name, m in members.items():
            lines.append(
                f"| {name} | "
                + " | ".join(_fmt(m["scores"].get(c)) for c in sorted(fr["candidates"]))
                + f" | {m['error_count']} |"
            )
    return "\n".join(lines) + "\n"


def wandb_payload(report: dict[str, Any]) -> dict[str, Any]:
    """Flat summary metrics and row-lists for tables, for the tracking sink to log."""
    fr = report["final_rankings"]
    rows = []
    disc = {c["id"]: c for c in report["candidate_discovery"]["candidates"]}
    bt = (fr.get("bradley_terry") or {}).get("strengths", {})
    for c, row in fr["candidates"].items():
        d = disc.get(c, {})
        rows.append(
            {
                "candidate": c,
                "quant_format": d.get("quant_format"),
                "size_mb": d.get("size_mb"),
                "ai": row["ai"],
                "human": row["human"],
                "final": row["final"],
                "rank": row.get("rank"),
                "bt_strength": bt.get(c),
            }
        )
    cons = report["ai_judging_results"]["details"].get("consensus", {})
    summary = {
        "pass2/winner": fr["winner"],
        "pass2/confidence": fr["confidence"]["confidence"],
        "pass2/kendall_tau_b": fr["confidence"]["tau_b"],
        "pass2/judge_agreement": cons.get("agreement"),
        "pass2/judge_errors": report["ai_judging_results"]["error_count"],
        "pass2/candidates": len(rows),
        "pass2/human_ratings": report["human_judging_results"]["ratings"],
    }
    for r in rows:
        summary[f"pass2/final/{r['candidate']}"] = r["final"]
    columns = [
        "candidate",
        "quant_format",
        "size_mb",
        "ai",
        "human",
        "final",
        "rank",
        "bt_strength",
    ]
    return {
        "summary": summary,
        "tables": {
            "pass2_ranking": {"columns": columns, "rows": [[r[k] for k in columns] for r in rows]}
        },
    }


# -- orchestration -----------------------------------------------------------------------------
def _read(path: Path, what: str) -> dict:
    if not path.exists():
        raise Pass2Error(f"{path} missing: run the '{what}' phase first")
    return json.loads(path.read_text())


def run_pass2(
    sweep_dir: str | Path,
    config: str | Path | dict | None = None,
    phases: tuple[str, ...] = PHASES,
    reference: str | Path | None = None,
    human: list[str | Path] | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run the given phases; returns the report (phase 'rank') or the last phase's output."""
    sweep_dir = Path(sweep_dir).resolve()
    if not sweep_dir.is_dir():
        raise Pass2Error(f"sweep dir {sweep_dir} does not exist")
    bad = [p for p in phases if p not in PHASES]
    if bad:
        raise Pass2Error(f"unknown phases {bad}; valid: {', '.join(PHASES)}")
    cfg = config if isinstance(config, dict) else load_config(config)
    out = Path(out_dir) if out_dir else sweep_dir / "pass2"
    out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result: dict[str, Any] = {}
    if "discover" in phases:
        result = discover(sweep_dir, cfg)
        deploy_mod.atomic_write_json(out / "candidates.json", result)
    if "responses" in phases:
        ref = resolve_model_path(str(reference or cfg["reference"]))
        result = collect_responses(_read(out / "candidates.json", "discover"), ref, cfg, out)
        deploy_mod.atomic_write_json(out / "responses.json", result)
    if "judge" in phases:
        result = ai_judging(_read(out / "responses.json", "responses"), cfg)
        deploy_mod.atomic_write_json(out / "ai_judging.json", result)
    if "rank" in phases:
        paths = (
            [Path(p) for p in human]
            if human is not None
            else sorted((out / "human").glob("*.json"))
        )
        sessions = [load_session(p) for p in paths]
        if (out / "responses.json").exists():
            sha = json.loads((out / "responses.json").read_text())["prompt_set"]["sha256"]
            check_sessions(sessions, paths, sha)
        result = rank(
            _read(out / "candidates.json", "discover"),
            _read(out / "ai_judging.json", "judge"),
            sessions,
            cfg,
        )
        result["pass2_execution"] = {
            "config": {k: v for k, v in cfg.items() if not k.startswith("_")},
            "total_candidates": len(result["candidate_discovery"]["candidates"]),
            "phases_completed": [
                p for p, f in zip(PHASES[:3], PHASE_FILES, strict=False) if (out / f).exists()
            ]
            + ["rank"],
            "started": started,
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "human_sessions": [str(p) for p in paths],
        }
        deploy_mod.atomic_write_json(out / "pass2_report.json", result)
        (out / "pass2_report.md").write_text(markdown_report(result))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="quantloop-pass2", description="Pass 2: judge, rank, report.")
    ap.add_argument("phase", choices=(*PHASES, "full"))
    ap.add_argument("--sweep-dir", required=True, help="the Pass-1 sweep directory")
    ap.add_argument("--config", help="pass-2 YAML [conf/judge/default.yaml]")
    ap.add_argument("--reference", help="full-precision model (overrides config 'reference')")
    ap.add_argument("--human", nargs="*", help="human session files [DIR/pass2/human/*.json]")
    ap.add_argument("--out", help="output dir [DIR/pass2]")
    ap.add_argument("--prompt-limit", type=int, help="use only the first N prompts")
    ap.add_argument(
        "--wandb",
        choices=("offline", "online", "disabled"),
        default="offline",
        help="W&B run of the final ranking, in the sweep's group [offline, under the sweep dir]",
    )
    args = ap.parse_args(argv)
    try:
        cfg = load_config(
            args.config, {"prompt_limit": args.prompt_limit} if args.prompt_limit else None
        )
        phases = PHASES if args.phase == "full" else (args.phase,)
        res = run_pass2(args.sweep_dir, cfg, phases, args.reference, args.human, args.out)
    except (Pass2Error, JudgeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "rank" in phases:
        from runner.tracking import WandbSink

        WandbSink(args.wandb, "quantloop", None, Path(args.sweep_dir)).log_pass2(
            args.sweep_dir, wandb_payload(res)
        )
        print(markdown_report(res))
    else:
        print(
            json.dumps(
                {"phase": args.phase, "out": str(Path(args.out or Path(args.sweep_dir) / "pass2"))}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())


def judge_main(argv: list[str] | None = None) -> int:
    """``quantloop-judge``: list judges, run the configured ensemble on responses, serve a model."""
    ap = argparse.ArgumentParser(prog="quantloop-judge", description="AI judges.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="registered judges, personas and backends")
    r = sub.add_parser("run", help="judge a responses.json with the config's ensemble")
    r.add_argument("responses")
    r.add_argument("--config", help="pass-2 YAML [conf/judge/default.yaml]")
    r.add_argument("--out", help="write the result JSON here (default: stdout)")
    s = sub.add_parser("serve", help="serve a local model over an OpenAI-compatible API")
    s.add_argument("--model", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--name", default="local")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "list":
            from metrics.judges import available_judges
            from metrics.judges.backends import BACKENDS

            print(
                json.dumps(
                    {
                        "judges": available_judges(),
                        "backends": sorted(BACKENDS),
                        "personas": sorted(p.stem for p in (CONF_DIR / "persona").glob("*.yaml")),
                        "backend_configs": sorted(
                            p.stem for p in (CONF_DIR / "backend").glob("*.yaml")
                        ),
                    },
                    indent=2,
                )
            )
        elif args.cmd == "run":
            res = ai_judging(json.loads(Path(args.responses).read_text()), load_config(args.config))
            if args.out:
                deploy_mod.atomic_write_json(Path(args.out), res)
            else:
                print(json.dumps(res, indent=2))
        else:
            from metrics.judges.server import serve

            serve(args.model, args.host, args.port, args.name)
    except (Pass2Error, JudgeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
