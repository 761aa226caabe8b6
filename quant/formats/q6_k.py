"""q6_K: 256 weights -> 210 bytes (6.5625 bpw); 16 sub-blocks of 16, signed 6-bit, int8 scales.

Block layout::

    byte   0-127  ql[128]     low 4 bits; element e = 128*h + 32*s + l (h<2, s<4, l<32):
                              s=0 -> low nibble of ql[64h + l],  s=1 -> low nibble of ql[64h+32+l],
                              s=2 -> high nibble of ql[64h + l], s=3 -> high nibble of ql[64h+32+l]
    byte 128-191  qh[64]      high 2 bits of element e in bits 2*s .. 2*s+1 of qh[32h + l]
    byte 192-207  scales[16]  int8 scale of sub-block j = e div 16
    byte 208-209  d           fp16 super-scale

Stored code L in 0..63; dequantized value ``d*scales[j] * (L - 32)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from quant.formats._numeric import F0, F1, GROUP_MAX_EPS, load_fp16, nearest_int, store_fp16
from quant.formats._search import QX_SCRATCH_SHAPE, make_qx_quants

BLOCK_SIZE = 256
TYPE_SIZE = 210
_CHUNK = 16
_NEG128 = np.float32(-128.0)


@njit(cache=True)
def _quantize_block(x, out, L, scales, ws):
    max_scale = F0
    max_abs_scale = F0
    for j in range(16):
        s = make_qx_quants(x[16 * j : 16 * j + 16], 32, L[16 * j : 16 * j + 16], ws)
        scales[j] = s
        a = abs(s)
        if a > max_abs_scale:
            max_abs_scale = a
            max_scale = s

    if max_abs_scale < GROUP_MAX_EPS:
        for k in range(210):
            out[k] = 0
        return

    iscale = _NEG128 / max_scale
    d = store_fp16(out, 208, F1 / iscale)
    for j in range(16):
        code = min(127, nearest_int(iscale * scales[j]))
        out[192 + j] = np.uint8(code & 0xFF)

    # re-quantize against the stored scales; a zero scale keeps make_qx_quants' codes
    for j in range(16):
        sc = np.int64(out[192 + j])
        sc = sc - 256 if sc > 127 else sc
        dj = d * np.float32(sc)
        if dj == F0:
            continue
        for i in range(16):
            L[16 * j + i] = min(max(nearest_int(x[16 * j + i] / dj), -32), 31) + 32

    for h in range(2):
        for ln in range(32):
            e = 128 * h + ln
            q0 = L[e]
            q1 = L[e + 32]
            q2 = L[e + 64]
            q3 = L[e + 96]
            out[64 * h + ln] = np.uint8((q0 & 0xF) | ((q2 & 0xF) << 4))
            out[64 * h + 32 + ln] = np.uint8((q1 & 0xF) | ((q3 & 0xF) << 4))
            out[128 + 32 * h + ln] = np.uint8(
                (q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) | ((q3 >> 4) << 6)
            )


@njit(cache=True, parallel=True)
def quantize_blocks(x, out):
    """x: (nblocks, 256) float32 -> out: (nblocks, 210) uint8."""
    nb = x.shape[0]
    for c in prange((nb + _CHUNK - 1) // _CHUNK):
        L = np.empty(256, np.int64)
        scales = np.empty(16, np.float32)
        ws = np.empty(QX_SCRATCH_SHAPE, np.float32)
        for b in range(c * _CHUNK, min(nb, (c + 1) * _CHUNK)):
            _quantize_block(x[b], out[b], L, scales, ws)


@njit(cache=True, parallel=True)
def dequantize_blocks(blob, out):
    """blob: (nblocks, 210) uint8 -> out: (nblocks, 256) float32."""
    for b in prange(blob.shape[0]):
        blk = blob[b]
        d = load_fp16(blk, 208)
        for e in range(256):
            h = e >> 7
            s = (e >> 5) & 3
            ln = e & 31
            ql = np.int64(blk[64 * h + 32 * (s & 1) + ln])
            low = (ql >> (4 * (s >> 1))) & 0xF
            high = (np.int64(blk[128 + 32 * h + ln]) >> (2 * s)) & 3
            sc = np.int64(blk[192 + (e >> 4)])
            sc = sc - 256 if sc > 127 else sc
            out[b, e] = d * np.float32(sc) * np.float32((low | (high << 4)) - 32)
