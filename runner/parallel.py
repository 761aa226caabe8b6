"""Thread budgeting for jobs that run side by side.

A quantloop job uses torch (intra-op threads), numba (parallel kernels) and the BLAS under numpy.
When a launcher runs several jobs at once on one machine, each job must take only its share of the
cores, or the jobs fight over them and the sweep gets slower than running them one by one.

``job_threads(requested, n_parallel_jobs)`` is the rule: an explicit ``runner.threads`` wins;
otherwise a job gets ``cores // n_parallel_jobs`` threads (at least 1), so that
``jobs x threads <= cores``. ``parallel_jobs()`` tells, inside a job, how many jobs the launcher
runs at once on this machine:

- ``$QUANTLOOP_PARALLEL_JOBS`` if set (for launchers this module does not know);
- joblib: ``hydra.launcher.n_jobs`` (``-1`` = all cores, ``-2`` = all but one, as in joblib);
- ray: the cores of this node divided by the CPUs a task asks for
  (``hydra.launcher.ray.remote.num_cpus``, Ray's default is 1);
- submitit (Slurm or local): 1 (a Slurm job owns its ``cpus_per_task``; see :func:`available_cores`);
- the basic launcher or no Hydra at all: 1.

``limit_threads(n)`` applies a budget to torch, numba and the already loaded BLAS/OpenMP pools and
sets ``OMP_NUM_THREADS`` and friends for anything loaded later. The joblib launcher's loky workers
already get these variables from joblib (``cores // n_jobs``) when they start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

PARALLEL_JOBS_ENV = "QUANTLOOP_PARALLEL_JOBS"
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def available_cores() -> int:
    """Cores this process may use: ``$SLURM_CPUS_PER_TASK`` inside a Slurm job, else the CPU
    affinity mask (what cgroups/taskset allow), else ``os.cpu_count()``."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def job_threads(requested: int, n_parallel_jobs: int | None, cores: int | None = None) -> int:
    """Threads for one job.

    ``requested`` > 0 is the user's explicit ``runner.threads`` and is returned as is (a warning is
    logged when it oversubscribes the cores). ``requested`` == 0 means automatic:
    ``cores // n_parallel_jobs`` (at least 1); ``n_parallel_jobs`` None or < 1 counts as 1.
    """
    if requested < 0:
        raise ValueError(f"runner.threads={requested} must be >= 0 (0 = automatic)")
    cores = cores if cores and cores > 0 else available_cores()
    jobs = n_parallel_jobs if n_parallel_jobs and n_parallel_jobs > 0 else 1
    if requested > 0:
        if requested * jobs > cores:
            log.warning(
                "runner.threads=%d x %d parallel jobs > %d cores: the jobs will oversubscribe "
                "the CPU (set runner.threads=0 for an automatic share)",
                requested,
                jobs,
                cores,
            )
        return requested
    return max(1, cores // jobs)


def _joblib_n_jobs(n_jobs: Any, cores: int) -> int:
    """Workers joblib starts for ``n_jobs`` (negative counts back from the number of cores)."""
    n = int(n_jobs if n_jobs is not None else 1)
    if n == 0:
        raise ValueError("hydra.launcher.n_jobs=0 is not valid (joblib needs != 0)")
    return max(1, cores + 1 + n) if n < 0 else n


def launcher_parallel_jobs(launcher: Mapping[str, Any] | None, cores: int | None = None) -> int:
    """Jobs that ``launcher`` (the ``hydra.launcher`` config node) runs at once on one machine."""
    cores = cores if cores and cores > 0 else available_cores()
    if not launcher:
        return 1
    target = str(launcher.get("_target_", "")).lower()
    if "joblib" in target:
        return _joblib_n_jobs(launcher.get("n_jobs", -1), cores)
    if "ray" in target:
        remote = (launcher.get("ray") or {}).get("remote") or {}
        per_task = float(remote.get("num_cpus") or 1)
        return max(1, int(cores // max(per_task, 1e-9)))
    return 1  # basic launcher, submitit (each Slurm job owns its CPUs), unknown launchers


def parallel_jobs(launcher: Mapping[str, Any] | None = None) -> int:
    """How many jobs run at once on this machine, seen from inside a job.

    ``$QUANTLOOP_PARALLEL_JOBS`` wins; else ``launcher`` (a ``hydra.launcher`` node) or, when not
    given, the launcher of the running Hydra job; 1 outside Hydra.
    """
    env = os.environ.get(PARALLEL_JOBS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"{PARALLEL_JOBS_ENV}={env!r} must be a positive integer")
        return int(env)
    if launcher is None:
        launcher = _hydra_launcher()
    return launcher_parallel_jobs(launcher)


def _hydra_launcher() -> Mapping[str, Any] | None:
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - hydra is a core dependency
        return None
    if not HydraConfig.initialized():
        return None
    node = HydraConfig.get().get("launcher")
    if node is None:
        return None
    return OmegaConf.to_container(node, resolve=False)  # type: ignore[return-value]


def thread_env(n: int) -> dict[str, str]:
    """``OMP_NUM_THREADS`` and friends for a budget of ``n`` threads."""
    return dict.fromkeys(THREAD_ENV_VARS, str(int(n)))


def limit_threads(n: int) -> int:
    """Apply a budget of ``n`` threads to this process: torch, numba, loaded BLAS/OpenMP pools
    (threadpoolctl, if installed) and the environment of libraries loaded later. Returns ``n``."""
    import numba
    import torch

    os.environ.update(thread_env(n))
    torch.set_num_threads(n)
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return n
    threadpool_limits(limits=n)
    return n
