"""Pareto front of size vs quality, and its plot.

A point dominates another when it is no larger, no worse on the quality metric, and strictly
better on at least one of the two. The front is the set of points nobody dominates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Point:
    """One candidate on the size/quality plane."""

    id: str
    size: float
    quality: float
    label: str = ""


def _dominates(a: Point, b: Point, lower_is_better: bool) -> bool:
    a_q, b_q = (a.quality, b.quality) if lower_is_better else (-a.quality, -b.quality)
    no_worse = a.size <= b.size and a_q <= b_q
    strictly = a.size < b.size or a_q < b_q
    return no_worse and strictly


def pareto_front(points: Sequence[Point], lower_is_better: bool = True) -> list[Point]:
    """Non-dominated points (finite coordinates only), sorted by size then quality."""
    finite = [p for p in points if math.isfinite(p.size) and math.isfinite(p.quality)]
    front = [p for p in finite if not any(_dominates(o, p, lower_is_better) for o in finite)]
    sign = 1.0 if lower_is_better else -1.0
    return sorted(front, key=lambda p: (p.size, sign * p.quality, p.id))


def plot_pareto(
    points: Sequence[Point],
    fronts: dict[str, Sequence[Point]],
    path: str | Path,
    *,
    x_label: str = "size (MB)",
    y_label: str = "quality",
    chosen_ids: Sequence[str] = (),
    title: str = "size vs quality",
) -> Path:
    """Scatter every point, draw each front as a step line, ring chosen points; write a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    try:
        finite = [p for p in points if math.isfinite(p.size) and math.isfinite(p.quality)]
        ax.scatter([p.size for p in finite], [p.quality for p in finite], c="0.6", label="jobs")
        for p in finite:
            ax.annotate(
                p.label or p.id,
                (p.size, p.quality),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        for name, front in fronts.items():
            if front:
                label = f"Pareto front ({name})" if len(fronts) > 1 else "Pareto front"
                ax.step(
                    [p.size for p in front],
                    [p.quality for p in front],
                    where="post",
                    marker="o",
                    label=label,
                )
        chosen = [p for p in finite if p.id in set(chosen_ids)]
        if chosen:
            ax.scatter(
                [p.size for p in chosen],
                [p.quality for p in chosen],
                s=180,
                facecolors="none",
                edgecolors="tab:red",
                linewidths=2,
                label="chosen",
            )
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out
