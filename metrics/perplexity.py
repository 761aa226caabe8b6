"""Perplexity on fixed windows of real text: token-weighted, BOS-aware.

Every window holds ``seq_len`` token ids. When the tokenizer has a BOS token, each window is
``[BOS] + (seq_len - 1)`` text tokens and the model is never scored on predicting the BOS itself;
without BOS, the first text token of each window is context only. Perplexity is
``exp(sum of NLL over all scored tokens / number of scored tokens)`` across all windows (token
weighted, not a mean of per-window perplexities).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def make_windows(
    token_ids: np.ndarray | list[int], seq_len: int, n_windows: int, bos_id: int | None
) -> np.ndarray:
    """Cut consecutive, non-overlapping windows (int64, shape (n_windows, seq_len))."""
    ids = np.asarray(token_ids, dtype=np.int64)
    body = seq_len - 1 if bos_id is not None else seq_len
    need = body * n_windows
    if len(ids) < need:
        raise ValueError(
            f"the evaluation text has {len(ids)} tokens, but {n_windows} windows of {seq_len} "
            f"need {need}; lower eval.n_windows or eval.seq_len, or add text"
        )
    windows = ids[:need].reshape(n_windows, body)
    if bos_id is not None:
        windows = np.concatenate([np.full((n_windows, 1), bos_id, dtype=np.int64), windows], 1)
    return windows


def token_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``ids[:, 1:]`` under ``logits[:, :-1]`` (float32, (B, T-1))."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """Token-weighted perplexity from a summed NLL (natural log)."""
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one scored token")
    return math.exp(nll_sum / n_tokens)
