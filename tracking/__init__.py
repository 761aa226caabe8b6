"""History and performance analytics over job results, a local dashboard and static reports.

``tracking.analytics`` is pure (lists of result dicts in, plain values out). The HTTP API
(``tracking.api``, needs the ``dashboard`` extra) and the static report (``tracking.report``)
are thin layers over it. This package never writes to the results store.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Where the runner indexes results and where the dashboard reads them, unless overridden.
DEFAULT_STORE = Path("~/.cache/quantloop/store.sqlite")
#: Environment variable that overrides :data:`DEFAULT_STORE` (for the runner and the dashboard).
STORE_ENV = "QUANTLOOP_STORE"
#: The runner's cache directory variable; the store lives in it unless ``QUANTLOOP_STORE`` is set.
CACHE_ENV = "QUANTLOOP_CACHE"


def default_store_path() -> Path:
    """The store path in force, by the runner's rule (``paths.store`` in runner/config.py):
    ``$QUANTLOOP_STORE``, else ``$QUANTLOOP_CACHE/store.sqlite``, else :data:`DEFAULT_STORE`."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / DEFAULT_STORE.name
    return DEFAULT_STORE.expanduser()


__all__ = ["CACHE_ENV", "DEFAULT_STORE", "STORE_ENV", "default_store_path"]
