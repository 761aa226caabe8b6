"""Resource sampling for a job: peak resident memory and mean CPU use (seed 000's fields)."""

from __future__ import annotations

import threading
import time

import psutil


class ResourceMonitor:
    """Samples this process every ``interval`` seconds in a daemon thread."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_rss = self._proc.memory_info().rss
        self._cpu: list[float] = []
        self._t0 = time.perf_counter()

    def _sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss)
        self._cpu.append(self._proc.cpu_percent(None))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> ResourceMonitor:
        self._proc.cpu_percent(None)  # prime the counter
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._t0

    @property
    def memory_peak_mb(self) -> float:
        return self.peak_rss / 2**20

    @property
    def cpu_avg_percent(self) -> float:
        return sum(self._cpu) / len(self._cpu) if self._cpu else 0.0
