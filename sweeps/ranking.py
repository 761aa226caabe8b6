"""Final ranking of Pass-2 candidates: weighted AI + human score, agreement, Bradley-Terry.

* ``weighted_scores``: final = ai_weight * AI + human_weight * human (both in [0, 1]).
  A candidate missing one side gets the other side alone and is flagged ``partial``.
* ``confidence``: Kendall's tau-b between the AI and the human scores of the candidates both
  rated (``(tau + 1) / 2`` is reported as ``confidence`` in [0, 1]).
* ``bradley_terry``: strengths from pairwise outcomes by Hunter's (2004) MM algorithm;
  ties count half a win to each side; an optional symmetric ``prior`` (pseudo-wins per compared
  pair) keeps candidates that never won at a finite strength.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from metrics.judges.agreement import kendall_tau_b, tau_on_common

__all__ = [
    "bradley_terry",
    "confidence",
    "final_ranking",
    "kendall_tau_b",
    "krippendorff_alpha_interval",
    "weighted_scores",
]


def _check_weights(ai_weight: float, human_weight: float) -> None:
    if ai_weight < 0 or human_weight < 0 or ai_weight + human_weight <= 0:
        raise ValueError(
            f"ai_weight={ai_weight} and human_weight={human_weight} must be >= 0 and not both 0"
        )
    if abs(ai_weight + human_weight - 1.0) > 1e-6:
        raise ValueError(f"ai_weight + human_weight must be 1, got {ai_weight + human_weight:g}")


def weighted_scores(
    ai: dict[str, float | None],
    human: dict[str, float | None],
    ai_weight: float = 0.4,
    human_weight: float = 0.6,
) -> dict[str, dict[str, Any]]:
    """Per candidate: ``{ai, human, final, partial}``; final None if neither side scored it."""
    _check_weights(ai_weight, human_weight)
    for side, scores in (("ai", ai), ("human", human)):
        for c, s in scores.items():
            if s is not None and not 0.0 <= s <= 1.0:
                raise ValueError(f"{side} score of '{c}' is {s}; scores must be in [0, 1]")
    out = {}
    for c in sorted(set(ai) | set(human)):
        a, h = ai.get(c), human.get(c)
        if a is not None and h is not None:
            final, partial = ai_weight * a + human_weight * h, False
        elif a is not None or h is not None:
            final, partial = (a if a is not None else h), True
        else:
            final, partial = None, True
        out[c] = {"ai": a, "human": h, "final": final, "partial": partial}
    return out


def confidence(ai: dict[str, float | None], human: dict[str, float | None]) -> dict[str, Any]:
    """Agreement between AI and human scores as Kendall's tau-b (None when undefined)."""
    tau, n = tau_on_common(ai, human)
    return {
        "method": "kendall_tau_b",
        "tau_b": tau,
        "n_candidates": n,
        "confidence": None if tau is None else (tau + 1) / 2,
    }


def krippendorff_alpha_interval(units: Iterable[Iterable[float]]) -> float | None:
    """Krippendorff's alpha (interval metric) for inter-rater reliability.

    ``units``: for each rated item, the values the raters gave it. Items with one value are not
    pairable and are ignored. alpha = 1 - D_o / D_e with
    D_o = (1/n) sum_u 1/(m_u - 1) sum_{i != j in u} (v_i - v_j)^2 and
    D_e = 1/(n (n - 1)) sum_{i != j over all pairable values} (v_i - v_j)^2.
    None if fewer than two pairable values or no variation at all.
    """
    pairable = [list(u) for u in units]
    pairable = [u for u in pairable if len(u) >= 2]
    values = [v for u in pairable for v in u]
    n = len(values)
    if n < 2:
        return None
    d_o = sum(sum((a - b) ** 2 for a in u for b in u) / (len(u) - 1) for u in pairable) / n
    total = sum(values)
    # sum over ordered pairs i != j of (v_i - v_j)^2 = 2 (n sum v^2 - (sum v)^2)
    d_e = 2 * (n * sum(v * v for v in values) - total * total) / (n * (n - 1))
    if d_e == 0:
        return None
    return 1.0 - d_o / d_e


def bradley_terry(
    comparisons: Iterable[tuple[str, str, float]],
    items: Iterable[str] | None = None,
    prior: float = 0.0,
    max_iter: int = 10_000,
    tol: float = 1e-10,
) -> dict[str, Any]:
    """Bradley-Terry strengths (sum to 1) from ``(a, b, outcome)``; outcome 1 = a won, 0.5 tie.

    MM update: p_i <- W_i / sum_j n_ij / (p_i + p_j), with W_i the wins of i and n_ij the
    comparisons of i and j; then renormalise. Returns strengths, wins, iterations, converged.
    """
    wins: dict[tuple[str, str], float] = {}
    names = set(items or [])
    for a, b, o in comparisons:
        if not 0.0 <= o <= 1.0:
            raise ValueError(f"outcome of ({a}, {b}) is {o}; must be in [0, 1]")
        if a == b:
            raise ValueError(f"a candidate cannot be compared with itself: {a}")
        names.update((a, b))
        wins[(a, b)] = wins.get((a, b), 0.0) + o
        wins[(b, a)] = wins.get((b, a), 0.0) + (1.0 - o)
    if prior < 0:
        raise ValueError("prior must be >= 0")
    if prior:
        for key in list(wins):
            wins[key] += prior
    order = sorted(names)
    if not order:
        return {"strengths": {}, "wins": {}, "iterations": 0, "converged": True}
    total_wins = {i: sum(w for (x, _), w in wins.items() if x == i) for i in order}
    p = dict.fromkeys(order, 1.0 / len(order))
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (reported below)
        new = {}
        for i in order:
            denom = sum(
                (wins.get((i, j), 0.0) + wins.get((j, i), 0.0)) / (p[i] + p[j])
                for j in order
                if j != i and (wins.get((i, j), 0.0) + wins.get((j, i), 0.0)) > 0
            )
            new[i] = total_wins[i] / denom if denom > 0 else p[i]
        s = sum(new.values())
        new = {i: v / s for i, v in new.items()} if s > 0 else new
        delta = max(abs(new[i] - p[i]) for i in order)
        p = new
        if delta < tol:
            converged = True
            break
    return {
        "strengths": p,
        "log_strengths": {i: (math.log(v) if v > 0 else None) for i, v in p.items()},
        "wins": total_wins,
        "iterations": iterations,
        "converged": converged,
        "prior": prior,
    }


def final_ranking(
    ai: dict[str, float | None],
    human: dict[str, float | None],
    comparisons: Iterable[tuple[str, str, float]] = (),
    ai_weight: float = 0.4,
    human_weight: float = 0.6,
    bt_prior: float = 0.1,
) -> dict[str, Any]:
    """Everything the report needs: weighted scores, order, confidence, Bradley-Terry."""
    table = weighted_scores(ai, human, ai_weight, human_weight)
    ranked = sorted(
        (c for c in table if table[c]["final"] is not None), key=lambda c: (-table[c]["final"], c)
    )
    for pos, c in enumerate(ranked, 1):
        table[c]["rank"] = pos
    comps = list(comparisons)
    bt = bradley_terry(comps, items=table.keys(), prior=bt_prior) if comps else None
    return {
        "weights": {"ai": ai_weight, "human": human_weight},
        "candidates": table,
        "ranking": ranked,
        "winner": ranked[0] if ranked else None,
        "confidence": confidence(ai, human),
        "bradley_terry": bt,
        "n_comparisons": len(comps),
    }
