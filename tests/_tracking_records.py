"""Helpers shared by the tracking tests: schema-valid records, real run outputs, a live server.

``make_result`` builds a record that passes the result schema (``runner.schema``); the tests give it
the few fields whose analytics they check by hand (score, size, time, ...). ``real_results``
collects the result.json files of real tiny_llama runs made by ``run.py`` (once per session).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema

from runner.schema import RESULT_SCHEMA, SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
_VALIDATOR = jsonschema.Draft202012Validator(RESULT_SCHEMA)  # built once: validation is hot


def make_result(i: int, **fields: Any) -> dict[str, Any]:
    """Job record number ``i`` (timestamps one minute apart), overridden by ``fields``."""
    metrics = {
        "perplexity": 20.0,
        "kld_mean": 0.01,
        "kld_median": 0.005,
        "kld_p99": 0.1,
        "kld_max": 0.5,
        "top1_agreement": 90.0,
    }
    metrics.update(fields.pop("metrics", {}))
    score = fields.get("score", 0.9)
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": f"job-{i:04d}",
        "status": "ok",
        "model_name": "tiny_llama",
        "quant_format": "int8",
        "method": "rtn",
        "size_mb": 10.0,
        "bits_per_weight": 8.5,
        "compression_ratio": 1.9,
        "passed_threshold": score is not None and score >= 0.8,
        "score": score,
        "metrics": metrics,
        "degradation": {"perplexity": 0.01},
        "thresholds": {"top1_agreement": 80.0},
        "duration_seconds": 1.5,
        "memory_peak_mb": 300.0,
        "cpu_avg_percent": 50.0,
        "error_count": 0,
        "errors": [],
        "timestamp": (T0 + timedelta(minutes=i)).isoformat(),
        "config_hash": "0123456789abcdef",
        "seed": 0,
        "sweep_id": "sweep-a",
        "job_dir": f"multirun/sweep-a/{i}",
        "versions": {"python": "3.11"},
        "git_hash": None,
    }
    record.update(fields)
    _VALIDATOR.validate(record)  # the same check as runner.schema.validate_result
    return record


# ---------------------------------------------------------------------------------------------
# real runs of the runner (tiny_llama, int8/int4/int2, smoke eval)

REAL_RUN_ARGS = ["-m", "model=tiny_llama", "quant=int8,int4,int2", "eval=smoke"]


REAL_SWEEP_NAME = "tracking-test"
_REAL: dict[str, Any] = {}


def run_real_sweep(base: Path, store: Path) -> subprocess.CompletedProcess:
    """``python run.py -m model=tiny_llama quant=int8,int4,int2 eval=smoke`` under ``base``."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "QUANTLOOP_STORE": str(store),
        "QUANTLOOP_CACHE": str(base / "cache"),
    }
    cmd = [sys.executable, str(ROOT / "run.py"), *REAL_RUN_ARGS, "tracking=disabled"]
    cmd += [f"paths.outputs={base / 'out'}", f"sweep_name={REAL_SWEEP_NAME}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


def real_results_from(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("result.json"))]


def real_sweep() -> dict[str, Any]:
    """Run the real tiny_llama sweep once per test session; its store, sweep dir and results."""
    if not _REAL:
        base = Path(tempfile.mkdtemp(prefix="quantloop-tracking-real-"))
        store = base / "store.sqlite"
        proc = run_real_sweep(base, store)
        if proc.returncode != 0:
            raise AssertionError(
                f"run.py exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
            )
        sweep_dir = base / "out" / "sweeps" / REAL_SWEEP_NAME
        _REAL.update(
            base=base, store=store, sweep_dir=sweep_dir, results=real_results_from(sweep_dir)
        )
    return _REAL


# ---------------------------------------------------------------------------------------------
# a real uvicorn server process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m tracking.cli serve`` in a subprocess on a free loopback port."""

    def __init__(self, store: Path, log: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "tracking.cli", "serve", "--store", str(store)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dashboard server did not start; log:\n{log.read_text()}")
            time.sleep(0.2)

    def get(self, path: str) -> tuple[int, Any]:
        """(status, parsed JSON body) of GET ``path``; 4xx/5xx are returned, not raised."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def get_text(self, path: str) -> tuple[int, str, str]:
        with urllib.request.urlopen(self.base + path, timeout=30) as r:
            return r.status, r.headers.get("content-type", ""), r.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
