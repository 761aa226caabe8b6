"""A 6-job sweep under the basic launcher and under joblib, in the same run: wall time, speed-up,
and how much of the sweep is work that is the same in every job.

Each launcher starts from its own cold cache, so both pay the one-time work (GGUF -> float
checkpoint conversion, full-precision baseline) once. The script then reads every job's
``result.json`` and ``run.log`` to count how often that one-time work was done (it must be once per
sweep, whatever the launcher), and times, in a separate process on the warm cache, the work every
job repeats (loading the float checkpoint, tokenizing the eval text, opening the cached baseline)
and the work every worker process repeats (importing torch/transformers/quantloop).

    python benchmarks/bench_sweep.py                      # SmolLM2-135M, eval=smoke, 6 levels
    python benchmarks/bench_sweep.py --model tiny_llama --quants int8,int4 --workers 2

W&B is off (tracking=disabled) so that only the runner is timed. On a shared machine, look at the
load average printed before and after: other processes slow both launchers, not equally.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_QUANTS = "int8,int4,int3,q8_0,q4_K_M,q2_K"

# Timed in a fresh process on the warm cache: what every worker pays (imports) and what every
# job pays before its own work starts (checkpoint load, eval windows, cached baseline).
_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from hydra import compose, initialize_config_dir
from runner.config import register_configs, to_config
from runner.parallel import job_threads, limit_threads
from runner.baseline import get_baseline
from runner.evaluate import eval_windows
from runner.models import load_model
root, model, ev, cache = sys.argv[1:5]
register_configs()
with initialize_config_dir(config_dir=str(Path(root) / "conf"), version_base="1.3"):
    cfg = to_config(compose("config", overrides=[f"model={model}", f"eval={ev}", "quant=int8",
                                                 "tracking=disabled", "sweep_name=probe"]))
limit_threads(job_threads(cfg.runner.threads, 1))
out = {"imports": time.perf_counter() - t0}
for rep in ("first", "again"):  # first: + lazy imports (per worker); again: per job
    t2 = time.perf_counter()
    loaded = load_model(cfg.model, Path(cache))
    t3 = time.perf_counter()
    windows = eval_windows(loaded.tokenizer, cfg.eval)
    base = get_baseline(loaded.model, windows, loaded.content_hash, Path(cache),
                        cfg.eval.batch_size)
    t4 = time.perf_counter()
    out[f"model_load_{rep}"] = t3 - t2
    out[f"windows_and_cached_baseline_{rep}"] = t4 - t3
print(json.dumps(out))
"""


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


def run_sweep(args, launcher: str, root: Path) -> dict:
    """Run the sweep under ``launcher`` with a cold cache of its own; wall time and job records."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        QUANTLOOP_CACHE=str(root / f"cache_{launcher}"),
        QUANTLOOP_OUTPUTS=str(root / "outputs"),
        QUANTLOOP_STORE=str(root / f"store_{launcher}.sqlite"),
        WANDB_SILENT="true",
    )
    sweep_name = f"bench_{launcher}"
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", f"model={args.model}", f"eval={args.eval}"]
    cmd += [f"quant={args.quants}", f"quant.group_size={args.group_size}", "tracking=disabled"]
    cmd += [f"sweep_name={sweep_name}"]
    if launcher == "joblib":
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.workers}"]
    print(f"\n[{launcher}] load before: {loadavg()}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (root / f"{launcher}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{launcher} sweep failed, see {root / f'{launcher}.log'}")
    sweep = root / "outputs" / "sweeps" / sweep_name
    jobs = []
    for path in sorted(sweep.glob("*/result.json")):
        r = json.loads(path.read_text())
        log = (path.parent / "run.log").read_text() if (path.parent / "run.log").exists() else ""
        jobs.append(
            {
                "quant": r["quant_format"],
                "status": r["status"],
                "seconds": r["duration_seconds"],
                "metrics": r["metrics"],
                "converted_model": "converting" in log,
                "reused_baseline": "reusing cached baseline" in log,
            }
        )
    print(f"[{launcher}] wall {wall:.1f} s; load after: {loadavg()}", flush=True)
    failed = [j["quant"] for j in jobs if j["status"] != "ok"]
    if failed:
        raise SystemExit(f"{launcher}: jobs failed: {failed}; see their result.json under {sweep}")
    return {"launcher": launcher, "wall": wall, "jobs": jobs, "cache": env["QUANTLOOP_CACHE"]}


def probe(args, cache: str) -> dict[str, float]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-c", _PROBE, str(ROOT), args.model, args.eval, cache]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(runs: list[dict], shared: dict[str, float], workers: int) -> None:
    print("\n| launcher | wall s | jobs | sum of job s | cold-cache job s | median warm job s "
          "| model conversions | baseline computations |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        secs = [j["seconds"] for j in run["jobs"]]
        computed = sum(not j["reused_baseline"] for j in run["jobs"])  # all jobs are ok
        converted = sum(j["converted_model"] for j in run["jobs"])
        cold = [j["seconds"] for j in run["jobs"] if not j["reused_baseline"]]
        warm = [j["seconds"] for j in run["jobs"] if j["reused_baseline"]]
        first = max(cold, default=float("nan"))
        rest = statistics.median(warm) if warm else float("nan")
        print(
            f"| {run['launcher']} | {run['wall']:.1f} | {len(secs)} | {sum(secs):.1f} | "
            f"{first:.1f} | {rest:.1f} | {converted} | {computed} |"
        )
    basic, par = runs
    print(f"\nspeed-up joblib({workers}) vs basic: {basic['wall'] / par['wall']:.2f}x")
    by_quant = {j["quant"]: j["metrics"] for j in basic["jobs"]}
    diffs = [
        abs(v - by_quant[j["quant"]][k])
        for j in par["jobs"]
        for k, v in j["metrics"].items()
        if isinstance(v, float)
    ]
    print(f"largest metric difference between launchers: {max(diffs, default=0.0):.3g}")
    load, win = shared["model_load_again"], shared["windows_and_cached_baseline_again"]
    per_job = load + win
    per_worker = (
        shared["imports"]
        + shared["model_load_first"]
        + shared["windows_and_cached_baseline_first"]
        - per_job
    )
    med = statistics.median(j["seconds"] for j in basic["jobs"] if j["reused_baseline"])
    print(
        f"\nwork every job repeats (float checkpoint load {load:.1f} s + eval windows and "
        f"cached baseline {win:.1f} s) = {per_job:.1f} s = {100 * per_job / med:.0f}% of a median "
        f"warm basic-launcher job ({med:.1f} s)"
    )
    print(
        f"work every worker process repeats (imports, lazy imports): {per_worker:.1f} s; "
        f"basic pays it once, joblib({workers}) once per worker ({workers}x, in parallel)"
    )
    for run in runs:
        n = len(run["jobs"])
        conv = sum(j["converted_model"] for j in run["jobs"])
        comp = sum(not j["reused_baseline"] for j in run["jobs"])
        verdict = "once per sweep" if conv <= 1 and comp == 1 else "MORE THAN ONCE"
        print(f"{run['launcher']}: one-time work (conversion, baseline) done {verdict} ({n} jobs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--eval", default="smoke")
    ap.add_argument("--quants", default=DEFAULT_QUANTS)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=64, help="int levels (SmolLM2 rows: 576)")
    ap.add_argument("--keep", type=Path, help="keep outputs and logs in this directory")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"sweep: model={args.model} eval={args.eval} quant={args.quants}; work dir {root}")
    runs = [run_sweep(args, "basic", root), run_sweep(args, "joblib", root)]
    shared = probe(args, runs[0]["cache"])
    report(runs, shared, args.workers)


if __name__ == "__main__":
    main()
