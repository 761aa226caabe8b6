"""q4_1: 32 weights -> 20 bytes (5.0 bpw), asymmetric 4-bit with fp16 scale and minimum.

Block layout::

    byte 0-1   d       fp16, d = (max - min) / 15
    byte 2-3   m       fp16, m = min
    byte 4-19  qs[16]  byte j: bits 0-3 = code of element j, bits 4-7 = code of element j+16

Codes are ``min(15, trunc((x - min)/d + 0.5))`` computed with the unrounded d and min.
Dequantized value: ``code * d + m``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from quant.formats._numeric import F0, F1, FLT_MAX, c_to_int8, load_fp16, store_fp16

BLOCK_SIZE = 32
TYPE_SIZE = 20
_I15 = np.float32(15.0)
_HALF = np.float32(0.5)


@njit(cache=True)
def _quantize_block(x, out):
    vmin = FLT_MAX
    vmax = -FLT_MAX
    for e in range(32):
        vmin = x[e] if x[e] < vmin else vmin
        vmax = x[e] if x[e] > vmax else vmax
    d = (vmax - vmin) / _I15
    inv = F1 / d if d != F0 else F0
    store_fp16(out, 0, d)
    store_fp16(out, 2, vmin)
    if inv <= FLT_MAX:
        # finite inverse scale: (x-min)*inv + 0.5 is small, int32 truncation equals C's cast
        for j in range(16):
            lo = min(15, np.int32((x[j] - vmin) * inv + _HALF))
            hi = min(15, np.int32((x[j + 16] - vmin) * inv + _HALF))
            out[4 + j] = np.uint8(lo | (hi << 4))
    else:
        # 1/d overflowed (tiny subnormal d) or the range overflowed: exact C cast of inf/nan
        for j in range(16):
            lo = min(15, c_to_int8((x[j] - vmin) * inv + _HALF))
            hi = min(15, c_to_int8((x[j + 16] - vmin) * inv + _HALF))
            out[4 + j] = np.uint8((lo | (hi << 4)) & 0xFF)


@njit(cache=True, parallel=True)
def quantize_blocks(x, out):
    """x: (nblocks, 32) float32 -> out: (nblocks, 20) uint8."""
    for b in prange(x.shape[0]):
        _quantize_block(x[b], out[b])


@njit(cache=True, parallel=True)
def dequantize_blocks(blob, out):
    """blob: (nblocks, 20) uint8 -> out: (nblocks, 32) float32."""
    for b in prange(blob.shape[0]):
        blk = blob[b]
        d = load_fp16(blk, 0)
        m = load_fp16(blk, 2)
        for j in range(16):
            byte = np.int64(blk[4 + j])
            out[b, j] = np.float32(byte & 0xF) * d + m
            out[b, j + 16] = np.float32(byte >> 4) * d + m
