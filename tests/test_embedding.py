"""Embedding similarity: definitions, tiny Llama hidden states, real MiniLM (real_model)."""

from __future__ import annotations

import copy

import pytest
import torch

from metrics.embedding import (
    EmbeddingConfig,
    baseline_embedding,
    cosine_summary,
    load_minilm,
    run_embedding,
)


def _rtn(model, bits: int):
    q = copy.deepcopy(model)
    qmax = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for name, mod in q.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
                s = mod.weight.abs().amax(1, keepdim=True).clamp(min=1e-12) / qmax
                mod.weight.copy_((mod.weight / s).round().clamp(-qmax - 1, qmax) * s)
    return q


def test_cosine_summary_known_answers():
    a = torch.eye(4)
    assert cosine_summary(a, a) == pytest.approx((1.0, 1.0))
    assert cosine_summary(a, torch.roll(a, 1, dims=0)) == pytest.approx((0.0, 0.0))
    assert cosine_summary(a, -a) == pytest.approx((-1.0, -1.0))


def test_bad_kind_is_rejected():
    with pytest.raises(ValueError, match="kind"):
        EmbeddingConfig(kind="decoder").validate()


@pytest.fixture(scope="module")
def tiny(make_tiny_llama):
    return make_tiny_llama()


def test_causal_hidden_cosine_orders_bit_widths(tiny, tmp_path):
    model, tok = tiny
    cfg = EmbeddingConfig(n_sentences=64, seq_len=64, n_windows=4)
    base = baseline_embedding(model, tok, cfg)
    assert base.kind == "causal_lm" and base.vectors.shape == (4, 64, 256)
    base.save(tmp_path / "b.pt")
    same = run_embedding(model, tok, cfg, type(base).load(tmp_path / "b.pt"))
    assert same["hidden_cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    q8 = run_embedding(_rtn(model, 8), tok, cfg, base)
    q2 = run_embedding(_rtn(model, 2), tok, cfg, base)
    assert q8["hidden_cosine_mean"] > q2["hidden_cosine_mean"]
    assert q8["hidden_cosine_p5"] <= q8["hidden_cosine_mean"]
    assert set(q2) == {
        "hidden_cosine_mean",
        "hidden_cosine_p5",
        "hidden_cosine_window_mean",
        "hidden_cosine_window_p5",
    }


@pytest.mark.real_model
def test_minilm_int8_meets_seed_target_and_int2_is_worse():
    model, tok = load_minilm()
    cfg = EmbeddingConfig(n_sentences=48)
    base = baseline_embedding(model, tok, cfg)
    assert base.kind == "encoder" and base.vectors.shape == (48, 384)
    q8 = run_embedding(_rtn(model, 8), tok, cfg, base)
    q2 = run_embedding(_rtn(model, 2), tok, cfg, base)
    assert q8["embedding_cosine_mean"] > 0.85  # seed 003's INT8 target
    assert q2["embedding_cosine_mean"] < q8["embedding_cosine_mean"]
    assert q8["embedding_cosine_p5"] <= q8["embedding_cosine_mean"]
