"""Evaluation of a (quantized) causal LM against its cached full-precision baseline."""

from __future__ import annotations

import numpy as np

from metrics.kld import KLDStats, token_kld
from metrics.perplexity import make_windows
from metrics.text import load_text
from runner.baseline import Baseline, NLLTotal, forward_windows
from runner.config import EvalConfig


def eval_windows(tokenizer, cfg: EvalConfig) -> np.ndarray:
    """Fixed token windows of the held-out evaluation text (BOS-prefixed when available)."""
    text = load_text("eval", cfg.text_files)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return make_windows(ids, cfg.seq_len, cfg.n_windows, tokenizer.bos_token_id)


def evaluate_causal(model, baseline: Baseline, batch_size: int) -> dict[str, float]:
    """Perplexity, KL divergence to the baseline and top-1 agreement, streamed per window."""
    stats, total = KLDStats(), NLLTotal()
    for a, logits in forward_windows(model, baseline.windows, batch_size, "evaluate", total):
        for j in range(len(logits)):
            stats.add(*token_kld(baseline.ref_logprobs(a + j), logits[j, :-1]))
    return {"perplexity": total.perplexity(), **stats.summary()}
