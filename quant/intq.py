"""Integer round-to-nearest (RTN) quantization with bit-packed storage.

One grid is used everywhere in quantloop for "plain" integer quantization (RTN and GPTQ), so a
weight quantized by either method is stored, sized and dequantized the same way.

Grid (the min-max quantizer of IST-DASLab/gptq ``quant.py``; ``maxq = 2**bits - 1``):

* the range always contains 0: ``xmin = min(min(x), 0)``, ``xmax = max(max(x), 0)``;
* asymmetric: ``scale = (xmax - xmin) / maxq``, ``zero = round(-xmin / scale)`` (stored, uint8);
* symmetric: ``a = max(-xmin, xmax)``, ``scale = 2 * a / maxq``, ``zero = (maxq + 1) // 2``
  (implicit, not stored). The code range is ``[0, maxq]`` so the grid is ``-zero .. maxq - zero``
  times the scale (e.g. 4 bit: -8s .. 7s), as in the GPTQ reference. One deliberate deviation:
  the reference keeps ``xmin = 0`` for an all-positive group (scale ``xmax / maxq``), which clips
  the upper half of that group; here the range is always ``[-a, a]``;
* an all-zero group uses ``xmin = -1, xmax = 1`` (a harmless non-zero scale; every code equals the
  zero point so the group dequantizes to exact zeros);
* ``code = clamp(round_half_even(x / scale) + zero, 0, maxq)``; ``x_hat = (code - zero) * scale``.

Scales are stored as float16. They are rounded to float16 *upwards* (to the next representable
float16 >= the float32 scale) before any code is computed, and codes are computed with that
rounded scale, so ``dequantize_int`` reproduces exactly what was chosen and the error bound
``|x - x_hat| <= scale / 2`` holds for every element of a group (rounding the scale down could push
the group's extreme outside the grid).

Storage: codes of one row form a little-endian bitstream, LSB first: code ``j`` occupies stream
bits ``[j*bits, (j+1)*bits)`` and stream bit ``k`` is bit ``k % 8`` of byte ``k // 8``. A row takes
``ceil(cols * bits / 8)`` bytes; 3-, 5-, 6- and 7-bit codes cross byte boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

GRANULARITIES = ("per_tensor", "per_channel", "per_group")
MIN_BITS, MAX_BITS = 2, 8


@dataclass(frozen=True)
class IntSpec:
    """How a (rows, cols) weight is quantized to integers.

    ``bits`` in 2..8; ``granularity`` one of ``per_tensor`` (one scale for the whole matrix),
    ``per_channel`` (one scale per output row) or ``per_group`` (one scale per ``group_size``
    consecutive input columns of a row); ``symmetric`` selects the grid (see module docstring).
    When ``group_size`` does not divide the number of columns, the last group of every row is
    shorter (``cols % group_size`` columns), as in the GPTQ reference: SmolLM2's 576 columns at
    group size 128 are four groups of 128 and one of 64.
    """

    bits: int
    granularity: str
    group_size: int = 128
    symmetric: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the bad field and its valid choices."""
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)):
            raise ValueError(
                f"IntSpec.bits must be an int in {MIN_BITS}..{MAX_BITS}, got {self.bits!r}"
            )
        if not MIN_BITS <= int(self.bits) <= MAX_BITS:
            raise ValueError(f"IntSpec.bits must be in {MIN_BITS}..{MAX_BITS}, got {self.bits}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"IntSpec.granularity must be one of {list(GRANULARITIES)}, got {self.granularity!r}"
            )
        if not isinstance(self.symmetric, (bool, np.bool_)):
            raise ValueError(f"IntSpec.symmetric must be a bool, got {self.symmetric!r}")
        if self.granularity == "per_group":
            gs = self.group_size
            if isinstance(gs, bool) or not isinstance(gs, (int, np.integer)) or gs <= 0:
                raise ValueError(f"IntSpec.group_size must be a positive int, got {gs!r}")

    @property
    def maxq(self) -> int:
        return (1 << int(self.bits)) - 1

    def n_groups(self, cols: int) -> int:
        if self.granularity == "per_group":
            return -(-cols // self.group_size)
        return 1

    def group_cols(self, cols: int) -> int:
        return self.group_size if self.granularity == "per_group" else cols


@dataclass
class PackedInt:
    """Bit-packed integer codes plus float16 scales (and uint8 zero points when asymmetric)."""

    spec: IntSpec
    shape: tuple[int, int]
    data: np.ndarray  # uint8 (rows, bytes_per_row)
    scales: np.ndarray  # float16 (rows, n_groups); (1, 1) for per_tensor
    zeros: np.ndarray | None  # uint8 like scales; None when symmetric

    @property
    def nbytes(self) -> int:
        z = 0 if self.zeros is None else int(self.zeros.nbytes)
        return int(self.data.nbytes) + int(self.scales.nbytes) + z

    @property
    def bits_per_weight(self) -> float:
        rows, cols = self.shape
        return 8.0 * self.nbytes / (rows * cols)


def bytes_per_row(cols: int, bits: int) -> int:
    return (cols * bits + 7) // 8


# --------------------------------------------------------------------------------------------
# grid parameters (numpy; float16 rounding cannot happen inside numba)
# --------------------------------------------------------------------------------------------


def symmetric_zero(bits: int) -> int:
    return (((1 << bits) - 1) + 1) // 2


def fp16_ceil(scale: np.ndarray) -> np.ndarray:
    """Round positive float32 scales up to the nearest float16 (>= the input)."""
    s32 = np.asarray(scale, dtype=np.float32)
    if not np.all(np.isfinite(s32)):
        raise ValueError("quantization scale is not finite (weights contain inf/nan?)")
    with np.errstate(over="ignore"):
        s16 = s32.astype(np.float16)
    low = s16.astype(np.float32) < s32
    if np.any(low):
        s16[low] = np.nextafter(s16[low], np.float16(np.inf))
    if np.any(np.isinf(s16)):
        raise ValueError(
            f"weights too large for float16 scales (max scale {float(s32.max()):.4g} > 65504)"
        )
    return s16


def grid_params(
    xmin: np.ndarray, xmax: np.ndarray, bits: int, symmetric: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float16, rounded up) and zero point (uint8) from per-group min/max.

    ``xmin``/``xmax`` are the raw group minima/maxima (any shape); for symmetric grids the
    returned zero is the implicit constant ``(maxq + 1) // 2`` broadcast to the same shape.
    """
    maxq = (1 << bits) - 1
    xmin = np.minimum(np.asarray(xmin, dtype=np.float32), np.float32(0))
    xmax = np.maximum(np.asarray(xmax, dtype=np.float32), np.float32(0))
    if symmetric:
        # Always a truly symmetric range. (The GPTQ reference only mirrors xmin when it is < 0,
        # so an all-positive group gets scale xmax/maxq and its upper half is clipped.)
        xmax = np.maximum(-xmin, xmax)
        xmin = -xmax
    dead = (xmin == 0) & (xmax == 0)
    xmin = np.where(dead, np.float32(-1), xmin).astype(np.float32)
    xmax = np.where(dead, np.float32(1), xmax).astype(np.float32)
    scale16 = fp16_ceil((xmax - xmin) / np.float32(maxq))
    if symmetric:
        zero = np.full(scale16.shape, symmetric_zero(bits), dtype=np.uint8)
    else:
        z = np.rint(-xmin / scale16.astype(np.float32))
        zero = np.clip(z, 0, maxq).astype(np.uint8)
    return scale16, zero


def grid_params_mse(
    x: np.ndarray,
    bits: int,
    symmetric: bool,
    *,
    group_cols: int | None = None,
    norm: float = 2.4,
    grid: int = 100,
    maxshrink: float = 0.8,
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero) per row of ``x`` (rows, n) with the shrink search of GPTQ ``quant.py``.

    Tries ``int(maxshrink * grid)`` shrunken ranges ``p * [xmin, xmax]``, ``p = 1 - i / grid``, and
    keeps, per row, the one with the smallest ``sum |x_hat - x| ** norm`` (computed with the
    float16-rounded scale, i.e. the error of what would be stored; the first of equal errors
    wins). ``p = 1`` is plain min-max. With ``group_cols`` every run of that many columns (the
    last may be shorter) is searched on its own and the results are (rows, n_groups); without
    it they are (rows,).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, cols = x.shape
    gc = cols if group_cols is None else int(group_cols)
    starts = np.arange(0, cols, gc)
    xmin = np.minimum.reduceat(x, starts, axis=1)
    xmax = np.maximum.reduceat(x, starts, axis=1)
    p = (1 - np.arange(int(maxshrink * grid)) / grid).astype(np.float32)[:, None, None]
    s16, z = grid_params(p * np.minimum(xmin, 0), p * np.maximum(xmax, 0), bits, symmetric)
    best = _mse_pick_kernel(
        x, s16.astype(np.float32), z.astype(np.float32), gc, np.float32((1 << bits) - 1), norm
    )
    r, g = np.indices(best.shape)
    s_best, z_best = s16[best, r, g], z[best, r, g]
    if group_cols is None:
        return s_best[:, 0], z_best[:, 0]
    return s_best, z_best


# --------------------------------------------------------------------------------------------
# numba kernels (ndarrays + scalars in, ndarrays out)
# --------------------------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True)
def _group_minmax_kernel(w, group_cols):
    """Per-(row, group) min and max of a float32 (rows, cols) matrix (last group may be short)."""
    rows, cols = w.shape
    n_groups = (cols + group_cols - 1) // group_cols
    gmin = np.empty((rows, n_groups), dtype=np.float32)
    gmax = np.empty((rows, n_groups), dtype=np.float32)
    for r in numba.prange(rows):
        for g in range(n_groups):
            c0 = g * group_cols
            lo = w[r, c0]
            hi = w[r, c0]
            for c in range(c0 + 1, min(c0 + group_cols, cols)):
                v = w[r, c]
                if v < lo:
                    lo = v
                if v > hi:
                    hi = v
            gmin[r, g] = lo
            gmax[r, g] = hi
    return gmin, gmax


@numba.njit(parallel=True, cache=True)
def _mse_pick_kernel(x, scale, zero, group_cols, maxq, norm):
    """Index of the candidate (axis 0 of ``scale``/``zero``, (n_cand, rows, n_groups) float32)
    with the smallest ``sum |(q - zero) * scale - x| ** norm`` over each row's group."""
    n_cand, rows, n_groups = scale.shape
    cols = x.shape[1]
    best = np.zeros((rows, n_groups), dtype=np.int64)
    zero32 = np.float32(0.0)
    for r in numba.prange(rows):
        for g in range(n_groups):
            c0 = g * group_cols
            c1 = min(c0 + group_cols, cols)
            best_err = np.inf
            for k in range(n_cand):
                s = scale[k, r, g]
                z = zero[k, r, g]
                err = 0.0
                for c in range(c0, c1):
                    q = np.rint(x[r, c] / s) + z
                    if q < zero32:
                        q = zero32
                    elif q > maxq:
                        q = maxq
                    err += np.float64(abs((q - z) * s - x[r, c])) ** norm
                    if err >= best_err:  # the terms are >= 0: this range cannot win any more
                        break
                if err < best_err:
                    best_err = err
                    best[r, g] = k
    return best


@numba.njit(parallel=True, cache=True)
def _quantize_codes_kernel(w, scale, zero, group_cols, maxq):
    """Codes ``clamp(rint(w / scale) + zero, 0, maxq)`` as uint8 (rows, cols).

    ``scale`` float32 and ``zero`` uint8 are (rows, n_groups), already broadcast per row.
    """
    rows, cols = w.shape
    out = np.empty((rows, cols), dtype=np.uint8)
    for r in numba.prange(rows):
        for c in range(cols):
            g = c // group_cols
            q = np.rint(w[r, c] / scale[r, g]) + zero[r, g]
            if q < 0:
                q = 0
            elif q > maxq:
                q = maxq
            out[r, c] = np.uint8(q)
    return out


@numba.njit(parallel=True, cache=True)
def _pack_kernel(codes, bits):
    rows, cols = codes.shape
    nbytes = (cols * bits + 7) // 8
    out = np.zeros((rows, nbytes), dtype=np.uint8)
    mask = (1 << bits) - 1
    for r in numba.prange(rows):
        acc = 0
        nacc = 0
        pos = 0
        for c in range(cols):
            acc |= (np.int64(codes[r, c]) & mask) << nacc
            nacc += bits
            while nacc >= 8:
                out[r, pos] = acc & 0xFF
                acc >>= 8
                nacc -= 8
                pos += 1
        if nacc > 0:
            out[r, pos] = acc & 0xFF
    return out


@numba.njit(parallel=True, cache=True)
def _unpack_kernel(data, bits, cols):
    rows = data.shape[0]
    out = np.empty((rows, cols), dtype=np.uint8)
    mask = (1 << bits) - 1
    for r in numba.prange(rows):
        acc = 0
        nacc = 0
        pos = 0
        for c in range(cols):
            while nacc < bits:
                acc |= np.int64(data[r, pos]) << nacc
                nacc += 8
                pos += 1
            out[r, c] = acc & mask
            acc >>= bits
            nacc -= bits
    return out


@numba.njit(parallel=True, cache=True)
def _dequantize_kernel(data, scale, zero, group_cols, bits, cols):
    rows = data.shape[0]
    out = np.empty((rows, cols), dtype=np.float32)
    mask = (1 << bits) - 1
    for r in numba.prange(rows):
        acc = 0
        nacc = 0
        pos = 0
        for c in range(cols):
            while nacc < bits:
                acc |= np.int64(data[r, pos]) << nacc
                nacc += 8
                pos += 1
            q = acc & mask
            acc >>= bits
            nacc -= bits
            g = c // group_cols
            out[r, c] = np.float32(np.int64(q) - np.int64(zero[r, g])) * scale[r, g]
    return out


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _check_weight(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D (rows, cols), got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise ValueError(f"weight must be a float array, got dtype {w.dtype}")
    w = np.ascontiguousarray(w, dtype=np.float32)
    if not np.all(np.isfinite(w)):
        raise ValueError("weight contains inf or nan")
    return w


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ValueError(f"bits must be an int in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    return int(bits)


def expand_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """Broadcast a (1, n_groups) per-tensor parameter to (rows, n_groups), contiguous."""
    return np.ascontiguousarray(np.broadcast_to(a, (rows, a.shape[1])))


def group_params(w: np.ndarray, spec: IntSpec, *, mse: bool = False):
    """(float16 scales, uint8 zeros) of every group of ``w`` (rows, cols): shape (rows, n_groups),
    or (1, 1) per tensor. Min-max ranges, or the shrink search of :func:`grid_params_mse`."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    bits, sym = int(spec.bits), bool(spec.symmetric)
    if spec.granularity == "per_tensor":
        if mse:
            return grid_params_mse(w.reshape(1, -1), bits, sym, group_cols=w.size)
        return grid_params(w.min().reshape(1, 1), w.max().reshape(1, 1), bits, sym)
    gc = spec.group_cols(w.shape[1])
    if mse:
        return grid_params_mse(w, bits, sym, group_cols=gc)
    gmin, gmax = _group_minmax_kernel(w, gc)
    return grid_params(gmin, gmax, bits, sym)


def quantize_int(w: np.ndarray, spec: IntSpec, *, mse: bool = False) -> PackedInt:
    """Round-to-nearest quantization of a float32 (rows, cols) weight into packed storage.

    ``mse=True`` picks every group's range by the shrink search of :func:`grid_params_mse`
    (clipping outliers when that lowers the group's error) instead of plain min-max.
    """
    w = _check_weight(w)
    rows, cols = w.shape
    spec.validate()
    gc = spec.group_cols(cols)
    scale16, zero = group_params(w, spec, mse=mse)
    codes = _quantize_codes_kernel(
        w,
        expand_rows(scale16.astype(np.float32), rows),
        expand_rows(zero, rows),
        gc,
        spec.maxq,
    )
    data = _pack_kernel(codes, int(spec.bits))
    return PackedInt(
        spec=spec,
        shape=(rows, cols),
        data=data,
        scales=scale16,
        zeros=None if spec.symmetric else zero,
    )


def zeros_of(p: PackedInt) -> np.ndarray:
    """Zero points as uint8 with the shape of ``p.scales`` (implicit constant when symmetric)."""
    if p.zeros is not None:
        return p.zeros
    return np.full(p.scales.shape, symmetric_zero(int(p.spec.bits)), dtype=np.uint8)


def dequantize_int(p: PackedInt) -> np.ndarray:
    """Float32 (rows, cols) weight exactly as stored in ``p``."""
    rows, cols = p.shape
    gc = p.spec.group_cols(cols)
    return _dequantize_kernel(
        np.ascontiguousarray(p.data),
        expand_rows(p.scales.astype(np.float32), rows),
        expand_rows(zeros_of(p), rows),
        gc,
        int(p.spec.bits),
        cols,
    )


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack uint8 codes (rows, cols), each < 2**bits, into (rows, ceil(cols*bits/8)) bytes."""
    bits = _check_bits(bits)
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (rows, cols), got shape {codes.shape}")
    if codes.size and int(codes.max()) >= (1 << bits):
        raise ValueError(f"codes must be < 2**bits = {1 << bits}, got max {int(codes.max())}")
    return _pack_kernel(np.ascontiguousarray(codes, dtype=np.uint8), bits)


def unpack_codes(data: np.ndarray, bits: int, cols: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: uint8 (rows, cols) codes."""
    bits = _check_bits(bits)
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != bytes_per_row(cols, bits):
        raise ValueError(
            f"data must be (rows, {bytes_per_row(cols, bits)}) for cols={cols}, bits={bits}; "
            f"got {data.shape}"
        )
    return _unpack_kernel(data, bits, int(cols))


def packed_from_codes(
    codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, spec: IntSpec
) -> PackedInt:
    """Build a PackedInt from already chosen codes/scales/zeros (used by GPTQ)."""
    codes = np.asarray(codes, dtype=np.uint8)
    rows, cols = codes.shape
    spec.validate()
    ng = spec.n_groups(cols)
    srows = 1 if spec.granularity == "per_tensor" else rows
    scales = np.asarray(scales, dtype=np.float16)
    if scales.shape != (srows, ng):
        raise ValueError(f"scales must have shape {(srows, ng)}, got {scales.shape}")
    if spec.symmetric:
        zeros = None
    else:
        if zeros is None or np.shape(zeros) != (srows, ng):
            raise ValueError(f"asymmetric spec needs zeros of shape {(srows, ng)}")
        zeros = np.asarray(zeros, dtype=np.uint8)
    return PackedInt(spec, (rows, cols), pack_codes(codes, int(spec.bits)), scales, zeros)


__all__ = [
    "GRANULARITIES",
    "IntSpec",
    "PackedInt",
    "bytes_per_row",
    "dequantize_int",
    "fp16_ceil",
    "grid_params",
    "grid_params_mse",
    "group_params",
    "pack_codes",
    "packed_from_codes",
    "quantize_int",
    "unpack_codes",
    "zeros_of",
]
