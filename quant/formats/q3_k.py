"""q3_K: 256 weights -> 110 bytes (3.4375 bpw); 16 sub-blocks of 16, signed 3-bit, 6-bit scales.

Block layout::

    byte   0-31   hmask[32]   bit (e div 32) of hmask[e mod 32] = high (3rd) bit of element e
    byte  32-95   qs[64]      low 2 bits; element e = 128*h + 32*s + l in qs[32*h + l],
                              bits 2*s .. 2*s+1 (same placement as q2_K)
    byte  96-107  scales[12]  sixteen 6-bit codes S_j (real scale S_j - 32):
                              bits 0-3 of S_j: j < 8 -> byte j bits 0-3, j >= 8 -> byte j-8 bits 4-7
                              bits 4-5 of S_j: byte 8 + j%4, bits 2*(j div 4) .. +1
    byte 108-109  d           fp16 super-scale

Stored code ``L = low2 + 4*hbit`` in 0..7; dequantized value ``d*(S_j - 32) * (L - 4)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from quant.formats._numeric import F0, F1, load_fp16, nearest_int, store_fp16
from quant.formats._search import make_q3_quants

BLOCK_SIZE = 256
TYPE_SIZE = 110
_CHUNK = 16
_NEG32 = np.float32(-32.0)


@njit(cache=True)
def _scale_code(blk, j):
    """6-bit biased scale code S_j (0..63) read from the 12 scale bytes at offset 96."""
    low = (np.int64(blk[96 + j]) & 0xF) if j < 8 else (np.int64(blk[96 + j - 8]) >> 4)
    high = (np.int64(blk[104 + j % 4]) >> (2 * (j // 4))) & 3
    return low | (high << 4)


@njit(cache=True)
def _quantize_block(x, out, L, scales):
    max_scale = F0
    amax = F0
    for j in range(16):
        s = make_q3_quants(x[16 * j : 16 * j + 16], 4, L[16 * j : 16 * j + 16])
        scales[j] = s
        a = abs(s)
        if a > amax:
            amax = a
            max_scale = s

    for k in range(12):
        out[96 + k] = 0
    if max_scale != F0:
        iscale = _NEG32 / max_scale
        for j in range(16):
            # ggml stores nearest_int into an int8 before clamping
            code = nearest_int(iscale * scales[j])
            code = ((code & 0xFF) ^ 0x80) - 0x80
            code = min(max(code, -32), 31) + 32
            if j < 8:
                out[96 + j] = np.uint8(code & 0xF)
            else:
                out[96 + j - 8] = np.uint8(np.int64(out[96 + j - 8]) | ((code & 0xF) << 4))
            k = 104 + j % 4
            out[k] = np.uint8((np.int64(out[k]) | ((code >> 4) << (2 * (j // 4)))) & 0xFF)
        d = store_fp16(out, 108, F1 / iscale)
    else:
        d = store_fp16(out, 108, F0)

    # re-quantize against the stored scales; a zero scale keeps make_q3_quants' codes
    for j in range(16):
        dj = d * np.float32(_scale_code(out, j) - 32)
        if dj == F0:
            continue
        for i in range(16):
            L[16 * j + i] = min(max(nearest_int(x[16 * j + i] / dj), -4), 3) + 4

    # split off the high bit into hmask, keep the low 2 bits in L
    for m in range(32):
        hm = 0
        for bit in range(8):
            e = 32 * bit + m
            hm |= (L[e] >> 2) << bit  # codes are 0..7: bit 2 is the high bit
            L[e] &= 3
        out[m] = np.uint8(hm)
    for h in range(2):
        for ln in range(32):
            e = 128 * h + ln
            out[32 + 32 * h + ln] = np.uint8(
                L[e] | (L[e + 32] << 2) | (L[e + 64] << 4) | (L[e + 96] << 6)
            )


@njit(cache=True, parallel=True)
def quantize_blocks(x, out):
    """x: (nblocks, 256) float32 -> out: (nblocks, 110) uint8."""
    nb = x.shape[0]
    for c in prange((nb + _CHUNK - 1) // _CHUNK):
        L = np.empty(256, np.int64)
        scales = np.empty(16, np.float32)
        for b in range(c * _CHUNK, min(nb, (c + 1) * _CHUNK)):
            _quantize_block(x[b], out[b], L, scales)


@njit(cache=True, parallel=True)
def dequantize_blocks(blob, out):
    """blob: (nblocks, 110) uint8 -> out: (nblocks, 256) float32."""
    for b in prange(blob.shape[0]):
        blk = blob[b]
        d = load_fp16(blk, 108)
        for j in range(16):
            dl = d * np.float32(_scale_code(blk, j) - 32)
            for i in range(16):
                e = 16 * j + i
                h = e >> 7
                s = (e >> 5) & 3
                ln = e & 31
                low2 = (np.int64(blk[32 + 32 * h + ln]) >> (2 * s)) & 3
                hbit = (np.int64(blk[ln]) >> (e >> 5)) & 1
                out[b, e] = dl * np.float32(low2 - (0 if hbit else 4))
