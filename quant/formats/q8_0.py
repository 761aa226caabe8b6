"""q8_0: 32 weights -> 34 bytes (8.5 bpw), symmetric 8-bit with one fp16 scale.

Block layout::

    byte 0-1   d       fp16, d = max|x| / 127
    byte 2-33  qs[32]  int8, qs[e] = roundf(x[e] / d)   (C roundf: ties away from zero)

Dequantized value: ``qs[e] * d``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from quant.formats._numeric import F0, F1, FLT_MAX, c_roundf, c_to_int8, load_fp16, store_fp16

BLOCK_SIZE = 32
TYPE_SIZE = 34
_I127 = np.float32(127.0)
_HALF = np.float32(0.5)


@njit(cache=True)
def _quantize_block(x, out):
    amax = F0
    for e in range(32):
        a = abs(x[e])
        amax = amax if amax > a else a
    d = amax / _I127
    inv = F1 / d if d != F0 else F0
    store_fp16(out, 0, d)  # the codes use the unrounded d
    if inv <= FLT_MAX:
        # finite inverse scale: |x*inv| is small, so roundf = trunc plus a +-1 correction
        # (v - trunc(v) is exact in float32), and C's (int8_t) cast keeps the low byte
        for e in range(32):
            v = x[e] * inv
            t = np.int32(v)
            r = v - np.float32(t)
            t += np.int32(r >= _HALF) - np.int32(r <= -_HALF)
            out[2 + e] = np.uint8(t & 0xFF)
    else:
        # 1/d overflowed (tiny subnormal d): exact C semantics for inf/nan
        for e in range(32):
            out[2 + e] = np.uint8(c_to_int8(c_roundf(x[e] * inv)) & 0xFF)


@njit(cache=True, parallel=True)
def quantize_blocks(x, out):
    """x: (nblocks, 32) float32 -> out: (nblocks, 34) uint8."""
    for b in prange(x.shape[0]):
        _quantize_block(x[b], out[b])


@njit(cache=True, parallel=True)
def dequantize_blocks(blob, out):
    """blob: (nblocks, 34) uint8 -> out: (nblocks, 32) float32."""
    for b in prange(blob.shape[0]):
        blk = blob[b]
        d = load_fp16(blk, 0)
        for e in range(32):
            q = np.int64(blk[2 + e])
            q = q - 256 if q > 127 else q
            out[b, e] = np.float32(q) * d
