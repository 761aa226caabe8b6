"""Data types shared by every judge: prompts, candidates' responses, verdicts and results.

A judge compares candidates' responses to a fixed prompt set, usually against the full-precision
model's responses (the reference), and returns a :class:`JudgeResult`: one score in [0, 1] per
candidate (higher is better), per-prompt scores, pairwise verdicts (for Bradley-Terry) and the
errors it met. A failed judgement is recorded as an error, never turned into a score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class JudgeError(RuntimeError):
    """A judge could not run (bad configuration, unreachable backend, missing model)."""


class JudgeOutputError(ValueError):
    """A judge model's output could not be parsed into the structure the rubric asks for."""


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    emotion: str = ""


@dataclass
class CandidateResponses:
    """One candidate's responses on the prompt set: prompt id -> response text."""

    candidate: str
    responses: dict[str, str]


@dataclass
class PairVerdict:
    """A pairwise comparison of two candidates on one prompt, judged in both orders.

    ``raw`` holds the winner named in each order, mapped back to candidate ids
    (order 1 shows ``a`` first, order 2 shows ``b`` first); ``None`` means the judge said tie.
    ``winner`` is the candidate both orders agree on, or ``None`` (a tie) when they disagree.
    """

    prompt_id: str
    a: str
    b: str
    winner: str | None
    raw: list[str | None]
    consistent: bool

    def outcome(self) -> float:
        """1.0 if ``a`` won, 0.0 if ``b`` won, 0.5 for a tie."""
        if self.winner is None:
            return 0.5
        return 1.0 if self.winner == self.a else 0.0


@dataclass
class JudgeResult:
    judge: str
    scores: dict[str, float | None]
    item_scores: dict[str, dict[str, float | None]] = field(default_factory=dict)
    pairs: list[PairVerdict] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def ranking(self) -> list[str]:
        """Candidates ordered best first (candidates without a score last)."""
        scored = [c for c, s in self.scores.items() if s is not None]
        unscored = [c for c, s in self.scores.items() if s is None]
        return sorted(scored, key=lambda c: (-self.scores[c], c)) + sorted(unscored)

    def comparisons(self) -> list[tuple[str, str, float]]:
        """Pairwise outcomes ``(a, b, outcome)`` for Bradley-Terry."""
        return [(p.a, p.b, p.outcome()) for p in self.pairs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "judge": self.judge,
            "scores": self.scores,
            "ranking": self.ranking(),
            "item_scores": self.item_scores,
            "pairs": [asdict(p) for p in self.pairs],
            "errors": self.errors,
            "error_count": len(self.errors),
            "details": self.details,
        }


class Judge:
    """Interface: ``judge(prompts, reference, candidates) -> JudgeResult``."""

    name: str = "judge"

    def judge(
        self,
        prompts: list[Prompt],
        reference: CandidateResponses | None,
        candidates: list[CandidateResponses],
    ) -> JudgeResult:
        raise NotImplementedError


def check_candidates(prompts: list[Prompt], candidates: list[CandidateResponses]) -> None:
    """Every candidate must answer every prompt, and ids must be unique."""
    ids = [c.candidate for c in candidates]
    if len(set(ids)) != len(ids):
        raise JudgeError(f"candidate ids must be unique, got {ids}")
    for c in candidates:
        missing = [p.id for p in prompts if p.id not in c.responses]
        if missing:
            raise JudgeError(f"candidate '{c.candidate}' has no response for prompts {missing}")
