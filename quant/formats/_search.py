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


QX_SCRATCH_SHAPE = (5, 32)  # float32 scratch rows for make_qx_quants (n <= 32)


@njit(cache=True)
def make_qx_quants(x, nmax, L, ws):
    """Signed quantizer with a +-0.9 scale search, weights x**2 (ggml rmse_type=1, no imatrix).

    Codes ``L`` in [0, 2*nmax - 1] (stored biased by nmax). Returns the float32 scale, which has
    the opposite sign of the largest-magnitude element (0 for an all-zero sub-block).

    ``ws`` is float32 scratch of shape ``QX_SCRATCH_SHAPE``. ggml evaluates its 18 candidate
    scales one after another; here the per-candidate sums are accumulated side by side (each
    still sequentially over i, so every sum is bit-identical) and the candidates are then
    judged in ggml's order. Independent accumulators let the CPU overlap the add latencies.
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
    w = ws[0]
    wx = ws[1]
    iscales = ws[2]
    slx = ws[3]
    sl2 = ws[4]
    for i in range(n):
        w[i] = x[i] * x[i]
        wx[i] = w[i] * x[i]  # ggml's w*x*l is (w*x)*l
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

    # candidates is = -9..-1, 1..9 in ggml's order
    for k in range(18):
        step = k - 9 if k < 9 else k - 8
        iscales[k] = -(fnmax + _TENTH * np.float32(step)) / vmax
        slx[k] = F0
        sl2[k] = F0
    for i in range(n):
        xi = x[i]
        wi = w[i]
        wxi = wx[i]
        for k in range(18):
            # |iscale * x| <= nmax + 0.9, so the float form of nearest_int is exact here
            fq = round_half_even_small(iscales[k] * xi)
            fq = lo if fq < lo else fq
            fq = hi if fq > hi else fq
            slx[k] += wxi * fq
            sl2[k] += wi * fq * fq
    for k in range(18):
        if sl2[k] > F0 and slx[k] * slx[k] > best * sl2[k]:
            for i in range(n):
                L[i] = nmax + min(max(nearest_int(iscales[k] * x[i]), -nmax), nmax - 1)
            scale = slx[k] / sl2[k]
            best = scale * slx[k]
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


# rows of the float32 scratch used by make_qkx2_quants_multi (columns: one per sub-block)
_XT, _WT = 0, 32  # sub-block values / weights transposed to [element, sub-block]
(_VMIN, _VMAX, _SUMW, _SUMX, _SCALE, _BEST, _ISC, _SL, _SL2, _SXL, _TS, _TM, _ERR, _MAXD,
 _ACTIVE) = range(64, 79)  # fmt: skip
QKX2_SCRATCH_SHAPE = (79, 16)
_FLOAT_ROUND_LIMIT = np.float32(4.0e6)  # below 2**22: the float form of nearest_int is exact


@njit(cache=True)
def make_qkx2_quants_multi(x, w, nsub, nmax, rmin, rdelta, nstep, use_mad, L, scales, mins, ws):
    """``make_qkx2_quants`` on ``nsub`` consecutive sub-blocks of one super-block, in lockstep.

    ``x``/``w``/``L`` hold nsub * n values (n = len(x) // nsub <= 32, nsub <= 16); the fitted
    scale and min (returned as ``-min``, like ggml's ``the_min``) of sub-block g go to
    ``scales[g]``/``mins[g]``. ``ws`` is float32 scratch of shape ``QKX2_SCRATCH_SHAPE``.

    Every sub-block follows exactly ggml's sequence of candidates, sums and decisions (results are
    bit-identical to calling ``make_qkx2_quants`` per sub-block). The sub-blocks are independent,
    so running them side by side turns ggml's chains of dependent float additions into
    independent ones the CPU can overlap. A sub-block whose candidate products could leave the
    range where float rounding equals ggml's ``nearest_int`` is redone with the scalar routine.
    """
    n = x.shape[0] // nsub
    frmin = np.float32(rmin)
    frdelta = np.float32(rdelta)
    fnmax = np.float32(nmax)
    st = ws[64:]
    for g in range(nsub):
        o = g * n
        vmin = x[o]
        vmax = x[o]
        sum_w = w[o]
        sum_x = sum_w * x[o]
        for i in range(1, n):
            if x[o + i] < vmin:
                vmin = x[o + i]
            if x[o + i] > vmax:
                vmax = x[o + i]
            sum_w += w[o + i]
            sum_x += w[o + i] * x[o + i]
        if vmin > F0:
            vmin = F0
        for i in range(n):
            ws[_XT + i, g] = x[o + i]
            ws[_WT + i, g] = w[o + i]
        st[_VMAX - 64, g] = vmax
        st[_SUMW - 64, g] = sum_w
        st[_SUMX - 64, g] = sum_x
        if vmax == vmin:
            for i in range(n):
                L[o + i] = 0
            st[_VMIN - 64, g] = vmin
            st[_SCALE - 64, g] = F0
            st[_ACTIVE - 64, g] = F0
            continue
        iscale = fnmax / (vmax - vmin)
        scale = F1 / iscale
        best_error = F0
        for i in range(n):
            q = min(max(nearest_int(iscale * (x[o + i] - vmin)), 0), nmax)
            L[o + i] = q
            diff = scale * np.float32(q) + vmin - x[o + i]
            diff = abs(diff) if use_mad else diff * diff
            best_error += w[o + i] * diff
        st[_VMIN - 64, g] = vmin
        st[_SCALE - 64, g] = scale
        st[_BEST - 64, g] = best_error
        st[_ACTIVE - 64, g] = F1 if nstep >= 1 else F0

    vmin_v = st[_VMIN - 64]
    vmax_v = st[_VMAX - 64]
    sumw_v = st[_SUMW - 64]
    sumx_v = st[_SUMX - 64]
    isc = st[_ISC - 64]
    sl = st[_SL - 64]
    sl2 = st[_SL2 - 64]
    sxl = st[_SXL - 64]
    ts_v = st[_TS - 64]
    tm_v = st[_TM - 64]
    err = st[_ERR - 64]
    maxd = st[_MAXD - 64]
    active = st[_ACTIVE - 64]
    for step in range(nstep + 1 if nstep >= 1 else 0):
        fstep = frdelta * np.float32(step)
        for g in range(nsub):
            isc[g] = F0
            if active[g] == F0:
                continue
            isc[g] = (frmin + fstep + fnmax) / (vmax_v[g] - vmin_v[g])
            m = F0
            for i in range(n):
                d = abs(ws[_XT + i, g] - vmin_v[g])
                m = d if d > m else m
            if not abs(isc[g]) * m <= _FLOAT_ROUND_LIMIT:  # also catches inf/nan
                # rare: finish this sub-block with ggml's scalar procedure from scratch
                s, mn = make_qkx2_quants(
                    x[g * n : g * n + n], w[g * n : g * n + n], nmax, rmin, rdelta, nstep,
                    use_mad, L[g * n : g * n + n], L[g * n : g * n + n].copy(),
                )  # fmt: skip
                st[_SCALE - 64, g] = s
                vmin_v[g] = -mn
                active[g] = F0
                isc[g] = F0
        for g in range(nsub):
            sl[g] = F0
            sl2[g] = F0
            sxl[g] = F0
        for i in range(n):
            xr = ws[_XT + i]
            wr = ws[_WT + i]
            for g in range(nsub):
                fq = round_half_even_small(isc[g] * (xr[g] - vmin_v[g]))
                fq = F0 if fq < F0 else fq
                fq = fnmax if fq > fnmax else fq
                wl = wr[g] * fq
                sl[g] += wl
                sl2[g] += wl * fq
                sxl[g] += wl * xr[g]
        for g in range(nsub):
            det = sumw_v[g] * sl2[g] - sl[g] * sl[g]
            ts = F0
            tm = F0
            maxd[g] = F1 if (det > F0 and active[g] != F0) else F0
            if maxd[g] != F0:
                ts = (sumw_v[g] * sxl[g] - sumx_v[g] * sl[g]) / det
                tm = (sl2[g] * sumx_v[g] - sl[g] * sxl[g]) / det
                if tm > F0:
                    tm = F0
                    ts = sxl[g] / sl2[g]
            ts_v[g] = ts
            tm_v[g] = tm
            err[g] = F0
        for i in range(n):
            xr = ws[_XT + i]
            wr = ws[_WT + i]
            for g in range(nsub):
                fq = round_half_even_small(isc[g] * (xr[g] - vmin_v[g]))
                fq = F0 if fq < F0 else fq
                fq = fnmax if fq > fnmax else fq
                diff = ts_v[g] * fq + tm_v[g] - xr[g]
                diff = abs(diff) if use_mad else diff * diff
                err[g] += wr[g] * diff
        for g in range(nsub):
            # maxd doubles as the "candidate is valid" flag (det > 0 for an active sub-block)
            if maxd[g] != F0 and err[g] < st[_BEST - 64, g]:
                o = g * n
                for i in range(n):
                    L[o + i] = min(max(nearest_int(isc[g] * (x[o + i] - vmin_v[g])), 0), nmax)
                st[_BEST - 64, g] = err[g]
                st[_SCALE - 64, g] = ts_v[g]
                vmin_v[g] = tm_v[g]
    for g in range(nsub):
        scales[g] = st[_SCALE - 64, g]
        mins[g] = -vmin_v[g]


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
