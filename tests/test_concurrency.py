"""Several processes sharing one cache and one results store at the same time.

Each test starts real processes that wait on a start file (a barrier), then hit the shared resource
together: the baseline cache (file lock + atomic rename) must compute a cold baseline once, and the
SQLite store (WAL) must keep every upsert of concurrent writers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]

# One process of the baseline race: load the tiny model (cold cache: built under its own lock),
# wait for the start file, then ask for the baseline. Every real computation appends a line to the
# marker file (the compute function is wrapped, not replaced).
_BASELINE_CHILD = r"""
import json, os, sys, time
from pathlib import Path

cache, go, marker, out = map(Path, sys.argv[1:5])
from runner import baseline
from runner.config import EvalConfig, ModelConfig
from runner.evaluate import eval_windows
from runner.models import load_model

compute = baseline._compute

def counted(*args, **kwargs):
    with open(marker, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(1.0)  # keep the lock held long enough for the others to queue behind it
    return compute(*args, **kwargs)

baseline._compute = counted
loaded = load_model(ModelConfig(name="tiny_llama", source="tiny"), cache)
windows = eval_windows(loaded.tokenizer, EvalConfig(name="race", seq_len=32, n_windows=2))
Path(str(out) + ".ready").touch()
while not go.exists():
    time.sleep(0.01)
base = baseline.get_baseline(loaded.model, windows, loaded.content_hash, cache, batch_size=2)
first = base.ref_logprobs(0)
out.write_text(json.dumps({
    "metrics": base.metrics, "path": str(base.path), "ref_sum": float(first.double().sum()),
}))
"""

_STORE_CHILD = r"""
import sys, time
from pathlib import Path
import pytest

from runner.store import ResultStore

db, go, proc, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = ResultStore(db)
Path(str(go) + f".ready{proc}").touch()
while not go.exists():
    time.sleep(0.005)
for i in range(n):
    store.add({
        "id": f"p{proc}-{i}", "sweep_id": "race", "job_dir": f"job{proc}_{i}",
        "model_name": "m", "quant_format": f"q{i % 3}", "method": "rtn", "status": "ok",
        "passed_threshold": i % 2 == 0, "score": proc + i / 1000, "size_mb": float(i),
        "timestamp": f"2026-01-01T00:{proc:02d}:{i % 60:02d}", "writer": proc, "seq": i,
    })
    # every writer also replaces the same record: contention on one primary key
    store.add({"id": "shared", "sweep_id": "race", "status": "ok", "writer": proc, "seq": i,
               "timestamp": "2026-01-01T00:00:00"})
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), QUANTLOOP_CACHE=str(tmp_path / "cache"))
    return env


def _wait_ready(paths: list[Path], procs: list[subprocess.Popen], timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        for proc in procs:
            if proc.poll() not in (None, 0):
                raise AssertionError(f"child failed early:\n{proc.stderr.read()}")
        if time.monotonic() > end:
            raise AssertionError("children did not get ready in time")
        time.sleep(0.05)


def _finish(procs: list[subprocess.Popen], timeout: float = 600) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err


@pytest.mark.slow
def test_cold_baseline_race_computes_once(tmp_path):
    cache, go, marker = tmp_path / "cache", tmp_path / "go", tmp_path / "computed.txt"
    outs = [tmp_path / f"out{i}.json" for i in range(3)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _BASELINE_CHILD, str(cache), str(go), str(marker), str(out)],
            cwd=ROOT,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    try:
        _wait_ready([Path(str(o) + ".ready") for o in outs], procs)
        go.touch()
        _finish(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert len(marker.read_text().split()) == 1, "the cold baseline was computed more than once"
    got = [json.loads(o.read_text()) for o in outs]
    assert len({g["path"] for g in got}) == 1
    assert all(g["metrics"] == got[0]["metrics"] for g in got)
    assert all(g["ref_sum"] == got[0]["ref_sum"] for g in got)
    assert got[0]["metrics"]["perplexity"] > 1.0
    leftovers = [p.name for p in (cache / "baselines").iterdir() if ".tmp-" in p.name]
    assert leftovers == []
    # the model cache was built by the same race: one finished checkpoint, no temp dirs
    models = [p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")]
    assert len(models) == 1 and ".tmp-" not in models[0]


def test_store_keeps_every_concurrent_upsert(tmp_path):
    db, go = tmp_path / "store.sqlite", tmp_path / "go"
    n_procs, n_rows = 4, 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _STORE_CHILD, str(db), str(go), str(p), str(n_rows)],
            cwd=ROOT,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(n_procs)
    ]
    try:
        _wait_ready([Path(f"{go}.ready{p}") for p in range(n_procs)], procs)
        go.touch()
        _finish(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    store = ResultStore(db)
    assert store.count() == n_procs * n_rows + 1
    rows = {r["id"]: r for r in store.query(sweep_id="race")}
    for p in range(n_procs):
        for i in range(n_rows):
            row = rows[f"p{p}-{i}"]
            assert (row["writer"], row["seq"], row["size_mb"]) == (p, i, float(i))
    shared = rows["shared"]
    assert shared["seq"] == n_rows - 1  # the last write of some writer, intact
    assert store.count(quant_format="q0") == n_procs * len(range(0, n_rows, 3))
