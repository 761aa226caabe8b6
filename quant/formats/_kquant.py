"""Steps shared by q4_K and q5_K: sub-block fits, 6-bit scale/min codes, re-quantization.

Both formats start their block with ``d`` (fp16, byte 0-1), ``dmin`` (fp16, byte 2-3) and the
12 "k4"-packed scale bytes (byte 4-15); they differ only in nmax, the search parameters and how
the codes are packed after byte 16.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from quant.formats._numeric import F0, load_fp16, nearest_int, store_fp16
from quant.formats._search import make_qkx2_quants_multi, pack_scale_min_k4, unpack_scale_min_k4

_I32 = np.float32(32.0)
_I63 = np.float32(63.0)


@njit(cache=True)
def kquant_fit(x, nblk, nmax, rmin, rdelta, nstep, L, w, scales, mins, ws):
    """Fit (scale, min, codes) for every 32-value sub-block of ``nblk`` (1 or 2) consecutive
    super-blocks ``x`` (nblk * 256 values) -> ``scales``/``mins``/``L`` (8 sub-blocks per block).

    Two super-blocks at a time give the lockstep search 16 independent sub-blocks.
    """
    for j in range(8 * nblk):
        sum_x2 = F0
        for i in range(32 * j, 32 * j + 32):
            sum_x2 += x[i] * x[i]
        av_x = np.sqrt(sum_x2 / _I32)
        for i in range(32 * j, 32 * j + 32):
            w[i] = av_x + abs(x[i])
    # per sub-block: (scale, -min, codes) = make_qkx2_quants(32, nmax, x, w, rmin, rdelta, nstep)
    make_qkx2_quants_multi(
        x[: 256 * nblk], w[: 256 * nblk], 8 * nblk, nmax, rmin, rdelta, nstep, False, L,
        scales, mins, ws,
    )  # fmt: skip


@njit(cache=True)
def kquant_scales(out, scales, mins, sb):
    """Write d, dmin and the packed 6-bit scale/min codes of one block to out[0:16]."""
    max_scale = F0
    max_min = F0
    for j in range(8):
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]

    inv_scale = _I63 / max_scale if max_scale > F0 else F0
    inv_min = _I63 / max_min if max_min > F0 else F0
    for k in range(12):
        sb[k] = 0
    for j in range(8):
        # ggml stores nearest_int into a uint8, then takes min(63, .)
        ls = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
        lm = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
        pack_scale_min_k4(sb, j, ls, lm)
    for k in range(12):
        out[4 + k] = np.uint8(sb[k])
    store_fp16(out, 0, max_scale / _I63)
    store_fp16(out, 2, max_min / _I63)


@njit(cache=True)
def kquant_requantize(x, out, nmax, L):
    """Re-derive codes in [0, nmax] from the stored d/dmin and 6-bit codes (zero scale: skip)."""
    d = load_fp16(out, 0)
    dmin = load_fp16(out, 2)
    for j in range(8):
        sc, m = unpack_scale_min_k4(out, 4, j)
        dj = d * np.float32(sc)
        if dj == F0:
            continue
        dmj = dmin * np.float32(m)
        for i in range(32):
            L[32 * j + i] = min(max(nearest_int((x[32 * j + i] + dmj) / dj), 0), nmax)
