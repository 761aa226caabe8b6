"""q5_0: 32 weights -> 22 bytes (5.5 bpw), symmetric 5-bit with one fp16 scale.

Block layout::

    byte 0-1   d       fp16, d = m / -16 where m is the signed value of largest |x|
    byte 2-5   qh      little-endian uint32, bit e = bit 4 (the 5th bit) of element e's code
    byte 6-21  qs[16]  byte j: bits 0-3 = low 4 bits of element j, bits 4-7 = of element j+16

Codes are ``min(31, trunc(x/d + 16.5))``. Dequantized value: ``(code - 16) * d``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from quant.formats._numeric import F0, F1, FLT_MAX, c_to_int8, load_fp16, store_fp16

BLOCK_SIZE = 32
TYPE_SIZE = 22
_NEG16 = np.float32(-16.0)
_BIAS = np.float32(16.5)


@njit(cache=True)
def _quantize_block(x, out):
    amax = F0
    vmax = F0
    for e in range(32):
        a = abs(x[e])
        first_larger = amax < a  # strict: the first element of largest |x| wins
        amax = a if first_larger else amax
        vmax = x[e] if first_larger else vmax
    d = vmax / _NEG16
    inv = F1 / d if d != F0 else F0
    store_fp16(out, 0, d)
    qh = 0
    finite = inv <= FLT_MAX
    for j in range(16):
        if finite:
            # x*inv + 16.5 is small: int32 truncation equals C's (int8_t) cast
            lo = min(31, np.int64(np.int32(x[j] * inv + _BIAS)))
            hi = min(31, np.int64(np.int32(x[j + 16] * inv + _BIAS)))
        else:
            # 1/d overflowed (tiny subnormal d): reproduce the C cast of inf/nan exactly
            lo = min(31, c_to_int8(x[j] * inv + _BIAS))
            hi = min(31, c_to_int8(x[j + 16] * inv + _BIAS))
        out[6 + j] = np.uint8((lo & 0xF) | ((hi & 0xF) << 4))
        qh |= ((lo >> 4) & 1) << j
        qh |= ((hi >> 4) & 1) << (j + 16)
    for k in range(4):
        out[2 + k] = np.uint8((qh >> (8 * k)) & 0xFF)


@njit(cache=True, parallel=True)
def quantize_blocks(x, out):
    """x: (nblocks, 32) float32 -> out: (nblocks, 22) uint8."""
    for b in prange(x.shape[0]):
        _quantize_block(x[b], out[b])


@njit(cache=True, parallel=True)
def dequantize_blocks(blob, out):
    """blob: (nblocks, 22) uint8 -> out: (nblocks, 32) float32."""
    for b in prange(blob.shape[0]):
        blk = blob[b]
        d = load_fp16(blk, 0)
        qh = 0
        for k in range(4):
            qh |= np.int64(blk[2 + k]) << (8 * k)
        for j in range(16):
            byte = np.int64(blk[6 + j])
            lo = (byte & 0xF) | (((qh >> j) & 1) << 4)
            hi = (byte >> 4) | (((qh >> (j + 16)) & 1) << 4)
            out[b, j] = np.float32(lo - 16) * d
            out[b, j + 16] = np.float32(hi - 16) * d
