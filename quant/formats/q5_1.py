"""q5_1: 32 weights -> 24 bytes (6.0 bpw), asymmetric 5-bit with fp16 scale and minimum.

Block layout::

    byte 0-1   d       fp16, d = (max - min) / 31
    byte 2-3   m       fp16, m = min
    byte 4-7   qh      little-endian uint32, bit e = bit 4 (the 5th bit) of element e's code
    byte 8-23  qs[16]  byte j: bits 0-3 = low 4 bits of element j, bits 4-7 = of element j+16

Codes are ``trunc((x - min)/d + 0.5)`` (no clamp in ggml; only the low 5 bits are stored).
Dequantized value: ``code * d + m``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from quant.formats._numeric import F0, F1, FLT_MAX, c_to_uint8, load_fp16, store_fp16

BLOCK_SIZE = 32
TYPE_SIZE = 24
_I31 = np.float32(31.0)
_HALF = np.float32(0.5)


@njit(cache=True)
def _quantize_block(x, out):
    vmin = FLT_MAX
    vmax = -FLT_MAX
    for e in range(32):
        vmin = x[e] if x[e] < vmin else vmin
        vmax = x[e] if x[e] > vmax else vmax
    d = (vmax - vmin) / _I31
    inv = F1 / d if d != F0 else F0
    store_fp16(out, 0, d)
    store_fp16(out, 2, vmin)
    qh = 0
    finite = inv <= FLT_MAX
    for j in range(16):
        if finite:
            # (x-min)*inv + 0.5 is small: int32 truncation equals C's (uint8_t) cast
            lo = np.int64(np.int32((x[j] - vmin) * inv + _HALF)) & 0xFF
            hi = np.int64(np.int32((x[j + 16] - vmin) * inv + _HALF)) & 0xFF
        else:
            lo = c_to_uint8((x[j] - vmin) * inv + _HALF)
            hi = c_to_uint8((x[j + 16] - vmin) * inv + _HALF)
        out[8 + j] = np.uint8((lo & 0xF) | ((hi & 0xF) << 4))
        qh |= ((lo >> 4) & 1) << j
        qh |= ((hi >> 4) & 1) << (j + 16)
    for k in range(4):
        out[4 + k] = np.uint8((qh >> (8 * k)) & 0xFF)


@njit(cache=True, parallel=True)
def quantize_blocks(x, out):
    """x: (nblocks, 32) float32 -> out: (nblocks, 24) uint8."""
    for b in prange(x.shape[0]):
        _quantize_block(x[b], out[b])


@njit(cache=True, parallel=True)
def dequantize_blocks(blob, out):
    """blob: (nblocks, 24) uint8 -> out: (nblocks, 32) float32."""
    for b in prange(blob.shape[0]):
        blk = blob[b]
        d = load_fp16(blk, 0)
        m = load_fp16(blk, 2)
        qh = 0
        for k in range(4):
            qh |= np.int64(blk[4 + k]) << (8 * k)
        for j in range(16):
            byte = np.int64(blk[8 + j])
            lo = (byte & 0xF) | (((qh >> j) & 1) << 4)
            hi = (byte >> 4) | (((qh >> (j + 16)) & 1) << 4)
            out[b, j] = np.float32(lo) * d + m
            out[b, j + 16] = np.float32(hi) * d + m
