"""q2_K: 256 weights -> 84 bytes (2.625 bpw); 16 sub-blocks of 16 with 4-bit scale and min.

Block layout::

    byte  0-15  scales[16]  byte j: bits 0-3 = scale code of sub-block j, bits 4-7 = min code
    byte 16-79  qs[64]      2-bit codes; element e = 128*h + 32*s + l (h<2, s<4, l<32)
                            sits in qs[32*h + l], bits 2*s .. 2*s+1
    byte 80-81  d           fp16 super-scale of the scale codes
    byte 82-83  dmin        fp16 super-scale of the min codes

Dequantized value of element e in sub-block j: ``d*(scales[j] & 15) * code - dmin*(scales[j] >> 4)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from quant.formats._numeric import F0, load_fp16, nearest_int, store_fp16
from quant.formats._search import QKX2_SCRATCH_SHAPE, make_qkx2_quants_multi

BLOCK_SIZE = 256
TYPE_SIZE = 84
_CHUNK = 16  # blocks per parallel work item (scratch is allocated once per chunk)
_Q4SCALE = np.float32(15.0)
_RMIN = np.float32(-0.5)
_RDELTA = np.float32(0.1)


@njit(cache=True)
def _quantize_block(x, out, L, w, scales, mins, ws):
    for i in range(256):
        w[i] = abs(x[i])
    # per 16-value sub-block: (scale, -min, codes) = make_qkx2_quants(16, 3, x, |x|, -0.5, 0.1, 15)
    make_qkx2_quants_multi(x, w, 16, 3, _RMIN, _RDELTA, 15, True, L, scales, mins, ws)
    max_scale = F0
    max_min = F0
    for j in range(16):
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]

    # scale codes (low nibbles) and min codes (high nibbles); ggml stores them in uint8
    if max_scale > F0:
        iscale = _Q4SCALE / max_scale
        for j in range(16):
            out[j] = np.uint8(nearest_int(iscale * scales[j]) & 0xFF)
        d = store_fp16(out, 80, max_scale / _Q4SCALE)
    else:
        for j in range(16):
            out[j] = 0
        d = store_fp16(out, 80, F0)
    if max_min > F0:
        iscale = _Q4SCALE / max_min
        for j in range(16):
            code = nearest_int(iscale * mins[j])
            out[j] = np.uint8((np.int64(out[j]) | (code << 4)) & 0xFF)
        dmin = store_fp16(out, 82, max_min / _Q4SCALE)
    else:
        dmin = store_fp16(out, 82, F0)

    # re-quantize against the stored (fp16-rounded) scales; a zero scale keeps the search's codes
    for j in range(16):
        sc = np.int64(out[j])
        dj = d * np.float32(sc & 0xF)
        if dj == F0:
            continue
        mj = dmin * np.float32(sc >> 4)
        for i in range(16):
            L[16 * j + i] = min(max(nearest_int((x[16 * j + i] + mj) / dj), 0), 3)

    for h in range(2):
        for ln in range(32):
            e = 128 * h + ln
            out[16 + 32 * h + ln] = np.uint8(
                L[e] | (L[e + 32] << 2) | (L[e + 64] << 4) | (L[e + 96] << 6)
            )


@njit(cache=True, parallel=True)
def quantize_blocks(x, out):
    """x: (nblocks, 256) float32 -> out: (nblocks, 84) uint8."""
    nb = x.shape[0]
    for c in prange((nb + _CHUNK - 1) // _CHUNK):
        L = np.empty(256, np.int64)
        w = np.empty(256, np.float32)
        scales = np.empty(16, np.float32)
        mins = np.empty(16, np.float32)
        ws = np.empty(QKX2_SCRATCH_SHAPE, np.float32)
        for b in range(c * _CHUNK, min(nb, (c + 1) * _CHUNK)):
            _quantize_block(x[b], out[b], L, w, scales, mins, ws)


@njit(cache=True, parallel=True)
def dequantize_blocks(blob, out):
    """blob: (nblocks, 84) uint8 -> out: (nblocks, 256) float32."""
    for b in prange(blob.shape[0]):
        blk = blob[b]
        d = load_fp16(blk, 80)
        dmin = load_fp16(blk, 82)
        for e in range(256):
            h = e >> 7
            s = (e >> 5) & 3
            ln = e & 31
            sc = np.int64(blk[e >> 4])
            dl = d * np.float32(sc & 0xF)
            ml = dmin * np.float32(sc >> 4)
            code = (np.int64(blk[16 + 32 * h + ln]) >> (2 * s)) & 3
            out[b, e] = dl * np.float32(code) - ml
