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


def default_store_path() -> Path:
    """The store path in force: ``$QUANTLOOP_STORE`` if set, else :data:`DEFAULT_STORE`."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE).expanduser()


__all__ = ["DEFAULT_STORE", "STORE_ENV", "default_store_path"]
