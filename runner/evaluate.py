"""Evaluation of a (quantized) causal LM against its cached full-precision baseline."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from metrics.kld import KLDStats, token_kld
from metrics.perplexity import make_windows, perplexity, token_nll
from metrics.text import load_text
from runner.baseline import Baseline, batches
from runner.config import EvalConfig


def eval_windows(tokenizer, cfg: EvalConfig) -> np.ndarray:
    """Fixed token windows of the held-out evaluation text (BOS-prefixed when available)."""
    text = load_text("eval", cfg.text_files)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return make_windows(ids, cfg.seq_len, cfg.n_windows, tokenizer.bos_token_id)


def evaluate_causal(model, baseline: Baseline, batch_size: int) -> dict[str, float]:
    """Perplexity, KL divergence to the baseline and top-1 agreement, streamed per window."""
    windows = baseline.windows
    stats = KLDStats()
    nll_sum, n_tok = 0.0, 0
    for a, b in tqdm(list(batches(len(windows), batch_size)), desc="evaluate", unit="batch"):
        ids = torch.from_numpy(windows[a:b])
        with torch.inference_mode():
            logits = model(ids).logits
        nll = token_nll(logits, ids)
        nll_sum += float(nll.double().sum())
        n_tok += nll.numel()
        for j in range(b - a):
            stats.add(*token_kld(baseline.ref_logprobs(a + j), logits[j, :-1]))
    return {"perplexity": perplexity(nll_sum, n_tok), **stats.summary()}
