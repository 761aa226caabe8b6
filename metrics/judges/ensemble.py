"""Ensemble judge: a weighted combination of judges and a measure of how much they agree.

Combined score per candidate = weighted mean of the member judges' scores (weights renormalised
over the judges that scored the candidate). Consensus is reported two ways:

* ``mean_tau``: mean Kendall tau-b between every two members' candidate scores, in [-1, 1];
* ``agreement``: (mean_tau + 1) / 2 in [0, 1], compared with ``consensus_threshold``.

With fewer than two scoring members or fewer than two candidates consensus is undefined (None).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from metrics.judges import build_judge, register_judge
from metrics.judges.agreement import tau_on_common
from metrics.judges.base import CandidateResponses, Judge, JudgeError, JudgeResult, Prompt


@register_judge("ensemble")
class EnsembleJudge(Judge):
    def __init__(
        self,
        judges: list[Judge | dict[str, Any]],
        weights: dict[str, float] | None = None,
        consensus_threshold: float = 0.7,
        name: str = "ensemble",
    ) -> None:
        members = []
        for j in judges:
            if isinstance(j, dict):
                spec = dict(j)
                kind = spec.pop("judge", None) or spec.pop("type", None)
                if kind is None:
                    raise JudgeError(
                        "ensemble: each judge spec needs a 'judge' key (its registered name)"
                    )
                j = build_judge(kind, **spec)
            members.append(j)
        if not members:
            raise JudgeError("ensemble: needs at least one judge")
        names = [j.name for j in members]
        if len(set(names)) != len(names):
            raise JudgeError(f"ensemble: judge names must be unique, got {names}")
        weights = dict(weights or dict.fromkeys(names, 1.0))
        unknown = set(weights) - set(names)
        if unknown:
            raise JudgeError(
                f"ensemble.weights: unknown judges {sorted(unknown)}; members: {names}"
            )
        if any(w < 0 for w in weights.values()):
            raise JudgeError("ensemble.weights must be >= 0")
        if not 0 <= consensus_threshold <= 1:
            raise JudgeError("ensemble.consensus_threshold must be in [0, 1]")
        self.judges = members
        self.weights = {n: float(weights.get(n, 0.0)) for n in names}
        self.consensus_threshold = consensus_threshold
        self.name = name

    def judge(
        self,
        prompts: list[Prompt],
        reference: CandidateResponses | None,
        candidates: list[CandidateResponses],
    ) -> JudgeResult:
        members = [j.judge(prompts, reference, candidates) for j in self.judges]
        scores: dict[str, float | None] = {}
        for cand in (c.candidate for c in candidates):
            num = den = 0.0
            for r in members:
                s = r.scores.get(cand)
                w = self.weights[r.judge]
                if s is not None and w > 0:
                    num += w * s
                    den += w
            scores[cand] = num / den if den > 0 else None
        taus = {}
        for a, b in combinations(members, 2):
            tau, n = tau_on_common(a.scores, b.scores)
            taus[f"{a.judge}~{b.judge}"] = {"tau_b": tau, "n": n}
        defined = [t["tau_b"] for t in taus.values() if t["tau_b"] is not None]
        mean_tau = sum(defined) / len(defined) if defined else None
        agreement = (mean_tau + 1) / 2 if mean_tau is not None else None
        return JudgeResult(
            judge=self.name,
            scores=scores,
            pairs=[p for r in members for p in r.pairs],
            errors=[{"judge": r.judge, **e} for r in members for e in r.errors],
            details={
                "kind": "ensemble",
                "weights": self.weights,
                "members": {r.judge: r.to_dict() for r in members},
                "consensus": {
                    "method": "mean pairwise Kendall tau-b between member judges",
                    "pairwise_tau_b": taus,
                    "mean_tau": mean_tau,
                    "agreement": agreement,
                    "threshold": self.consensus_threshold,
                    "reached": None if agreement is None else agreement >= self.consensus_threshold,
                },
            },
        )
