"""Judges behind one interface, registered by name.

``build_judge("embedding")``, ``build_judge("llm", persona=..., backend=...)``,
``build_judge("ensemble", judges=[...])``. An unknown name raises :class:`UnknownJudgeError`
listing the valid names (with a did-you-mean). Chat backends for LLM judges have their own
registry (``build_backend("transformers" | "openai", ...)``) in :mod:`metrics.judges.backends`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from metrics.judges.base import (
    CandidateResponses,
    Judge,
    JudgeError,
    JudgeOutputError,
    JudgeResult,
    PairVerdict,
    Prompt,
)


class UnknownJudgeError(JudgeError, ValueError):
    """A judge (or backend) name that is not registered."""


def unknown_name_error(kind: str, name: str, valid: list[str]) -> UnknownJudgeError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return UnknownJudgeError(f"unknown {kind} '{name}'{hint}; valid choices: {', '.join(valid)}")


JUDGES: dict[str, Callable[..., Judge]] = {}


def register_judge(name: str) -> Callable[[Callable[..., Judge]], Callable[..., Judge]]:
    def deco(factory: Callable[..., Judge]) -> Callable[..., Judge]:
        if name in JUDGES:
            raise ValueError(f"judge '{name}' is already registered")
        JUDGES[name] = factory
        return factory

    return deco


def available_judges() -> list[str]:
    return sorted(JUDGES)


def build_judge(name: str, **kwargs: Any) -> Judge:
    if name not in JUDGES:
        raise unknown_name_error("judge", name, available_judges())
    return JUDGES[name](**kwargs)


# Registration happens on import of the implementations (they import torch lazily).
from metrics.judges import embedding as _embedding  # noqa: E402,F401
from metrics.judges import ensemble as _ensemble  # noqa: E402,F401
from metrics.judges import llm as _llm  # noqa: E402,F401

__all__ = [
    "JUDGES",
    "CandidateResponses",
    "Judge",
    "JudgeError",
    "JudgeOutputError",
    "JudgeResult",
    "PairVerdict",
    "Prompt",
    "UnknownJudgeError",
    "available_judges",
    "build_judge",
    "register_judge",
]
