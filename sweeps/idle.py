"""Wait until the machine is idle before starting a job (``runner.wait_for_idle``).

Load is the 1-minute load average divided by the number of logical cores (0.5 = half the cores
busy), or, with ``measure="cpu"``, the CPU utilisation over one second as a fraction. The runner
calls :func:`wait_for_idle` before each job unless ``force=true``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)

MEASURES = ("load", "cpu")


@dataclass(frozen=True)
class IdleWait:
    """Outcome of a wait: ``idle`` is False when ``timeout_s`` passed first."""

    idle: bool
    load: float
    waited_s: float
    polls: int


def current_load(measure: str = "load") -> float:
    """Per-core 1-minute load average (``"load"``) or CPU utilisation fraction (``"cpu"``)."""
    if measure == "load":
        return psutil.getloadavg()[0] / (psutil.cpu_count() or 1)
    if measure == "cpu":
        return psutil.cpu_percent(interval=1.0) / 100.0
    raise ValueError(f"idle measure '{measure}' is unknown; valid: {', '.join(MEASURES)}")


def wait_for_idle(
    max_load: float,
    poll_s: float = 30.0,
    timeout_s: float | None = 3600.0,
    *,
    measure: str = "load",
    load_fn: Callable[[], float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> IdleWait:
    """Block until the load is <= ``max_load`` or ``timeout_s`` seconds pass (None = forever).

    Returns at once when the machine is already idle. ``load_fn`` replaces the measurement
    (e.g. to read a cluster's own signal); it must return a load on the same scale.
    """
    if not max_load > 0:
        raise ValueError(f"runner.idle_max_load={max_load} must be > 0 (per-core load fraction)")
    if not poll_s > 0:
        raise ValueError(f"idle poll_s={poll_s} must be > 0 seconds")
    if timeout_s is not None and timeout_s < 0:
        raise ValueError(f"runner.idle_timeout_s={timeout_s} must be >= 0 (or null = forever)")
    if measure not in MEASURES:
        raise ValueError(f"idle measure '{measure}' is unknown; valid: {', '.join(MEASURES)}")
    read = load_fn or (lambda: current_load(measure))
    start = time.monotonic()
    polls = 0
    while True:
        load = float(read())
        polls += 1
        waited = time.monotonic() - start
        if load <= max_load:
            return IdleWait(True, load, waited, polls)
        if timeout_s is not None and waited >= timeout_s:
            log.warning("machine not idle after %.0f s (load %.2f > %.2f)", waited, load, max_load)
            return IdleWait(False, load, waited, polls)
        if polls == 1:
            log.info("waiting for idle: load %.2f > %.2f (poll every %g s)", load, max_load, poll_s)
        pause = poll_s if timeout_s is None else min(poll_s, max(timeout_s - waited, 0.0))
        sleep(pause)
