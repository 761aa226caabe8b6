"""q4_K: 256 weights -> 144 bytes (4.5 bpw); 8 sub-blocks of 32 with 6-bit scale and min.

Block layout::

    byte  0-1    d          fp16 super-scale of the scale codes
    byte  2-3    dmin       fp16 super-scale of the min codes
    byte  4-15   scales[12] eight 6-bit (scale, min) code pairs, "k4" packing
                            (see quant.formats._search.pack_scale_min_k4)
    byte 16-143  qs[128]    4-bit codes; element e = 64*c + 32*h + l (c<4, h<2, l<32) is
                            nibble h (0 = low) of qs[32*c + l]

Dequantized value of element e in sub-block j = e div 32: ``d*sc_j * code - dmin*m_j``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from quant.formats._kquant import kquant_fit, kquant_requantize, kquant_scales
from quant.formats._numeric import load_fp16
from quant.formats._search import QKX2_SCRATCH_SHAPE, unpack_scale_min_k4

BLOCK_SIZE = 256
TYPE_SIZE = 144
_CHUNK = 16
_NMAX = 15
_RMIN = np.float32(-1.0)
_RDELTA = np.float32(0.1)
_NSTEP = 20


@njit(cache=True)
def _pack_codes(out, L):
    """qs packing of the 256 codes (see the byte map in the module docstring)."""
    for c in range(4):
        for ln in range(32):
            e = 64 * c + ln
            out[16 + 32 * c + ln] = np.uint8(L[e] | (L[e + 32] << 4))


@njit(cache=True, parallel=True)
def quantize_blocks(x, out):
    """x: (nblocks, 256) float32 -> out: (nblocks, 144) uint8."""
    nb = x.shape[0]
    xf = x.reshape(-1)
    for c in prange((nb + _CHUNK - 1) // _CHUNK):
        L = np.empty(512, np.int64)
        w = np.empty(512, np.float32)
        scales = np.empty(16, np.float32)
        mins = np.empty(16, np.float32)
        sb = np.empty(12, np.int64)
        ws = np.empty(QKX2_SCRATCH_SHAPE, np.float32)
        b = c * _CHUNK
        end = min(nb, (c + 1) * _CHUNK)
        while b < end:
            nblk = 2 if b + 1 < end else 1
            kquant_fit(
                xf[256 * b : 256 * (b + nblk)], nblk, _NMAX, _RMIN, _RDELTA, _NSTEP, L, w,
                scales, mins, ws,
            )  # fmt: skip
            for h in range(nblk):
                blk = out[b + h]
                kquant_scales(blk, scales[8 * h : 8 * h + 8], mins[8 * h : 8 * h + 8], sb)
                Lh = L[256 * h : 256 * h + 256]
                kquant_requantize(x[b + h], blk, _NMAX, Lh)
                _pack_codes(blk, Lh)
            b += nblk


@njit(cache=True, parallel=True)
def dequantize_blocks(blob, out):
    """blob: (nblocks, 144) uint8 -> out: (nblocks, 256) float32."""
    for b in prange(blob.shape[0]):
        blk = blob[b]
        d = load_fp16(blk, 0)
        dmin = load_fp16(blk, 2)
        for j in range(8):
            sc, m = unpack_scale_min_k4(blk, 4, j)
            dl = d * np.float32(sc)
            ml = dmin * np.float32(m)
            c = j >> 1
            shift = 4 * (j & 1)
            for ln in range(32):
                code = (np.int64(blk[16 + 32 * c + ln]) >> shift) & 0xF
                out[b, 32 * j + ln] = dl * np.float32(code) - ml
