"""Hydra launchers: thread budgets, launcher configs, and the same sweep under several launchers.

The sweeps run ``run.py`` for real on the tiny config-built Llama (``eval=smoke``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from runner.config import register_configs
from runner.parallel import (
    PARALLEL_JOBS_ENV,
    available_cores,
    job_threads,
    launcher_parallel_jobs,
    parallel_jobs,
    thread_env,
)
from runner.store import ResultStore
from runner.tracking import read_offline_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ("model=tiny_llama", "eval=smoke")
JOBLIB2 = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
HAS_RAY = importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None
FLOAT_METRICS = ("perplexity", "kld_mean", "kld_median", "kld_p99", "kld_max", "top1_agreement")


# ----------------------------------------------------------------------------- thread budget


@pytest.mark.parametrize(
    ("requested", "jobs", "cores", "expected"),
    [
        (0, None, 8, 8),  # basic launcher: the whole machine
        (0, 1, 8, 8),
        (0, 2, 8, 4),
        (0, 3, 8, 2),  # floor: 3 x 2 <= 8
        (0, 8, 8, 1),
        (0, 16, 8, 1),  # more jobs than cores: still one thread each
        (3, 2, 8, 3),  # an explicit runner.threads wins
    ],
)
def test_job_threads(requested, jobs, cores, expected):
    n = job_threads(requested, jobs, cores=cores)
    assert n == expected
    if requested == 0 and jobs and jobs <= cores:
        assert n * jobs <= cores


def test_job_threads_rejects_negative_and_warns_on_oversubscription(caplog):
    with pytest.raises(ValueError, match="runner.threads"):
        job_threads(-1, 2, cores=4)
    assert job_threads(4, 2, cores=4) == 4
    assert "oversubscribe" in caplog.text


def test_available_cores_follows_slurm(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert available_cores() == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert available_cores() == len(os.sched_getaffinity(0))


def test_parallel_jobs_env_override(monkeypatch):
    monkeypatch.setenv(PARALLEL_JOBS_ENV, "3")
    assert parallel_jobs({"_target_": "x.JoblibLauncher", "n_jobs": 2}) == 3
    monkeypatch.setenv(PARALLEL_JOBS_ENV, "zero")
    with pytest.raises(ValueError, match=PARALLEL_JOBS_ENV):
        parallel_jobs()
    monkeypatch.delenv(PARALLEL_JOBS_ENV)
    assert parallel_jobs() == 1  # outside a Hydra job


def test_thread_env_names_the_blas_and_openmp_variables():
    env = thread_env(2)
    assert env["OMP_NUM_THREADS"] == "2" and env["MKL_NUM_THREADS"] == "2"
    assert env["OPENBLAS_NUM_THREADS"] == "2"


# ----------------------------------------------------------------------------- launcher configs


def _compose(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


LAUNCHERS = [
    ("basic", (), "BasicLauncher", lambda cores: 1),
    ("joblib", ("hydra/launcher=joblib",), "JoblibLauncher", lambda cores: cores),
    ("joblib n_jobs=2", JOBLIB2, "JoblibLauncher", lambda cores: 2),
    (
        "joblib n_jobs=-2",
        ("hydra/launcher=joblib", "hydra.launcher.n_jobs=-2"),
        "JoblibLauncher",
        lambda cores: max(1, cores - 1),
    ),
    ("submitit_slurm", ("hydra/launcher=submitit_slurm",), "SlurmLauncher", lambda cores: 1),
    ("slurm preset", ("hydra/launcher=slurm",), "SlurmLauncher", lambda cores: 1),
]
if HAS_RAY:
    LAUNCHERS += [
        ("ray", ("hydra/launcher=ray",), "RayLauncher", lambda cores: cores),
        ("ray_cluster", ("hydra/launcher=ray_cluster",), "RayLauncher", lambda c: max(1, c // 4)),
    ]


@pytest.mark.parametrize(("overrides", "cls", "expected"), [x[1:] for x in LAUNCHERS],
                         ids=[x[0] for x in LAUNCHERS])  # fmt: skip
def test_launcher_config_composes_and_instantiates(overrides, cls, expected):
    cfg = _compose(*TINY, "quant=int8", *overrides)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith(cls)
    # every key is accepted by the launcher's constructor (no Slurm/Ray contact at this point)
    module, _, name = launcher._target_.rpartition(".")
    params = OmegaConf.to_container(launcher, resolve=False)
    params.pop("_target_")
    assert type(getattr(importlib.import_module(module), name)(**params)).__name__ == cls
    cores = 8
    assert launcher_parallel_jobs(launcher, cores=cores) == expected(cores)


def test_slurm_preset_keeps_quantloop_settings():
    launcher = _compose(
        *TINY, "hydra/launcher=slurm", "hydra.launcher.partition=cpu"
    ).hydra.launcher
    assert launcher.partition == "cpu"
    assert launcher.cpus_per_task == 8 and launcher.tasks_per_node == 1
    assert launcher.submitit_folder.endswith("/.submitit/%j")
    assert "export HF_HUB_OFFLINE=1" in launcher.setup


def test_slurm_launcher_cfg_hydra_from_the_cli():
    # `--cfg` cannot be combined with `-m`; the launcher node printed is the one a sweep uses
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "run.py", "hydra/launcher=slurm", "--cfg", "hydra"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in proc.stdout
    assert "cpus_per_task: 8" in proc.stdout


# ----------------------------------------------------------------------------- real sweeps


def _results(sweep_dir: Path) -> dict[str, dict]:
    out = {}
    for path in sweep_dir.glob("*/result.json"):
        r = json.loads(path.read_text())
        out[r["quant_format"]] = r
    return out


def _same_numbers(a: dict, b: dict) -> None:
    assert a["status"] == b["status"] == "ok"
    assert a["config_hash"] == b["config_hash"]
    for key in ("size_mb", "bits_per_weight", "compression_ratio", "passed_threshold"):
        assert a[key] == b[key], key
    for key in FLOAT_METRICS:
        assert a["metrics"][key] == pytest.approx(b["metrics"][key], rel=1e-6, abs=1e-9), key
    assert a["score"] == pytest.approx(b["score"], rel=1e-6)


@pytest.fixture(scope="module")
def basic_sweep(cli, ql_env):
    cli("-m", *TINY, "quant=int8,int4", "tracking=disabled", "sweep_name=launch_basic")
    return Path(ql_env["QUANTLOOP_OUTPUTS"]) / "sweeps" / "launch_basic"


@pytest.mark.slow
def test_joblib_sweep_matches_basic_launcher(basic_sweep, cli, ql_env):
    cli("-m", *TINY, "quant=int8,int4", *JOBLIB2, "tracking=wandb_offline",
        "sweep_name=launch_joblib")  # fmt: skip
    sweep = Path(ql_env["QUANTLOOP_OUTPUTS"]) / "sweeps" / "launch_joblib"
    basic, par = _results(basic_sweep), _results(sweep)
    assert set(basic) == set(par) == {"int8", "int4"}
    for quant in basic:
        _same_numbers(basic[quant], par[quant])
        assert par[quant]["sweep_id"] == "launch_joblib"
        assert Path(par[quant]["job_dir"]).parent == sweep  # each job wrote in its own dir
        # the job dir name depends on the task overrides only, not on the launcher
        assert Path(par[quant]["job_dir"]).name == Path(basic[quant]["job_dir"]).name
    # selection after the sweep does not depend on the launcher
    sel_basic = json.loads((basic_sweep / "selection.json").read_text())
    sel_par = json.loads((sweep / "selection.json").read_text())
    assert sel_par["chosen"]["quant_format"] == sel_basic["chosen"]["quant_format"]
    assert sel_par["chosen"]["id"] == par[sel_par["chosen"]["quant_format"]]["id"]
    # both jobs indexed once in the shared store
    assert ResultStore(ql_env["QUANTLOOP_STORE"]).count(sweep_id="launch_joblib") == 2
    # two W&B offline runs written at the same time into one sweep dir: one run per job, intact
    runs = [read_offline_run(d) for d in (sweep / "wandb").glob("offline-run-*")]
    jobs = {r["summary"]["metrics/kld_mean"]: r for r in runs if r["job_type"] == "quantize"}
    assert len(jobs) == 2
    for r in par.values():
        run = jobs[r["metrics"]["kld_mean"]]
        assert run["group"] == "launch_joblib"
        assert run["config"]["quant"]["name"] == r["quant_format"]
    assert sum(r["job_type"] == "selection" for r in runs) == 1


def _wired() -> bool:
    return "runner.parallel" in (ROOT / "runner" / "job.py").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not _wired(), reason="runner/job.py does not call runner.parallel yet")
def test_joblib_jobs_take_their_share_of_the_cores(basic_sweep, cli, ql_env):
    # needs the joblib sweep of the test above (same module, same session outputs)
    sweep = Path(ql_env["QUANTLOOP_OUTPUTS"]) / "sweeps" / "launch_joblib"
    if not sweep.exists():
        cli("-m", *TINY, "quant=int8,int4", *JOBLIB2, "tracking=disabled",
            "sweep_name=launch_joblib")  # fmt: skip
    want = job_threads(0, 2)
    logs = [p.read_text() for p in sweep.glob("*/run.log")]
    assert len(logs) == 2
    assert all(f"threads={want} " in text for text in logs), logs
    basic_logs = [p.read_text() for p in basic_sweep.glob("*/run.log")]
    assert all(f"threads={job_threads(0, 1)} " in text for text in basic_logs)


def _store_heals_on_skip() -> bool:
    source = (ROOT / "runner" / "job.py").read_text()
    return ".add(old)" in source


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


@pytest.mark.slow
def test_interrupted_joblib_sweep_resumes_only_unfinished_jobs(basic_sweep, cli, ql_env):
    levels = ("int8", "int4", "int3", "int2")
    args = ["-m", *TINY, f"quant={','.join(levels)}", *JOBLIB2, "tracking=disabled"]
    sweep = Path(ql_env["QUANTLOOP_OUTPUTS"]) / "sweeps" / "launch_resume"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args, "sweep_name=launch_resume"],
        cwd=ROOT,
        env=ql_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the loky workers go down with it
    )
    try:
        deadline = time.monotonic() + 900
        while not list(sweep.glob("*/result.json")):
            assert proc.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "no job finished in time"
            time.sleep(0.2)
        _kill_group(proc, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGTERM)
            proc.wait(timeout=30)
    finally:
        _kill_group(proc, signal.SIGKILL)
    before = _results(sweep)
    assert 1 <= len(before) < len(levels), "the interrupt did not land mid-sweep"
    assert all(r["status"] == "ok" for r in before.values())

    rerun = cli(*args, "sweep_name=launch_resume")
    after = _results(sweep)
    assert set(after) == set(levels)
    assert all(r["status"] == "ok" for r in after.values())
    for quant, r in before.items():
        assert after[quant]["id"] == r["id"], f"{quant} was redone"
    log = rerun.stdout + rerun.stderr
    assert log.count("skipping") == len(before)
    assert (sweep / "selection.json").exists()
    # The interrupt can land between a job's result.json and its store row; the skipped job must
    # then be indexed on the re-run (store upsert on skip in runner/job.py).
    indexed = ResultStore(ql_env["QUANTLOOP_STORE"]).count(sweep_id="launch_resume")
    if indexed < len(levels) and not _store_heals_on_skip():
        pytest.xfail("runner/job.py does not index skipped jobs yet: store lost an interrupted job")
    assert indexed == len(levels)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="hydra-ray-launcher is not installed (extra 'ray')")
def test_ray_local_sweep_matches_basic_launcher(basic_sweep, cli, ql_env):
    cli("-m", *TINY, "quant=int8,int4", "tracking=disabled", "sweep_name=launch_ray",
        "hydra/launcher=ray", "++hydra.launcher.ray.init.num_cpus=2",
        "++hydra.launcher.ray.init.include_dashboard=false")  # fmt: skip
    ray_results = _results(Path(ql_env["QUANTLOOP_OUTPUTS"]) / "sweeps" / "launch_ray")
    basic = _results(basic_sweep)
    assert set(ray_results) == set(basic)
    for quant in basic:
        _same_numbers(basic[quant], ray_results[quant])
