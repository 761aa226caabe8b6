"""quant.formats against independent references.

Oracles (none of them is our own code):
* QUANT-SPEC §2.8: SHA-256 prefixes of llama.cpp's ``ggml_quantize_chunk`` output for three fixed
  vectors, all ten types, and the full first block for the 32-blocks.
* gguf-py (llama.cpp's numpy port, verified bit-exact with C): ``gguf.quants.quantize`` for
  q8_0/q4_0/q4_1/q5_0/q5_1 (and any K-type a future gguf implements), ``gguf.quants.dequantize``
  for all ten types, ``gguf.GGML_QUANT_SIZES`` for the table.
* QUANT-SPEC §2.7: RMSE of the C reference on N(0,1) and its documented edge cases.
* Optional: a compiled ggml (``QUANTLOOP_LIBGGML=/path/to/libggml-base.so``), compared through
  ``quantize_row_<type>_ref`` / ``dequantize_row_<type>`` for every type and input family.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from importlib.metadata import version

import gguf
import numba
import numpy as np
import pytest

from quant import QTYPES, dequantize, quantize, row_bytes
from quant.formats import QType, get_qtype

ALL = list(QTYPES)
LEGACY = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]
KQUANTS = ["q2_K", "q3_K", "q4_K", "q5_K", "q6_K"]


# ---------------------------------------------------------------------------------------------
# inputs


def _vector(kind: str) -> np.ndarray:
    """QUANT-SPEC §2.8 test vectors: 2 rows x 256 float32."""
    i = np.arange(512)
    base = ((i * 97 + 13) % 251 - 125).astype(np.float32)
    if kind == "A":
        return (base / np.float32(61)).reshape(2, 256)
    if kind == "B":
        return (base / np.float32(64)).reshape(2, 256)
    x = np.empty(512, np.float32)
    k = np.arange(1, 32, dtype=np.float32)
    for b in range(16):
        x[32 * b] = 127.0 if b % 2 == 0 else -127.0
        x[32 * b + 1 : 32 * b + 32] = np.float32(0.5) + np.floor((k - np.float32(15.5)) * 3)
    return x.reshape(2, 256)


def _family(name: str, rows: int = 16, cols: int = 1024) -> np.ndarray:
    rng = np.random.default_rng(sum(map(ord, name)))
    shape = (rows, cols)
    if name == "normal":
        x = rng.standard_normal(shape)
    elif name == "student_t2":
        x = rng.standard_t(2, shape)
    elif name == "cauchy":
        x = rng.standard_cauchy(shape)
    elif name == "zero_blocks":
        x = rng.standard_normal(shape)
        x[0] = 0  # all-zero rows
        x[1:, :256] = 0  # a zero super-block in every row
        x[2::2, 272:288] = 0  # zero 16-sub-blocks inside non-zero super-blocks
        x[3::2, 320:352] = 0  # zero 32-sub-blocks
    elif name == "constant_blocks":
        x = np.repeat(rng.standard_normal((rows, cols // 16)), 16, axis=1)
        x[:, :256] = -1.5  # a constant negative super-block
        x[:, 256:512] = 0.75  # a constant positive super-block
    elif name == "ties":
        # exact .5 ties and dyadic values: rounding-rule slips show up here
        x = rng.integers(-64, 64, shape) + 0.5
        x[::2] = rng.integers(-128, 128, (rows // 2, cols)) / 64
    elif name == "tiny":
        x = rng.standard_normal(shape) * 1e-30
        x[::4] *= 1e-10  # subnormal floats: fp16 scales underflow to 0
    elif name == "huge":
        x = rng.standard_normal(shape) * 1e30  # fp16 scales overflow to inf
        x[::4] = rng.standard_normal((rows // 4, cols)) * 6e4
    elif name == "outliers":
        x = rng.standard_normal(shape)
        x[:, ::37] *= 100
    else:
        raise AssertionError(name)
    return np.asarray(x, dtype=np.float32)


FAMILIES = [
    "normal",
    "student_t2",
    "cauchy",
    "zero_blocks",
    "constant_blocks",
    "ties",
    "tiny",
    "huge",
    "outliers",
]


def _gguf_type(qtype: str) -> gguf.GGMLQuantizationType:
    return gguf.GGMLQuantizationType[qtype.upper()]


def _same_floats(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality of float32 arrays (any NaN payload counts as equal)."""
    both_nan = np.isnan(a) & np.isnan(b)
    return bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | both_nan))


# ---------------------------------------------------------------------------------------------
# the table


@pytest.mark.parametrize("qtype", ALL)
def test_table_matches_gguf(qtype: str) -> None:
    qt = QTYPES[qtype]
    assert qt.ggml_type == _gguf_type(qtype)
    assert (qt.block_size, qt.type_size) == gguf.GGML_QUANT_SIZES[qt.ggml_type]
    assert qt.bpw == pytest.approx(8 * qt.type_size / qt.block_size)
    assert row_bytes(qtype, 4 * qt.block_size) == 4 * qt.type_size


def test_table_values() -> None:
    # QUANT-SPEC §2.1 / §3.3
    expected = {
        "q8_0": (32, 34, 8.5, 8),
        "q4_0": (32, 18, 4.5, 2),
        "q4_1": (32, 20, 5.0, 3),
        "q5_0": (32, 22, 5.5, 6),
        "q5_1": (32, 24, 6.0, 7),
        "q2_K": (256, 84, 2.625, 10),
        "q3_K": (256, 110, 3.4375, 11),
        "q4_K": (256, 144, 4.5, 12),
        "q5_K": (256, 176, 5.5, 13),
        "q6_K": (256, 210, 6.5625, 14),
    }
    got = {n: (q.block_size, q.type_size, q.bpw, int(q.ggml_type)) for n, q in QTYPES.items()}
    assert got == expected


# ---------------------------------------------------------------------------------------------
# QUANT-SPEC §2.8 reference vectors (hashes of llama.cpp's output)

SPEC_HASHES = {
    "q8_0": ("4f74f8762b27cdd0461668fe7979d94a", "6812e83e84fc31164bfeb68ee7bbfebd",
             "50a44ebd9deffa66adca1b7c226cd23b"),
    "q4_0": ("3dd4462e310187ef92e5e0062d041595", "629b4b9a3bba7668656109551a95d7ad",
             "2704ae74bd57ca5bd8c78082e7aeaf44"),
    "q4_1": ("d7f2145f5a3b122cf4821d9fe77f42fa", "ff0eb044e2a6e2de9008a6a9eeec0ffc",
             "5bf27ffb6b6b6226a3590670d4fcffc7"),
    "q5_0": ("753a1692b34fe1822c46e2703434f5d9", "f3907268741edfa10f72e82d4800a3b2",
             "495e3811f783408307e999a8e6cf7778"),
    "q5_1": ("bdd41cee0d711e7294f6637d5ad0b718", "a484e47d727145f46c7dddf37c3cfae9",
             "1ae24b877a45f660ff1da0461955358f"),
    "q2_K": ("b4435a9e4efc9e110b636d66499c0c17", "91671f33fcd17588697c3ec471491766",
             "761dd4f253bef101378d9ca280c6e390"),
    "q3_K": ("65819134082128534f837e0e24aa10f7", "146cf976d0282925ab91c3c743716851",
             "daf40464424539c4106acc8006f1b497"),
    "q4_K": ("4c29d7bf9d03801458f618a2c3ff0b0c", "745ae47a1575bdfb1e8f605e5e2c7367",
             "42b553538acae26141e4446f8be728ad"),
    "q5_K": ("1647fbd65df578bba0cfb93aed1702c4", "a2b156f4256de01084d522c412e38951",
             "00c3fff55721ee45380932e020d6242d"),
    "q6_K": ("4e529659c79152b64404c00e6ed34cca", "c72d5ad9326725aba82ad9c67bd9b15d",
             "15001b06d1ac4701ae7f42063573e053"),
}  # fmt: skip

FIRST_BLOCK_A = {
    "q8_0": "11248cf155b61a7edf43a4086ccd3293f75bbc2081e549aa0e73d43899fd61c22687",
    "q4_0": "083441a70d63da3f96fc52c91f85eb41a70e",
    "q4_1": "493408c031970d63c92f86ec52b81e75da41a70d",
    "q5_0": "0830b496d25a714e0bd7935f2ce8a4713e0ac6825f1b",
    "q5_1": "253008c0b496d252713e0ac6935f1ce8a4613df9b6824e1b",
}


@pytest.mark.parametrize("vector", ["A", "B", "C"])
@pytest.mark.parametrize("qtype", ALL)
def test_spec_vectors(qtype: str, vector: str) -> None:
    q = quantize(_vector(vector), qtype)
    assert q.shape == (2, row_bytes(qtype, 256))
    digest = hashlib.sha256(q.tobytes()).hexdigest()[:32]
    assert digest == SPEC_HASHES[qtype]["ABC".index(vector)]


@pytest.mark.parametrize("qtype", LEGACY)
def test_spec_first_block(qtype: str) -> None:
    q = quantize(_vector("A"), qtype)
    assert q.reshape(-1)[: QTYPES[qtype].type_size].tobytes().hex() == FIRST_BLOCK_A[qtype]


def test_q8_0_ties_round_half_away() -> None:
    # vector C puts every x/d on an exact .5 tie; half-even would give another hash (§2.8)
    q = quantize(_vector("C"), "q8_0").reshape(-1, 34)
    x = _vector("C").reshape(-1, 32)
    codes = q[:, 2:].view(np.int8).astype(np.float32)
    expected = np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))
    np.testing.assert_array_equal(codes, expected)


# ---------------------------------------------------------------------------------------------
# gguf-py as a differential oracle


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("qtype", LEGACY)
def test_quantize_matches_gguf(qtype: str, family: str) -> None:
    x = _family(family)
    with np.errstate(all="ignore"):
        ref = gguf.quants.quantize(x, _gguf_type(qtype))
    np.testing.assert_array_equal(quantize(x, qtype), ref)


@pytest.mark.parametrize("qtype", KQUANTS)
def test_kquant_quantize_matches_gguf_if_implemented(qtype: str) -> None:
    x = np.concatenate([_family("normal"), _family("zero_blocks"), _family("ties")])
    try:
        ref = gguf.quants.quantize(x, _gguf_type(qtype))
    except NotImplementedError:
        pytest.skip(
            f"gguf {version('gguf')} has no {qtype} quantizer (QUANT-SPEC §3.2); "
            "covered by the §2.8 vectors"
        )
    np.testing.assert_array_equal(quantize(x, qtype), ref)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("qtype", ALL)
def test_dequantize_matches_gguf(qtype: str, family: str) -> None:
    x = _family(family)
    q = quantize(x, qtype)
    ours = dequantize(q, qtype, x.shape)
    with np.errstate(all="ignore"):
        ref = gguf.quants.dequantize(q, _gguf_type(qtype))
    assert ours.shape == ref.shape == x.shape
    assert ours.dtype == np.float32
    assert _same_floats(ours, ref)
    # the flat form of the blob decodes identically
    assert _same_floats(dequantize(q.reshape(-1), qtype, x.shape), ours)


# ---------------------------------------------------------------------------------------------
# QUANT-SPEC §2.7: C-reference edge cases and error level

RMSE_N01 = {
    "q2_K": 0.297, "q3_K": 0.151, "q4_0": 0.086, "q4_1": 0.078, "q4_K": 0.0713,
    "q5_0": 0.0428, "q5_1": 0.0379, "q5_K": 0.0361, "q6_K": 0.0177, "q8_0": 0.00536,
}  # fmt: skip


@pytest.mark.parametrize("qtype", ALL)
def test_rmse_on_normal_matches_reference(qtype: str) -> None:
    x = np.random.default_rng(7).standard_normal((64, 4096)).astype(np.float32)
    err = dequantize(quantize(x, qtype), qtype, x.shape).astype(np.float64) - x
    rmse = float(np.sqrt(np.mean(err * err)))
    assert rmse == pytest.approx(RMSE_N01[qtype], rel=0.02)


@pytest.mark.parametrize("qtype", KQUANTS)
def test_zero_superblock_is_all_zero_bytes(qtype: str) -> None:
    x = np.zeros((2, 512), np.float32)
    x[1, 256:] = np.linspace(-1, 1, 256, dtype=np.float32)
    q = quantize(x, qtype)
    ts = QTYPES[qtype].type_size
    assert not q[0].any()
    assert not q[1, :ts].any()
    assert q[1, ts:].any()


def test_q4_K_constant_negative_subblock_uses_min_only() -> None:
    x = np.full((1, 256), -0.8125, np.float32)
    q = quantize(x, "q4_K")
    assert q[0, 0:2].tobytes() == b"\x00\x00"  # d = 0: every scale fit returned 0
    assert q[0, 2:4].view(np.float16)[0] != 0  # dmin carries the value
    np.testing.assert_allclose(dequantize(q, "q4_K", x.shape), x, rtol=2e-3)


# ---------------------------------------------------------------------------------------------
# API behaviour


@pytest.mark.parametrize("qtype", ["q4_0", "q4_K"])
def test_non_contiguous_and_thread_count_do_not_change_bytes(qtype: str) -> None:
    x = _family("normal", rows=8, cols=512)
    ref = quantize(x, qtype)
    np.testing.assert_array_equal(quantize(np.asfortranarray(x), qtype), ref)
    np.testing.assert_array_equal(quantize(x[::-1], qtype), ref[::-1])
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(quantize(x, qtype), ref)
    finally:
        numba.set_num_threads(old)


def test_empty_rows() -> None:
    q = quantize(np.zeros((0, 256), np.float32), "q6_K")
    assert q.shape == (0, 210) and q.dtype == np.uint8
    assert dequantize(q, "q6_K", (0, 256)).shape == (0, 256)


def test_get_qtype_accepts_qtype_object() -> None:
    assert get_qtype(QTYPES["q5_K"]) is QTYPES["q5_K"]
    assert isinstance(QTYPES["q5_K"], QType)


# ---------------------------------------------------------------------------------------------
# bad input


def test_unknown_qtype_lists_valid_and_suggests() -> None:
    with pytest.raises(ValueError, match=r"unknown qtype 'q4_k'.*q8_0.*q6_K.*Did you mean 'q4_K'"):
        quantize(np.zeros((1, 256), np.float32), "q4_k")
    with pytest.raises(ValueError, match=r"valid qtypes: q8_0, q4_0"):
        dequantize(np.zeros(18, np.uint8), "iq4_nl_x", (1, 32))
    with pytest.raises(TypeError, match="qtype must be a format name"):
        quantize(np.zeros((1, 32), np.float32), 8)


def test_bad_dtype_and_container() -> None:
    with pytest.raises(TypeError, match="dtype float32, got float64"):
        quantize(np.zeros((1, 32)), "q8_0")
    with pytest.raises(TypeError, match="numpy.ndarray"):
        quantize([[0.0] * 32], "q8_0")
    with pytest.raises(TypeError, match="dtype uint8, got int8"):
        dequantize(np.zeros((1, 34), np.int8), "q8_0", (1, 32))


@pytest.mark.parametrize("shape", [(32,), (1, 2, 32)])
def test_bad_ndim(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=rf"2-D \(rows, cols\).*ndim={len(shape)}"):
        quantize(np.zeros(shape, np.float32), "q8_0")


@pytest.mark.parametrize(("qtype", "cols"), [("q8_0", 48), ("q4_K", 128), ("q6_K", 300)])
def test_row_length_not_multiple_of_block(qtype: str, cols: int) -> None:
    block = QTYPES[qtype].block_size
    with pytest.raises(ValueError, match=rf"row length {cols} .* block size {block}"):
        quantize(np.zeros((2, cols), np.float32), qtype)
    with pytest.raises(ValueError, match="block size"):
        row_bytes(qtype, cols)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(bad: float) -> None:
    x = np.ones((3, 64), np.float32)
    x[2, 17] = bad
    with pytest.raises(ValueError, match=r"non-finite.*first at \[2, 17\]"):
        quantize(x, "q4_0")


def test_dequantize_size_mismatch() -> None:
    q = quantize(np.ones((2, 64), np.float32), "q8_0")
    with pytest.raises(ValueError, match=r"needs 3 x 68 = 204 bytes"):
        dequantize(q, "q8_0", (3, 64))
    with pytest.raises(ValueError, match="does not match"):
        dequantize(q.reshape(4, 34), "q8_0", (2, 64))
    with pytest.raises(ValueError, match="shape must be"):
        dequantize(q, "q8_0", 64)


# ---------------------------------------------------------------------------------------------
# optional: a compiled ggml as oracle for every type (QUANTLOOP_LIBGGML=path/to/libggml-base.so)

_LIBGGML = os.environ.get("QUANTLOOP_LIBGGML")


@pytest.mark.skipif(not _LIBGGML, reason="set QUANTLOOP_LIBGGML to a libggml-base build")
@pytest.mark.parametrize("qtype", ALL)
def test_matches_compiled_ggml(qtype: str) -> None:
    lib = ctypes.CDLL(_LIBGGML)
    qt = QTYPES[qtype]
    qfn = getattr(lib, f"quantize_row_{qtype}_ref")
    dfn = getattr(lib, f"dequantize_row_{qtype}")
    for family in FAMILIES:
        x = np.ascontiguousarray(_family(family))
        ref = np.zeros((x.shape[0], qt.row_bytes(x.shape[1])), np.uint8)
        qfn(ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(ref.ctypes.data),
            ctypes.c_int64(x.size))  # fmt: skip
        ours = quantize(x, qtype)
        bad = int((ours != ref).any(axis=1).sum())
        assert bad == 0, f"{family}: {bad} rows differ from ggml"
        deq = np.zeros(x.shape, np.float32)
        dfn(ctypes.c_void_p(ref.ctypes.data), ctypes.c_void_p(deq.ctypes.data),
            ctypes.c_int64(x.size))  # fmt: skip
        assert _same_floats(dequantize(ref, qtype, x.shape), deq), family


# ---------------------------------------------------------------------------------------------
# the lockstep K-quant search must reproduce the literal transcription of ggml's routine


@pytest.mark.parametrize(
    ("nsub", "n", "nmax", "rmin", "nstep", "use_mad"),
    [(16, 16, 3, -0.5, 15, True), (8, 32, 15, -1.0, 20, False), (16, 32, 31, -0.5, 15, False)],
)
def test_lockstep_qkx2_equals_scalar_transcription(nsub, n, nmax, rmin, nstep, use_mad) -> None:
    from quant.formats._search import (
        QKX2_SCRATCH_SHAPE,
        make_qkx2_quants,
        make_qkx2_quants_multi,
    )

    rmin, rdelta = np.float32(rmin), np.float32(0.1)
    ws = np.empty(QKX2_SCRATCH_SHAPE, np.float32)
    for family in FAMILIES:
        data = _family(family, rows=4, cols=1024).reshape(-1, nsub * n)
        for x in data:
            w = (np.abs(x) + np.float32(0.25)).astype(np.float32)
            L = np.empty(nsub * n, np.int64)
            scales = np.empty(nsub, np.float32)
            mins = np.empty(nsub, np.float32)
            make_qkx2_quants_multi(
                x, w, nsub, nmax, rmin, rdelta, nstep, use_mad, L, scales, mins, ws
            )
            for g in range(nsub):
                sl = slice(g * n, g * n + n)
                Lg = np.empty(n, np.int64)
                s, m = make_qkx2_quants(
                    x[sl], w[sl], nmax, rmin, rdelta, nstep, use_mad, Lg, np.empty(n, np.int64)
                )
                assert np.array_equal(L[sl], Lg), family
                assert np.float32(s).tobytes() == scales[g].tobytes(), family
                assert np.float32(m).tobytes() == mins[g].tobytes(), family
