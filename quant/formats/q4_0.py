"""q4_0: 32 weights -> 18 bytes (4.5 bpw), symmetric 4-bit with one fp16 scale.

Block layout::

    byte 0-1   d       fp16, d = m / -8 where m is the signed value of largest |x|
    byte 2-17  qs[16]  byte j: bits 0-3 = code of element j, bits 4-7 = code of element j+16

Codes are ``min(15, trunc(x/d + 8.5))`` (float32 add, then C truncation); the extreme element
maps to code 0. Dequantized value: ``(code - 8) * d``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from quant.formats._numeric import F0, F1, FLT_MAX, c_to_int8, load_fp16, store_fp16

BLOCK_SIZE = 32
TYPE_SIZE = 18
_NEG8 = np.float32(-8.0)
_BIAS = np.float32(8.5)


@njit(cache=True)
def _quantize_block(x, out):
    amax = F0
    vmax = F0
    for e in range(32):
        a = abs(x[e])
        first_larger = amax < a  # strict: the first element of largest |x| wins
        amax = a if first_larger else amax
        vmax = x[e] if first_larger else vmax
    d = vmax / _NEG8
    inv = F1 / d if d != F0 else F0
    store_fp16(out, 0, d)
    if inv <= FLT_MAX:
        # finite inverse scale: x*inv + 8.5 is small, int32 truncation equals C's (int8_t) cast
        for j in range(16):
            lo = min(15, np.int32(x[j] * inv + _BIAS))
            hi = min(15, np.int32(x[j + 16] * inv + _BIAS))
            out[2 + j] = np.uint8(lo | (hi << 4))
    else:
        # d is a tiny subnormal and 1/d overflowed: reproduce the C cast of inf/nan exactly
        for j in range(16):
            lo = min(15, c_to_int8(x[j] * inv + _BIAS))
            hi = min(15, c_to_int8(x[j + 16] * inv + _BIAS))
            out[2 + j] = np.uint8((lo | (hi << 4)) & 0xFF)


@njit(cache=True, parallel=True)
def quantize_blocks(x, out):
    """x: (nblocks, 32) float32 -> out: (nblocks, 18) uint8."""
    for b in prange(x.shape[0]):
        _quantize_block(x[b], out[b])


@njit(cache=True, parallel=True)
def dequantize_blocks(blob, out):
    """blob: (nblocks, 18) uint8 -> out: (nblocks, 32) float32."""
    for b in prange(blob.shape[0]):
        blk = blob[b]
        d = load_fp16(blk, 0)
        for j in range(16):
            byte = np.int64(blk[2 + j])
            out[b, j] = np.float32((byte & 0xF) - 8) * d
            out[b, j + 16] = np.float32((byte >> 4) - 8) * d
