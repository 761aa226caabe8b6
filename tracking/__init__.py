"""History and performance analytics over job results, a local dashboard and static reports.

``tracking.analytics`` is pure (lists of result dicts in, plain values out). The HTTP API
(``tracking.api``, needs the ``dashboard`` extra) and the static report (``tracking.report``)
are thin layers over it. This package never writes to the results store.
"""

from __future__ import annotations

from runner.store import DEFAULT_STORE, default_store_path

__all__ = ["DEFAULT_STORE", "default_store_path"]
