"""q5_K: 256 weights -> 176 bytes (5.5 bpw); 8 sub-blocks of 32 with 6-bit scale and min.

Block layout::

    byte  0-1    d          fp16 super-scale of the scale codes
    byte  2-3    dmin       fp16 super-scale of the min codes
    byte  4-15   scales[12] eight 6-bit (scale, min) code pairs, "k4" packing as q4_K
    byte 16-47   qh[32]     5th bit of element e = 64*c + 32*h + l is bit 2*c + h of qh[l]
    byte 48-175  qs[128]    low 4 bits of element e in nibble h (0 = low) of qs[32*c + l]

Dequantized value of element e in sub-block j = e div 32: ``d*sc_j * code - dmin*m_j``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from quant.formats._kquant import kquant_fit, kquant_requantize, kquant_scales
from quant.formats._numeric import load_fp16
from quant.formats._search import QKX2_SCRATCH_SHAPE, unpack_scale_min_k4

BLOCK_SIZE = 256
TYPE_SIZE = 176
_CHUNK = 16
_NMAX = 31
_RMIN = np.float32(-0.5)
_RDELTA = np.float32(0.1)
_NSTEP = 15


@njit(cache=True)
def _pack_codes(out, L):
    """qh/qs packing of the 256 codes (see the byte map in the module docstring)."""
    for ln in range(32):
        qh = 0
        for c in range(4):
            e = 64 * c + ln
            lo = L[e]  # codes are 0..31: bit 4 goes to qh, bits 0-3 to qs
            hi = L[e + 32]
            qh |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1))
            out[48 + 32 * c + ln] = np.uint8((lo & 15) | ((hi & 15) << 4))
        out[16 + ln] = np.uint8(qh)


@njit(cache=True, parallel=True)
def quantize_blocks(x, out):
    """x: (nblocks, 256) float32 -> out: (nblocks, 176) uint8."""
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
    """blob: (nblocks, 176) uint8 -> out: (nblocks, 256) float32."""
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
                code = (np.int64(blk[48 + 32 * c + ln]) >> shift) & 0xF
                code += ((np.int64(blk[16 + ln]) >> j) & 1) << 4
                out[b, 32 * j + ln] = dl * np.float32(code) - ml
