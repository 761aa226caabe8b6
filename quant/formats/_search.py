"""Sub-block scale searches used by the K-quant reference quantizers (QUANT-SPEC §2.5).

Each function works on one sub-block ``x`` (a float32 view) and writes integer codes into ``L``
(an int64 scratch view of the same length). All arithmetic is float32, sums run sequentially in
index order, products keep C's left-to-right association and comparisons keep C's strictness:
that is what makes the results byte-identical to ggml.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from quant.formats._numeric import F0, F1, GROUP_MAX_EPS, nearest_int, round_half_even_small

_TENTH = np.float32(0.1)


@njit(cache=True)
def make_qx_quants(x, nmax, L, w, wx):
    """Signed quantizer with a +-0.9 scale search, weights x**2 (ggml rmse_type=1, no imatrix).

    Codes ``L`` in [0, 2*nmax - 1] (stored biased by nmax). Returns the float32 scale, which has
    the opposite sign of the largest-magnitude element (0 for an all-zero sub-block).
    ``w`` and ``wx`` are float32 scratch of x's length (they hold x*x and x*x*x, which ggml
    recomputes inside every loop; the values are identical).
    """
    n = x.shape[0]
    vmax = F0
    amax = F0
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            vmax = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F0
    for i in range(n):
        w[i] = x[i] * x[i]
        wx[i] = w[i] * x[i]
    fnmax = np.float32(nmax)
    lo = -fnmax
    hi = fnmax - F1
    iscale = -fnmax / vmax
    sumlx = F0
    suml2 = F0
    for i in range(n):
        q = min(max(nearest_int(iscale * x[i]), -nmax), nmax - 1)
        L[i] = q + nmax
        fq = np.float32(q)
        sumlx += wx[i] * fq
        suml2 += w[i] * fq * fq
    scale = sumlx / suml2 if suml2 != F0 else F0
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(fnmax + _TENTH * np.float32(step)) / vmax
        sumlx = F0
        suml2 = F0
        for i in range(n):
            # |iscale * x| <= nmax + 0.9, so the float form of nearest_int is exact here
            fq = min(max(round_half_even_small(iscale * x[i]), lo), hi)
            sumlx += wx[i] * fq
            suml2 += w[i] * fq * fq
        if suml2 > F0 and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[i] = nmax + min(max(nearest_int(iscale * x[i]), -nmax), nmax - 1)
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(cache=True)
def make_q3_quants(x, nmax, L):
    """Signed quantizer refined by coordinate descent (ggml make_q3_quants, do_rmse=true).

    Codes ``L`` in [0, 2*nmax - 1]; returns the float32 least-squares scale.
    """
    n = x.shape[0]
    vmax = F0
    amax = F0
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            vmax = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F0
    iscale = -np.float32(nmax) / vmax
    sumlx = F0
    suml2 = F0
    for i in range(n):
        q = min(max(nearest_int(iscale * x[i]), -nmax), nmax - 1)
        L[i] = q
        w = x[i] * x[i]
        fq = np.float32(q)
        sumlx += w * x[i] * fq
        suml2 += w * fq * fq
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = x[i] * x[i]
            fl = np.float32(L[i])
            slx = sumlx - w * x[i] * fl
            if slx > F0:
                sl2 = suml2 - w * fl * fl
                new_l = min(max(nearest_int(x[i] * sl2 / slx), -nmax), nmax - 1)
                if new_l != L[i]:
                    fn = np.float32(new_l)
                    slx += w * x[i] * fn
                    sl2 += w * fn * fn
                    if sl2 > F0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[i] += nmax
    return sumlx / suml2 if suml2 > F0 else F0


@njit(cache=True)
def make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep, use_mad, L, Laux):
    """Asymmetric quantizer ``x ~ scale*L + min`` (min <= 0) with a weighted scale search.

    ``w`` are per-element weights, codes ``L`` in [0, nmax]; ``Laux`` is scratch of the same
    length. Returns ``(scale, -min)`` as float32. Note (as in ggml) that a winning candidate
    overwrites ``vmin``, which every later candidate then uses.
    """
    n = x.shape[0]
    frmin = np.float32(rmin)
    frdelta = np.float32(rdelta)
    vmin = x[0]
    vmax = x[0]
    sum_w = w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < vmin:
            vmin = x[i]
        if x[i] > vmax:
            vmax = x[i]
        sum_w += w[i]
        sum_x += w[i] * x[i]
    if vmin > F0:
        vmin = F0
    if vmax == vmin:
        for i in range(n):
            L[i] = 0
        return F0, -vmin
    fnmax = np.float32(nmax)
    iscale = fnmax / (vmax - vmin)
    scale = np.float32(1.0) / iscale
    best_error = F0
    for i in range(n):
        q = min(max(nearest_int(iscale * (x[i] - vmin)), 0), nmax)
        L[i] = q
        diff = scale * np.float32(q) + vmin - x[i]
        diff = abs(diff) if use_mad else diff * diff
        best_error += w[i] * diff
    if nstep < 1:
        return scale, -vmin
    for step in range(nstep + 1):
        iscale = (frmin + frdelta * np.float32(step) + fnmax) / (vmax - vmin)
        sum_l = F0
        sum_l2 = F0
        sum_xl = F0
        for i in range(n):
            q = min(max(nearest_int(iscale * (x[i] - vmin)), 0), nmax)
            Laux[i] = q
            fq = np.float32(q)
            sum_l += w[i] * fq
            sum_l2 += w[i] * fq * fq
            sum_xl += w[i] * fq * x[i]
        det = sum_w * sum_l2 - sum_l * sum_l
        if det > F0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            if this_min > F0:
                this_min = F0
                this_scale = sum_xl / sum_l2
            cur_error = F0
            for i in range(n):
                diff = this_scale * np.float32(Laux[i]) + this_min - x[i]
                diff = abs(diff) if use_mad else diff * diff
                cur_error += w[i] * diff
            if cur_error < best_error:
                for i in range(n):
                    L[i] = Laux[i]
                best_error = cur_error
                scale = this_scale
                vmin = this_min
    return scale, -vmin


@njit(cache=True)
def pack_scale_min_k4(sb, j, ls, lm):
    """Pack 6-bit (scale, min) codes of sub-block j (0..7) into 12 bytes ``sb`` (int64 scratch).

    Byte map ("k4" packing, q4_K/q5_K):
      j < 4 : sb[j]   bits 0-5 = scale_j,  sb[j+4] bits 0-5 = min_j
      j >= 4: sb[j+4] bits 0-3 = scale_j & 15, bits 4-7 = min_j & 15,
              sb[j-4] bits 6-7 = scale_j >> 4, sb[j]   bits 6-7 = min_j >> 4
    ``sb`` must be zeroed first.
    """
    if j < 4:
        sb[j] = ls
        sb[j + 4] = lm
    else:
        sb[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
        sb[j - 4] |= (ls >> 4) << 6
        sb[j] |= (lm >> 4) << 6


@njit(cache=True)
def unpack_scale_min_k4(blk, off, j):
    """Inverse of ``pack_scale_min_k4`` reading the 12 bytes at ``blk[off:off+12]``."""
    if j < 4:
        sc = np.int64(blk[off + j]) & 63
        m = np.int64(blk[off + j + 4]) & 63
    else:
        sc = (np.int64(blk[off + j + 4]) & 0xF) | ((np.int64(blk[off + j - 4]) >> 6) << 4)
        m = (np.int64(blk[off + j + 4]) >> 4) | ((np.int64(blk[off + j]) >> 6) << 4)
    return sc, m
