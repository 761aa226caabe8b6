"""ggml block formats as GPTQ grids (issue 4 part 3).

When GPTQ enters a new ggml block (32 columns for q8_0/q4_0/q4_1/q5_0/q5_1, a 256-column
super-block for the k-quants), the block's parameters (d, dmin, sub-block scales/mins) are chosen
by the format's own reference quantizer (``quant.quantize``) on the *current, error-updated*
weights of that block. Every column inside the block is then rounded to the nearest level of
that block's fixed grid, ``step_j · code − shift_j`` for its sub-block ``j``, and its error is
propagated by GPTQ. At the end the chosen codes are written into the quantizer's bytes, so the
output is a valid block of the format with the same header (scales) and GPTQ's codes.

Exactness: the returned ``Q`` is ``quant.dequantize`` of those bytes. During the column loop the
level ``step·code − shift`` is computed in float32 (step = fp16 × small integer, exact); the
tests find it bit-identical to ``quant.dequantize`` and ``gguf.quants.dequantize`` for all ten
types. Should a rounding order ever differ, ``GPTQResult.storage_deviation`` reports the largest
difference between the loop's value and the stored one (and ``Q`` is always the stored one).

Bit positions below are the ggml layouts documented in ``quant/formats/<type>.py``; codes are
unsigned here (q8_0's int8 is stored as ``code − 128``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quant import dequantize, quantize
from quant.formats import get_qtype
from quant.gptq import GroupParams


@dataclass(frozen=True)
class _Piece:
    """Bits ``[code_lo, code_lo + nbits)`` of element ``e``'s code live in byte ``byte[e]``
    starting at bit ``bit[e]``."""

    byte: np.ndarray
    bit: np.ndarray
    nbits: int
    code_lo: int


def _e(n: int) -> np.ndarray:
    return np.arange(n)


def _nibble_pieces(off: int) -> list[_Piece]:
    # byte off+j: low nibble = element j, high nibble = element j+16 (32-element blocks)
    e = _e(32)
    return [_Piece(off + (e % 16), 4 * (e // 16), 4, 0)]


def _qh32_piece(off: int) -> _Piece:
    e = _e(32)
    return _Piece(off + e // 8, e % 8, 1, 4)


def _k4_nibble_pieces(off: int) -> list[_Piece]:
    # element e = 64c + 32h + l: nibble h of byte off + 32c + l
    e = _e(256)
    c, h, ln = e // 64, (e // 32) % 2, e % 32
    return [_Piece(off + 32 * c + ln, 4 * h, 4, 0)]


def _q2_pieces(off: int) -> list[_Piece]:
    # element e = 128h + 32s + l: bits 2s..2s+1 of byte off + 32h + l
    e = _e(256)
    h, s, ln = e // 128, (e // 32) % 4, e % 32
    return [_Piece(off + 32 * h + ln, 2 * s, 2, 0)]


def _q5k_pieces() -> list[_Piece]:
    e = _e(256)
    c, h, ln = e // 64, (e // 32) % 2, e % 32
    return [*_k4_nibble_pieces(48), _Piece(16 + ln, 2 * c + h, 1, 4)]


def _q3k_pieces() -> list[_Piece]:
    e = _e(256)
    return [*_q2_pieces(32), _Piece(e % 32, e // 32, 1, 2)]


def _q6k_pieces() -> list[_Piece]:
    e = _e(256)
    h, s, ln = e // 128, (e // 32) % 4, e % 32
    ql = 64 * h + 32 * (s % 2) + ln
    return [_Piece(ql, 4 * (s // 2), 4, 0), _Piece(128 + 32 * h + ln, 2 * s, 2, 4)]


def _f16(blocks: np.ndarray, off: int) -> np.ndarray:
    return blocks[:, off : off + 2].copy().view(np.float16)[:, 0].astype(np.float32)


def _k4_scales(blocks: np.ndarray, off: int) -> tuple[np.ndarray, np.ndarray]:
    b = blocks[:, off : off + 12].astype(np.int64)
    sc = np.empty((len(b), 8), np.int64)
    mn = np.empty((len(b), 8), np.int64)
    for j in range(8):
        if j < 4:
            sc[:, j], mn[:, j] = b[:, j] & 63, b[:, j + 4] & 63
        else:
            sc[:, j] = (b[:, j + 4] & 0xF) | ((b[:, j - 4] >> 6) << 4)
            mn[:, j] = (b[:, j + 4] >> 4) | ((b[:, j] >> 6) << 4)
    return sc, mn


def _q3k_scales(blocks: np.ndarray) -> np.ndarray:
    b = blocks[:, 96:108].astype(np.int64)
    S = np.empty((len(b), 16), np.int64)
    for j in range(16):
        lo = (b[:, j] & 0xF) if j < 8 else (b[:, j - 8] >> 4)
        hi = (b[:, 8 + j % 4] >> (2 * (j // 4))) & 3
        S[:, j] = lo | (hi << 4)
    return S - 32


def _levels_32(kind):
    def levels(blocks):
        d = _f16(blocks, 0)
        if kind == "q8_0":
            return d, np.float32(128) * d
        if kind == "q4_0":
            return d, np.float32(8) * d
        if kind == "q5_0":
            return d, np.float32(16) * d
        return d, -_f16(blocks, 2)  # q4_1 / q5_1: code*d + m

    return levels


def _levels_q2k(blocks):
    d, dmin = _f16(blocks, 80)[:, None], _f16(blocks, 82)[:, None]
    s = blocks[:, 0:16].astype(np.int64)
    return d * (s & 15).astype(np.float32), dmin * (s >> 4).astype(np.float32)


def _levels_k4(blocks):
    d, dmin = _f16(blocks, 0)[:, None], _f16(blocks, 2)[:, None]
    sc, mn = _k4_scales(blocks, 4)
    return d * sc.astype(np.float32), dmin * mn.astype(np.float32)


def _levels_q3k(blocks):
    step = _f16(blocks, 108)[:, None] * _q3k_scales(blocks).astype(np.float32)
    return step, np.float32(4) * step


def _levels_q6k(blocks):
    sc = blocks[:, 192:208].view(np.int8).astype(np.float32)
    step = _f16(blocks, 208)[:, None] * sc
    return step, np.float32(32) * step


@dataclass(frozen=True)
class _Format:
    qmax: int
    param_cols: int
    code_bytes: tuple[int, int]  # byte range holding only codes (zeroed before writing)
    pieces: list[_Piece]
    levels: object
    xor: int = 0  # stored = code ^ xor (q8_0: int8 two's complement of code - 128)


_FORMATS = {
    "q8_0": _Format(
        255, 32, (2, 34), [_Piece(2 + _e(32), 0 * _e(32), 8, 0)], _levels_32("q8_0"), 0x80
    ),
    "q4_0": _Format(15, 32, (2, 18), _nibble_pieces(2), _levels_32("q4_0")),
    "q4_1": _Format(15, 32, (4, 20), _nibble_pieces(4), _levels_32("q4_1")),
    "q5_0": _Format(31, 32, (2, 22), [*_nibble_pieces(6), _qh32_piece(2)], _levels_32("q5_0")),
    "q5_1": _Format(31, 32, (4, 24), [*_nibble_pieces(8), _qh32_piece(4)], _levels_32("q5_1")),
    "q2_K": _Format(3, 16, (16, 80), _q2_pieces(16), _levels_q2k),
    "q3_K": _Format(7, 16, (0, 96), _q3k_pieces(), _levels_q3k),
    "q4_K": _Format(15, 32, (16, 144), _k4_nibble_pieces(16), _levels_k4),
    "q5_K": _Format(31, 32, (16, 176), _q5k_pieces(), _levels_k4),
    "q6_K": _Format(63, 16, (0, 192), _q6k_pieces(), _levels_q6k),
}
GGML_GRID_TYPES = tuple(_FORMATS)


def read_codes(blocks: np.ndarray, qtype: str) -> np.ndarray:
    """Unsigned codes (nblocks, block_size) of ggml blocks (nblocks, type_size)."""
    f = _FORMATS[qtype]
    bs = get_qtype(qtype).block_size
    codes = np.zeros((blocks.shape[0], bs), np.int64)
    for p in f.pieces:
        bits = (blocks[:, p.byte].astype(np.int64) >> p.bit) & ((1 << p.nbits) - 1)
        codes |= bits << p.code_lo
    return codes ^ f.xor


def write_codes(blocks: np.ndarray, codes: np.ndarray, qtype: str) -> np.ndarray:
    """Copy of ``blocks`` whose code bits are replaced by ``codes`` (header bytes kept)."""
    f = _FORMATS[qtype]
    out = blocks.copy()
    a, b = f.code_bytes
    out[:, a:b] = 0
    stored = codes.astype(np.int64) ^ f.xor
    acc = out.astype(np.int64)
    rows = np.arange(len(out))[:, None]
    for p in f.pieces:
        bits = (stored >> p.code_lo) & ((1 << p.nbits) - 1)
        np.bitwise_or.at(acc, (rows, p.byte[None, :]), bits << p.bit[None, :])
    return acc.astype(np.uint8)


class GgmlGrid:
    """A ggml block format as a GPTQ grid (see module docstring)."""

    def __init__(self, qtype: str):
        if qtype not in _FORMATS:
            raise ValueError(f"GgmlGrid qtype must be one of {list(_FORMATS)}, got {qtype!r}")
        self.qtype = qtype
        self.fmt = _FORMATS[qtype]
        self.block_size = get_qtype(qtype).block_size

    def group_cols(self, cols: int) -> int:
        if cols % self.block_size:
            raise ValueError(
                f"{self.qtype} needs rows that are a multiple of its {self.block_size}-weight "
                f"block; this tensor has {cols} columns"
            )
        return self.block_size

    def param_cols(self, cols: int) -> int:
        return self.fmt.param_cols

    def params(self, w: np.ndarray) -> GroupParams:
        blocks = quantize(np.ascontiguousarray(w, dtype=np.float32), self.qtype)
        step, shift = self.fmt.levels(blocks)
        return GroupParams(step=step, shift=shift, qmax=self.fmt.qmax, extra=blocks)

    def pack(self, codes: np.ndarray, params: list[GroupParams], cols: int) -> np.ndarray:
        bs = self.block_size
        rows = codes.shape[0]
        out = np.empty((rows, (cols // bs) * get_qtype(self.qtype).type_size), np.uint8)
        ts = get_qtype(self.qtype).type_size
        for g, p in enumerate(params):
            out[:, g * ts : (g + 1) * ts] = write_codes(
                p.extra, codes[:, g * bs : (g + 1) * bs], self.qtype
            )
        return out

    def dequantize(self, packed: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        return dequantize(packed, self.qtype, shape)


__all__ = ["GGML_GRID_TYPES", "GgmlGrid", "read_codes", "write_codes"]
