"""Perplexity and KL divergence on cases whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metrics.kld import KLDStats, decode_logprobs, encode_logprobs, token_kld
from metrics.perplexity import make_windows, perplexity, token_nll


def test_uniform_model_has_perplexity_equal_to_vocab_size():
    vocab = 50
    logits = torch.zeros(2, 6, vocab)
    ids = torch.randint(0, vocab, (2, 6))
    nll = token_nll(logits, ids)
    assert nll.shape == (2, 5)
    assert perplexity(float(nll.sum()), nll.numel()) == pytest.approx(vocab, rel=1e-6)


def test_perplexity_is_token_weighted_by_hand():
    # Window 1 predicts its 2nd token with p=1/2, window 2 its 2nd and 3rd with p=1/4 each.
    logits = torch.full((2, 3, 4), -1e9)
    logits[0, 0, [1, 2]] = 0.0  # p(1) = 1/2
    logits[1, 0, :] = 0.0  # p = 1/4
    logits[1, 1, :] = 0.0
    ids = torch.tensor([[0, 1, 0], [0, 3, 2]])
    nll = token_nll(logits, ids)
    scored = torch.cat([nll[0, :1], nll[1]])  # window 0 has one real target in this case
    expected = math.exp((math.log(2) + 2 * math.log(4)) / 3)
    assert perplexity(float(scored.sum()), 3) == pytest.approx(expected, rel=1e-6)
    assert perplexity(float(scored.sum()), 3) != pytest.approx(
        (2 + 4) / 2, rel=1e-3
    )  # not a mean of per-window perplexities


def test_windows_prefix_bos_and_are_consecutive():
    ids = np.arange(100, 130)
    w = make_windows(ids, seq_len=5, n_windows=3, bos_id=1)
    assert w.tolist() == [[1, 100, 101, 102, 103], [1, 104, 105, 106, 107], [1, 108, 109, 110, 111]]
    w = make_windows(ids, seq_len=5, n_windows=2, bos_id=None)
    assert w.tolist() == [[100, 101, 102, 103, 104], [105, 106, 107, 108, 109]]


def test_too_little_text_is_a_clear_error():
    with pytest.raises(ValueError, match="eval.n_windows"):
        make_windows(np.arange(10), seq_len=8, n_windows=3, bos_id=1)


def test_identical_models_have_zero_kld_and_full_agreement():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 1000, generator=g) * 4
    ref = torch.log_softmax(logits, -1)
    stats = KLDStats()
    stats.add(*token_kld(ref, logits))
    s = stats.summary()
    assert s["kld_max"] < 1e-6
    assert s["top1_agreement"] == 100.0


def test_kld_matches_the_definition_and_detects_a_change():
    p = torch.tensor([[0.5, 0.25, 0.25]])
    q = torch.tensor([[0.25, 0.5, 0.25]])
    kld, agree = token_kld(p.log(), q.log())
    expected = 0.5 * math.log(2) + 0.25 * math.log(0.5)
    assert float(kld[0]) == pytest.approx(expected, rel=1e-5)
    assert not bool(agree[0])


def test_coded_reference_logprobs_keep_kld_accurate():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(32, 4096, generator=g) * 3
    other = base + 0.05 * torch.randn(32, 4096, generator=g)
    exact, _ = token_kld(torch.log_softmax(base, -1), other)
    coded, _ = token_kld(decode_logprobs(*encode_logprobs(torch.log_softmax(base, -1))), other)
    assert float(exact.mean()) > 1e-4
    assert float((coded - exact).abs().max()) < 1e-3 * float(exact.mean()) + 1e-6
