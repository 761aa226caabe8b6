"""LLM persona judges: a rubric prompt, structured JSON scores, pairwise verdicts in both orders.

A persona (YAML, see ``conf/judge/persona_*.yaml``) gives a system prompt, weighted criteria and
two templates (``string.Template`` placeholders, so JSON examples need no escaping):

* ``score_template`` ($prompt, $reference, $response, $criteria, $keys, $min, $max) asks for
  ``{"scores": {criterion: int}, "rationale": str}``;
* ``pair_template`` ($prompt, $reference, $response_a, $response_b, $criteria) asks for
  ``{"winner": "A" | "B" | "tie", "rationale": str}``.

Output is parsed strictly (every criterion present, integers within the scale). Unparseable output
is retried (``max_retries`` times, sampling with a fresh seed and a reminder); if it still fails
the item is recorded as an error and contributes no score. Each pair is judged twice, once per
order; if the two verdicts name different candidates the pair is a tie (position bias cancels).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from metrics.judges import register_judge
from metrics.judges.backends import BackendError, ChatBackend, build_backend
from metrics.judges.base import (
    CandidateResponses,
    Judge,
    JudgeError,
    JudgeOutputError,
    JudgeResult,
    PairVerdict,
    Prompt,
    check_candidates,
)

RETRY_REMINDER = "Reply with only the JSON object described above, nothing else."
PERSONA_KEYS = {
    "name",
    "description",
    "system",
    "criteria",
    "scale",
    "score_template",
    "pair_template",
}


@dataclass
class Persona:
    name: str
    system: str
    criteria: dict[str, dict[str, Any]]  # name -> {weight, description}
    score_template: str
    pair_template: str
    description: str = ""
    scale: tuple[int, int] = (1, 5)
    weights: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        if not self.criteria:
            raise JudgeError(f"persona '{self.name}': criteria must not be empty")
        lo, hi = self.scale
        if not (isinstance(lo, int) and isinstance(hi, int) and lo < hi):
            raise JudgeError(
                f"persona '{self.name}': scale must be two integers [min, max], min < max"
            )
        weights = {}
        for crit, spec in self.criteria.items():
            if not isinstance(spec, dict) or "weight" not in spec:
                raise JudgeError(f"persona '{self.name}': criteria.{crit} needs a 'weight'")
            weights[crit] = float(spec["weight"])
            if weights[crit] < 0:
                raise JudgeError(f"persona '{self.name}': criteria.{crit}.weight must be >= 0")
        total = sum(weights.values())
        if total <= 0:
            raise JudgeError(f"persona '{self.name}': criteria weights must sum to > 0")
        self.weights = {k: v / total for k, v in weights.items()}
        for key, tmpl in (
            ("score_template", self.score_template),
            ("pair_template", self.pair_template),
        ):
            try:
                string.Template(tmpl).substitute(_template_probe())
            except (KeyError, ValueError) as e:
                raise JudgeError(
                    f"persona '{self.name}': {key} has an unknown placeholder {e}"
                ) from e

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Persona:
        unknown = set(d) - PERSONA_KEYS
        if unknown:
            raise JudgeError(
                f"persona: unknown keys {sorted(unknown)}; valid keys: {sorted(PERSONA_KEYS)}"
            )
        missing = {"name", "system", "criteria", "score_template", "pair_template"} - set(d)
        if missing:
            raise JudgeError(f"persona: missing keys {sorted(missing)}")
        scale = tuple(d.get("scale", (1, 5)))
        if len(scale) != 2:
            raise JudgeError("persona: scale must be [min, max]")
        return cls(
            name=d["name"],
            system=d["system"],
            criteria={k: dict(v) for k, v in d["criteria"].items()},
            score_template=d["score_template"],
            pair_template=d["pair_template"],
            description=d.get("description", ""),
            scale=(int(scale[0]), int(scale[1])),
        )

    def criteria_text(self) -> str:
        return "\n".join(
            f"- {k} (weight {self.weights[k]:.2f}): {v.get('description', '')}"
            for k, v in self.criteria.items()
        )


def _template_probe() -> dict[str, str]:
    keys = (
        "prompt",
        "reference",
        "response",
        "response_a",
        "response_b",
        "criteria",
        "keys",
        "min",
        "max",
    )
    return dict.fromkeys(keys, "x")


def _json_objects(text: str):
    """Every JSON object embedded in ``text`` (code fences and chatter around it are skipped)."""
    decoder = json.JSONDecoder()
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            yield obj
        i = text.find("{", end)


def parse_scores(text: str, criteria: list[str], scale: tuple[int, int]) -> dict[str, int]:
    """Criterion scores from a judge's output, or :class:`JudgeOutputError` saying what is wrong."""
    lo, hi = scale
    problems = []
    for obj in _json_objects(text):
        scores = obj.get("scores")
        if not isinstance(scores, dict):
            problems.append("an object without a 'scores' object")
            continue
        missing = [c for c in criteria if c not in scores]
        if missing:
            problems.append(f"missing criteria {missing}")
            continue
        out = {}
        for c in criteria:
            v = scores[c]
            if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v):
                problems.append(f"{c}={v!r} is not an integer")
                break
            if not lo <= v <= hi:
                problems.append(f"{c}={v} is outside [{lo}, {hi}]")
                break
            out[c] = int(v)
        else:
            return out
    why = "; ".join(problems) if problems else "no JSON object found"
    raise JudgeOutputError(f"unparseable judge output ({why}): {text[:200]!r}")


def parse_verdict(text: str) -> str:
    """'A', 'B' or 'tie' from ``{"winner": ...}``, or :class:`JudgeOutputError`."""
    for obj in _json_objects(text):
        w = obj.get("winner")
        if isinstance(w, str):
            w = w.strip().strip("\"'").lower()
            if w in ("a", "response a"):
                return "A"
            if w in ("b", "response b"):
                return "B"
            if w in ("tie", "equal", "none", "draw"):
                return "tie"
    raise JudgeOutputError(
        f"unparseable pairwise verdict (need winner A, B or tie): {text[:200]!r}"
    )


def resolve_pair(
    a: str, b: str, first: str, second: str
) -> tuple[str | None, list[str | None], bool]:
    """Combine the verdicts of order 1 (a shown as A) and order 2 (b shown as A).

    Returns ``(winner, raw, consistent)`` where ``raw`` maps each verdict to a candidate id
    (None = tie). Agreement -> that winner; a tie in both -> tie; anything else -> tie and
    ``consistent=False``.
    """
    map1 = {"A": a, "B": b, "tie": None}
    map2 = {"A": b, "B": a, "tie": None}
    for v in (first, second):
        if v not in map1:
            raise ValueError(f"verdict must be 'A', 'B' or 'tie', got {v!r}")
    w1, w2 = map1[first], map2[second]
    if w1 == w2:
        return w1, [w1, w2], True
    return None, [w1, w2], False


@register_judge("llm")
class LLMJudge(Judge):
    def __init__(
        self,
        persona: Persona | dict[str, Any],
        backend: ChatBackend | dict[str, Any],
        pointwise: bool = True,
        pairwise: bool = True,
        max_retries: int = 2,
        max_tokens: int = 160,
        retry_temperature: float = 0.7,
        use_reference: bool = True,
        name: str | None = None,
    ) -> None:
        self.persona = persona if isinstance(persona, Persona) else Persona.from_dict(persona)
        if isinstance(backend, dict):
            backend = build_backend(**backend)
        self.backend = backend
        if not (pointwise or pairwise):
            raise JudgeError("llm judge: enable pointwise and/or pairwise")
        if max_retries < 0:
            raise JudgeError("llm judge: max_retries must be >= 0")
        self.pointwise = pointwise
        self.pairwise = pairwise
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.retry_temperature = retry_temperature
        self.use_reference = use_reference
        self.name = name or f"llm_{self.persona.name}"

    # -- one structured call with retries -------------------------------------------------
    def _ask(self, user: str, parse):
        """Call the backend; parse; on failure retry with sampling. Returns (value, attempts)."""
        messages = [
            {"role": "system", "content": self.persona.system},
            {"role": "user", "content": user},
        ]
        outputs = []
        for attempt in range(self.max_retries + 1):
            msgs = messages
            temperature = 0.0
            if attempt:
                msgs = messages[:-1] + [{"role": "user", "content": f"{user}\n\n{RETRY_REMINDER}"}]
                temperature = self.retry_temperature
            text = self.backend.complete(
                msgs, max_tokens=self.max_tokens, temperature=temperature, seed=attempt
            )
            outputs.append(text)
            try:
                return parse(text), outputs
            except JudgeOutputError:
                continue
        raise JudgeOutputError(f"unparseable after {len(outputs)} attempts", outputs)

    def _fields(self, prompt: Prompt, reference: CandidateResponses | None) -> dict[str, str]:
        ref = reference.responses[prompt.id] if (reference and self.use_reference) else "(none)"
        lo, hi = self.persona.scale
        keys = ", ".join(f'"{c}": <{lo}-{hi}>' for c in self.persona.criteria)
        return {
            "prompt": prompt.text,
            "reference": ref,
            "criteria": self.persona.criteria_text(),
            "keys": "{" + keys + "}",
            "min": str(lo),
            "max": str(hi),
        }

    def _score_item(self, prompt, reference, response: str):
        fields = self._fields(prompt, reference) | {"response": response}
        user = string.Template(self.persona.score_template).substitute(
            fields, response_a="", response_b=""
        )
        crit = list(self.persona.criteria)
        scores, _ = self._ask(user, lambda t: parse_scores(t, crit, self.persona.scale))
        lo, hi = self.persona.scale
        weighted = sum(self.persona.weights[c] * (scores[c] - lo) / (hi - lo) for c in crit)
        return weighted, scores

    def _verdict(self, prompt, reference, first: str, second: str) -> str:
        fields = self._fields(prompt, reference) | {"response_a": first, "response_b": second}
        user = string.Template(self.persona.pair_template).substitute(fields, response="")
        verdict, _ = self._ask(user, parse_verdict)
        return verdict

    @staticmethod
    def _error(kind: str, err: Exception, **where) -> dict[str, Any]:
        raw = err.args[1] if len(err.args) > 1 else []
        return {"kind": kind, "error": str(err.args[0]), "raw": [r[:300] for r in raw], **where}

    # -- the judge ------------------------------------------------------------------------
    def judge(
        self,
        prompts: list[Prompt],
        reference: CandidateResponses | None,
        candidates: list[CandidateResponses],
    ) -> JudgeResult:
        check_candidates(prompts, candidates)
        errors: list[dict[str, Any]] = []
        item_scores: dict[str, dict[str, float | None]] = {}
        criteria_scores: dict[str, dict[str, dict[str, int]]] = {}
        if self.pointwise:
            for cand in candidates:
                item_scores[cand.candidate] = {}
                criteria_scores[cand.candidate] = {}
                for p in prompts:
                    try:
                        w, s = self._score_item(p, reference, cand.responses[p.id])
                    except JudgeOutputError as e:
                        errors.append(
                            self._error(
                                "unparseable_score", e, candidate=cand.candidate, prompt_id=p.id
                            )
                        )
                        w, s = None, None
                    except BackendError as e:
                        errors.append(
                            {
                                "kind": "backend",
                                "error": str(e),
                                "candidate": cand.candidate,
                                "prompt_id": p.id,
                            }
                        )
                        w, s = None, None
                    item_scores[cand.candidate][p.id] = w
                    if s is not None:
                        criteria_scores[cand.candidate][p.id] = s
        pairs: list[PairVerdict] = []
        if self.pairwise:
            for p in prompts:
                for ca, cb in combinations(candidates, 2):
                    ra, rb = ca.responses[p.id], cb.responses[p.id]
                    try:
                        v1 = self._verdict(p, reference, ra, rb)
                        v2 = self._verdict(p, reference, rb, ra)
                    except JudgeOutputError as e:
                        errors.append(
                            self._error(
                                "unparseable_verdict",
                                e,
                                prompt_id=p.id,
                                a=ca.candidate,
                                b=cb.candidate,
                            )
                        )
                        continue
                    except BackendError as e:
                        errors.append(
                            {
                                "kind": "backend",
                                "error": str(e),
                                "prompt_id": p.id,
                                "a": ca.candidate,
                                "b": cb.candidate,
                            }
                        )
                        continue
                    winner, raw, consistent = resolve_pair(ca.candidate, cb.candidate, v1, v2)
                    pairs.append(
                        PairVerdict(p.id, ca.candidate, cb.candidate, winner, raw, consistent)
                    )
        scores = self._candidate_scores(candidates, item_scores, pairs)
        n_pairs = len(pairs)
        return JudgeResult(
            judge=self.name,
            scores=scores,
            item_scores=item_scores,
            pairs=pairs,
            errors=errors,
            details={
                "kind": "llm",
                "persona": self.persona.name,
                "backend": getattr(self.backend, "name", type(self.backend).__name__),
                "criteria_weights": self.persona.weights,
                "criteria_scores": criteria_scores,
                "position_consistency": (
                    sum(p.consistent for p in pairs) / n_pairs if n_pairs else None
                ),
                "score_source": "pointwise" if self.pointwise else "pairwise_win_rate",
            },
        )

    def _candidate_scores(self, candidates, item_scores, pairs) -> dict[str, float | None]:
        if self.pointwise:
            out = {}
            for c in candidates:
                vals = [v for v in item_scores[c.candidate].values() if v is not None]
                out[c.candidate] = sum(vals) / len(vals) if vals else None
            return out
        wins = {c.candidate: 0.0 for c in candidates}
        games = {c.candidate: 0 for c in candidates}
        for p in pairs:
            games[p.a] += 1
            games[p.b] += 1
            o = p.outcome()
            wins[p.a] += o
            wins[p.b] += 1 - o
        return {c: (wins[c] / games[c] if games[c] else None) for c in wins}
