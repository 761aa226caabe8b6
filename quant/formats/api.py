"""``quantize`` / ``dequantize``: validate inputs, then run one codec's numba kernels."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from quant.formats.registry import QType, check_cols, get_qtype


@njit(cache=True, parallel=True)
def _count_nonfinite(flat):
    n = flat.shape[0]
    nchunks = (n + 65535) // 65536
    bad = 0
    for c in prange(nchunks):
        cnt = 0
        for i in range(c * 65536, min(n, (c + 1) * 65536)):
            v = flat[i]
            # v - v is 0 for finite v and nan for inf/nan
            if (v - v) != (v - v):
                cnt += 1
        bad += cnt
    return bad


def _check_matrix(x: object, name: str = "x") -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy.ndarray of float32 with shape (rows, cols), "
            f"got {type(x).__name__}"
        )
    if x.dtype != np.float32:
        raise TypeError(
            f"{name} must have dtype float32, got {x.dtype}; convert with x.astype(np.float32)"
        )
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (rows, cols) with blocks along cols, got ndim={x.ndim} "
            f"shape={x.shape}; reshape first, e.g. x.reshape(-1, x.shape[-1])"
        )
    return x


def quantize(x: np.ndarray, qtype: str | QType) -> np.ndarray:
    """Quantize a float32 matrix row by row into ggml blocks.

    Args:
        x: float32 array of shape (rows, cols); blocks run along cols (ggml's ne[0]), so cols
            must be a multiple of the format's block size (32, or 256 for the K-quants).
        qtype: ggml format name, one of ``QTYPES`` (q8_0 q4_0 q4_1 q5_0 q5_1 q2_K ... q6_K).

    Returns:
        uint8 array of shape (rows, row_bytes(qtype, cols)), byte-identical to llama.cpp's
        reference quantizer (``ggml_quantize_chunk`` without an importance matrix).

    Raises:
        TypeError: x is not a float32 ndarray, or qtype is not a string.
        ValueError: x is not 2-D, cols is not a multiple of the block size, x holds NaN/Inf,
            or qtype is unknown.
    """
    qt = get_qtype(qtype)
    x = _check_matrix(x)
    rows, cols = x.shape
    check_cols(qt, cols)
    x = np.ascontiguousarray(x)
    nonfinite = _count_nonfinite(x.reshape(-1)) if x.size else 0
    if nonfinite:
        flat = int(np.flatnonzero(~np.isfinite(x.reshape(-1)))[0])
        raise ValueError(
            f"x contains {nonfinite} non-finite value(s) (NaN or Inf), first at "
            f"[{flat // cols}, {flat % cols}] = {x.reshape(-1)[flat]}; quantization needs finite "
            f"input"
        )
    out = np.empty((rows, qt.row_bytes(cols)), dtype=np.uint8)
    if rows:
        qt.codec.quantize_blocks(x.reshape(-1, qt.block_size), out.reshape(-1, qt.type_size))
    return out


def dequantize(blob: np.ndarray, qtype: str | QType, shape: tuple[int, int]) -> np.ndarray:
    """Decode ggml blocks back to float32.

    Args:
        blob: uint8 array holding rows * row_bytes(qtype, cols) bytes, either shaped
            (rows, row_bytes) as returned by ``quantize`` or flat.
        qtype: ggml format name, one of ``QTYPES``.
        shape: (rows, cols) of the original matrix.

    Returns:
        float32 array of shape (rows, cols), bit-identical to ggml's ``dequantize_row_*``.
    """
    qt = get_qtype(qtype)
    if not isinstance(blob, np.ndarray):
        raise TypeError(f"blob must be a numpy.ndarray of uint8, got {type(blob).__name__}")
    if blob.dtype != np.uint8:
        raise TypeError(
            f"blob must have dtype uint8, got {blob.dtype}; use blob.view(np.uint8) for raw bytes"
        )
    try:
        rows, cols = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (rows, cols), got {shape!r}") from None
    if rows < 0:
        raise ValueError(f"shape rows must be >= 0, got {rows}")
    check_cols(qt, cols)
    nbytes = qt.row_bytes(cols)
    if blob.size != rows * nbytes:
        raise ValueError(
            f"blob has {blob.size} bytes but {qt.name} shape ({rows}, {cols}) needs "
            f"{rows} x {nbytes} = {rows * nbytes} bytes"
        )
    if blob.ndim == 2 and blob.shape != (rows, nbytes):
        raise ValueError(
            f"blob shape {blob.shape} does not match ({rows}, {nbytes}) for {qt.name} "
            f"shape ({rows}, {cols}); pass it flat or as (rows, row_bytes)"
        )
    if blob.ndim not in (1, 2):
        raise ValueError(f"blob must be 1-D or 2-D, got ndim={blob.ndim}")
    blob = np.ascontiguousarray(blob)
    out = np.empty((rows, cols), dtype=np.float32)
    if rows:
        qt.codec.dequantize_blocks(blob.reshape(-1, qt.type_size), out.reshape(-1, qt.block_size))
    return out
