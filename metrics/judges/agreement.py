"""Rank agreement statistics (pure functions, no dependencies)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b between two paired score lists (ties handled); None if undefined.

    tau-b = (concordant - discordant) / sqrt((n0 - ties_x) * (n0 - ties_y)) with n0 = n(n-1)/2.
    Undefined (None) with fewer than two items or when one list is constant.
    """
    if len(x) != len(y):
        raise ValueError(f"kendall_tau_b needs paired lists, got lengths {len(x)} and {len(y)}")
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx = x[i] - x[j]
            dy = y[i] - y[j]
            if dx == 0 and dy == 0:
                ties_x += 1
                ties_y += 1
            elif dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    n0 = n * (n - 1) // 2
    denom = math.sqrt((n0 - ties_x) * (n0 - ties_y))
    if denom == 0:
        return None
    return (concordant - discordant) / denom


def tau_on_common(
    a: dict[str, float | None], b: dict[str, float | None]
) -> tuple[float | None, int]:
    """Kendall tau-b over the keys both dicts score (not None); returns (tau, n)."""
    keys = sorted(k for k in a if k in b and a[k] is not None and b[k] is not None)
    if len(keys) < 2:
        return None, len(keys)
    return kendall_tau_b([a[k] for k in keys], [b[k] for k in keys]), len(keys)
