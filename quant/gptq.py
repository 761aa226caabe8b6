"""GPTQ (Frantar et al. 2022) for one linear layer, in numpy + numba, on a plain CPU.

The algorithm reads like the paper / IST-DASLab ``gptq.py`` (QUANT-SPEC §5):

1. accumulate ``H = 2/N · Σ x xᵀ`` over the layer's calibration inputs (:class:`HessianAccumulator`);
2. zero dead input columns (``H[d, d] == 0``), optionally permute columns by descending
   ``diag(H)`` (act-order), dampen ``H += λ·mean(diag H)·I`` and take the upper Cholesky factor
   ``U`` of ``H⁻¹`` (:func:`inverse_cholesky_upper`, retrying with 10× more damping if ``H`` is not
   numerically positive definite);
3. quantize columns left to right; each column's error, divided by ``U[i, i]``, is propagated to the
   remaining columns of its 128-column block through row ``i`` of ``U`` (numba kernel, parallel
   over weight rows: every output row evolves independently), and to all later columns once per
   block with one GEMM (the "lazy batch" update).

The grid is pluggable (:class:`Grid`): :class:`IntGrid` uses the integer grid of
``quant.intq`` and returns the same :class:`~quant.intq.PackedInt` storage as RTN. A grid gives,
per group of columns and per row, an affine set of levels ``step · q − shift`` with
``q ∈ {0 … qmax}``; the parameters of a group are chosen from the *current* (error-updated)
weights when the group is entered, unless ``static_groups`` fixes them from the original weights.

Numerics: ``H`` accumulates in float64; damping, Cholesky and the inverse run in float64; the
column loop and the lazy updates run in float32 (as the float32 reference). Everything is
deterministic for a given input (no randomness; numba's row-parallel loop has no reductions
across rows except the loss, which is summed per row first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numba
import numpy as np

from quant.intq import (
    IntSpec,
    PackedInt,
    group_params,
    packed_from_codes,
    symmetric_zero,
)

# --------------------------------------------------------------------------------------------
# Hessian
# --------------------------------------------------------------------------------------------


class HessianAccumulator:
    """``H = 2/N · Σ_tokens x xᵀ`` with N the number of calibration *sequences* (QUANT-SPEC §5.1).

    The reference keeps a running average (``H *= n/(n+k); H += 2/(n+k) XXᵀ``); that equals the
    sum scaled once at the end, which is what this does: the per-batch product ``XᵀX`` is computed
    in float32 (BLAS) and summed in float64. The scale of H does not change the result of GPTQ
    (damping is relative); it only scales the reported loss.
    """

    def __init__(self, cols: int):
        self.cols = int(cols)
        self._sum = np.zeros((self.cols, self.cols), dtype=np.float64)
        self.n_sequences = 0
        self.n_tokens = 0

    def add_batch(self, x: np.ndarray, n_sequences: int | None = None) -> None:
        """Add inputs ``x`` of shape (..., cols); ``n_sequences`` defaults to ``x.shape[0]``
        for 3-D input (batch, seq, cols) and 1 otherwise."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.cols:
            raise ValueError(f"input has {x.shape[-1]} features, Hessian expects {self.cols}")
        if n_sequences is None:
            n_sequences = x.shape[0] if x.ndim == 3 else 1
        x2 = np.ascontiguousarray(x.reshape(-1, self.cols))
        self._sum += (x2.T @ x2).astype(np.float64)
        self.n_sequences += int(n_sequences)
        self.n_tokens += x2.shape[0]

    @property
    def H(self) -> np.ndarray:
        if self.n_sequences == 0:
            raise ValueError("no calibration batch was added to the Hessian")
        return self._sum * (2.0 / self.n_sequences)


# --------------------------------------------------------------------------------------------
# damping + inverse Cholesky
# --------------------------------------------------------------------------------------------


class DampingError(RuntimeError):
    pass


def _upper_chol_of_inverse(Hd: np.ndarray) -> np.ndarray | None:
    """Upper ``U`` with ``Hd⁻¹ = Uᵀ U`` (None if ``Hd`` is not positive definite).

    LAPACK potrf + potri + potrf (≈ 4/3 n³ flops) when scipy is installed, numpy otherwise.
    """
    try:
        from scipy.linalg import lapack
    except ImportError:  # pragma: no cover - scipy is in the gptq extra
        try:
            Linv = np.linalg.inv(np.linalg.cholesky(Hd))
            return np.linalg.cholesky(Linv.T @ Linv).T
        except np.linalg.LinAlgError:
            return None
    c, info = lapack.dpotrf(Hd, lower=False, clean=True)
    if info != 0:
        return None
    hinv, info = lapack.dpotri(c, lower=False)
    if info != 0:
        return None
    hinv = np.triu(hinv) + np.triu(hinv, 1).T  # potri fills the upper triangle only
    U, info = lapack.dpotrf(hinv, lower=False, clean=True)
    return U if info == 0 else None


def inverse_cholesky_upper(
    H: np.ndarray, damp_percent: float = 0.01, *, max_retries: int = 6, factor: float = 10.0
) -> tuple[np.ndarray, float, int]:
    """Upper factor ``U`` with ``H_damped⁻¹ = Uᵀ U``; returns (U, damp_percent_used, retries).

    ``H_damped = H + damp · mean(diag H) · I``. If a Cholesky factorisation fails (H not
    numerically positive definite) or produces non-finite values, the relative damping is
    multiplied by ``factor`` (starting from 1e-4 when ``damp_percent`` is 0) and retried up to
    ``max_retries`` times before :class:`DampingError`.
    """
    H = np.asarray(H, dtype=np.float64)
    n = H.shape[0]
    mean_diag = float(np.mean(np.diag(H)))
    if not np.isfinite(mean_diag) or mean_diag <= 0:
        raise DampingError(f"Hessian diagonal mean is {mean_diag}; cannot dampen")
    rel = float(damp_percent)
    eye = np.eye(n)
    for attempt in range(max_retries + 1):
        U = _upper_chol_of_inverse(H + (rel * mean_diag) * eye)
        if U is not None and np.all(np.isfinite(U)) and np.all(np.diag(U) > 0):
            return U, rel, attempt
        rel = rel * factor if rel > 0 else 1e-4
    raise DampingError(
        f"Hessian not positive definite even with damp_percent={rel / factor:g} "
        f"after {max_retries} retries"
    )


# --------------------------------------------------------------------------------------------
# grids
# --------------------------------------------------------------------------------------------


@dataclass
class GroupParams:
    """Levels ``step · q − shift``, ``q ∈ {0 … qmax}``, per row of one column group.

    ``step``/``shift`` are (rows,) when the whole group shares one level set, or (rows, k) when
    the group is split into ``k`` equal runs of columns with their own levels (ggml k-quant
    sub-blocks); a zero step means a single level ``-shift``."""

    step: np.ndarray  # float32 (rows,) or (rows, k), >= 0
    shift: np.ndarray  # float32, same shape
    qmax: int
    extra: object = None  # grid-specific (e.g. float16 scales + zeros for packing)


class Grid(Protocol):
    def group_cols(self, cols: int) -> int:
        """Columns per parameter group (``cols`` for one group per row)."""

    def param_cols(self, cols: int) -> int:
        """Columns sharing one (step, shift) inside a group (divides ``group_cols``)."""

    def params(self, w: np.ndarray) -> GroupParams:
        """Parameters for one group from its current weights ``w`` (rows, group_cols)."""

    def pack(self, codes: np.ndarray, params: list[GroupParams], cols: int) -> object:
        """Storage from codes (rows, cols) in original column order and per-group params."""


class IntGrid:
    """The integer grid of ``quant.intq`` (per_channel / per_group / per_tensor, sym / asym).

    With ``mse=True`` the range of every group is chosen by the shrink search of QUANT-SPEC §5.3
    (``grid_params_mse``) instead of plain min-max.
    """

    def __init__(self, spec: IntSpec, *, mse: bool = False):
        spec.validate()
        self.spec = spec
        self.mse = bool(mse)

    def group_cols(self, cols: int) -> int:
        return self.spec.group_cols(cols)

    def param_cols(self, cols: int) -> int:
        return self.spec.group_cols(cols)

    def params(self, w: np.ndarray) -> GroupParams:
        rows = w.shape[0]
        # w is one group of columns (or the whole matrix), so one (scale, zero) per row or tensor
        s16, z = group_params(w, self.spec, mse=self.mse)
        s16, z = s16.reshape(-1), z.reshape(-1)
        s = np.broadcast_to(s16.astype(np.float32), (rows,))
        zf = np.broadcast_to(z.astype(np.float32), (rows,))
        # step*q and step*zero are exact in float32 (fp16 scale × integer < 256), so
        # step*q - shift == (q - zero) * scale exactly, the value dequantize_int produces.
        return GroupParams(
            step=np.ascontiguousarray(s),
            shift=np.ascontiguousarray(s * zf),
            qmax=self.spec.maxq,
            extra=(s16.reshape(-1), z.reshape(-1)),
        )

    def pack(self, codes: np.ndarray, params: list[GroupParams], cols: int) -> PackedInt:
        scales = np.stack([p.extra[0] for p in params], axis=1).astype(np.float16)
        zeros = np.stack([p.extra[1] for p in params], axis=1).astype(np.uint8)
        if self.spec.symmetric:
            assert np.all(zeros == symmetric_zero(int(self.spec.bits)))
        return packed_from_codes(codes, scales, None if self.spec.symmetric else zeros, self.spec)


# --------------------------------------------------------------------------------------------
# the column loop (numba)
# --------------------------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True)
def _gptq_columns(W1, U1, a, b, step, shift, gidx, qmax, Q1, codes1, Err1, loss_rows):
    """Quantize columns ``a..b-1`` of the block ``W1`` (rows, n), updating columns ``> i`` of
    the block in place. ``step/shift`` are (rows, n_params) float32, ``gidx[i]`` the parameter
    column of block column ``i``. Writes dequantized values, codes, scaled errors and per-row losses."""
    rows, n = W1.shape
    zero32 = np.float32(0.0)
    qmax32 = np.float32(qmax)
    half = np.float32(0.5)
    for r in numba.prange(rows):
        acc = 0.0
        for i in range(a, b):
            g = gidx[i]
            st = step[r, g]
            sh = shift[r, g]
            w = W1[r, i]
            q = np.rint((w + sh) / st) if st != zero32 else zero32  # step 0: one level
            if q < zero32:
                q = zero32
            elif q > qmax32:
                q = qmax32
            xh = st * q - sh
            d = U1[i, i]
            e = (w - xh) / d
            Q1[r, i] = xh
            codes1[r, i] = np.uint8(q)
            Err1[r, i] = e
            acc += e * e * half
            for j in range(i + 1, n):
                W1[r, j] -= e * U1[i, j]
        loss_rows[r] += acc


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


@dataclass
class GPTQResult:
    Q: np.ndarray  # float32 (rows, cols) dequantized weights, original column order
    codes: np.ndarray  # uint8 (rows, cols) grid indices, original column order
    packed: object  # grid storage (PackedInt for IntGrid)
    damp_used: float  # relative damping actually used (fraction of mean diag H)
    n_damp_retries: int
    loss: float  # Σ (w - q)² / U_ii² / 2 (the GPTQ proxy loss, as in the reference)
    n_dead: int  # input columns with H_ii == 0 (weights set to 0)
    perm: np.ndarray | None  # act-order permutation (None without act-order)
    storage_deviation: float = 0.0  # max |dequantize(packed) - loop value| (0 for IntGrid)


def _check_block_size(block_size: int, gc: int, cols: int) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if block_size <= 0:
        raise ValueError(f"block_size must be a positive int, got {block_size}")
    if gc < cols and block_size % gc != 0 and gc % block_size != 0:
        raise ValueError(
            f"block_size={block_size} and the grid's group of {gc} columns must divide one "
            "another (so every group starts at a block start or inside one block)"
        )
    return int(block_size)


def gptq_quantize(
    W: np.ndarray,
    H: np.ndarray,
    grid: Grid,
    *,
    block_size: int = 128,
    damp_percent: float = 0.01,
    act_order: bool = False,
    static_groups: bool = False,
    max_damp_retries: int = 6,
) -> GPTQResult:
    """GPTQ-quantize ``W`` (rows=out_features, cols=in_features) with Hessian ``H`` (cols, cols).

    ``static_groups``: group parameters are computed once from the original weights (after dead
    columns are zeroed) instead of from the error-updated weights when a group is entered.
    ``act_order`` with more than one group per row requires ``static_groups`` (the storage keeps
    groups in original column order and has no per-column group index).
    """
    W = np.array(W, dtype=np.float32, copy=True)
    if W.ndim != 2:
        raise ValueError(f"W must be 2-D (rows, cols), got shape {W.shape}")
    rows, cols = W.shape
    H = np.array(H, dtype=np.float64, copy=True)
    if H.shape != (cols, cols):
        raise ValueError(f"H must be ({cols}, {cols}) for W of shape {W.shape}, got {H.shape}")
    if not (np.all(np.isfinite(W)) and np.all(np.isfinite(H))):
        raise ValueError("W or H contains inf/nan")
    if not 0 <= damp_percent < 1:
        raise ValueError(f"damp_percent must be in [0, 1), got {damp_percent}")
    gc = grid.group_cols(cols)
    n_groups = -(-cols // gc)  # the last group may be short (ragged integer groups)
    block_size = _check_block_size(block_size, gc, cols)
    if act_order and n_groups > 1 and not static_groups:
        raise ValueError(
            "act_order=True with per-group parameters needs static_groups=True "
            "(valid: act_order=False, or act_order=True with static_groups=True)"
        )

    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    params: list[GroupParams | None] = [None] * n_groups
    if static_groups or n_groups == 1:
        for g in range(n_groups):
            params[g] = grid.params(W[:, g * gc : (g + 1) * gc])

    perm = None
    if act_order:
        perm = np.argsort(-np.diag(H), kind="stable")
        W = np.ascontiguousarray(W[:, perm])
        H = H[perm][:, perm]

    U64, damp_used, retries = inverse_cholesky_upper(H, damp_percent, max_retries=max_damp_retries)
    U = np.ascontiguousarray(U64, dtype=np.float32)
    del H, U64

    # group of each (permuted) column position
    orig_col = perm if perm is not None else np.arange(cols)
    col_group = orig_col // gc
    pc = grid.param_cols(cols)
    if gc % pc != 0:
        raise ValueError(f"grid param_cols={pc} must divide group_cols={gc}")
    k = gc // pc
    col_param = orig_col // pc  # column of the (step, shift) tables used by each position
    step_tab = np.zeros((rows, n_groups * k), np.float32)
    shift_tab = np.zeros((rows, n_groups * k), np.float32)
    qmax = -1

    def _install(g: int) -> None:
        nonlocal qmax
        p = params[g]
        step_tab[:, g * k : (g + 1) * k] = np.asarray(p.step, np.float32).reshape(rows, k)
        shift_tab[:, g * k : (g + 1) * k] = np.asarray(p.shift, np.float32).reshape(rows, k)
        qmax = p.qmax if qmax < 0 else qmax

    for g in range(n_groups):
        if params[g] is not None:
            _install(g)

    Q = np.zeros((rows, cols), np.float32)
    codes = np.zeros((rows, cols), np.uint8)
    loss_rows = np.zeros(rows, np.float32)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        n = i2 - i1
        W1 = np.ascontiguousarray(W[:, i1:i2])
        U1 = np.ascontiguousarray(U[i1:i2, i1:i2])
        Q1 = np.zeros((rows, n), np.float32)
        C1 = np.zeros((rows, n), np.uint8)
        E1 = np.zeros((rows, n), np.float32)
        gidx = np.ascontiguousarray(col_param[i1:i2], dtype=np.int64)
        # split the block at dynamic group starts: a group's parameters come from the current
        # weights (intra-block updates included) when its first column is reached
        starts = [a for a in range(n) if params[col_group[i1 + a]] is None and (i1 + a) % gc == 0]
        cuts = sorted(set([0, *starts, n]))
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            g = col_group[i1 + a]
            if params[g] is None:
                width = min(gc, cols - (i1 + a))
                cur = (
                    W1[:, a : a + width]
                    if a + width <= n
                    else np.hstack([W1[:, a:], W[:, i2 : i1 + a + width]])
                )
                params[g] = grid.params(np.ascontiguousarray(cur))
                _install(g)
            _gptq_columns(W1, U1, a, b, step_tab, shift_tab, gidx, qmax, Q1, C1, E1, loss_rows)
        Q[:, i1:i2] = Q1
        codes[:, i1:i2] = C1
        if i2 < cols:
            W[:, i2:] -= E1 @ U[i1:i2, i2:]

    if perm is not None:
        inv = np.argsort(perm)
        Q = np.ascontiguousarray(Q[:, inv])
        codes = np.ascontiguousarray(codes[:, inv])
    packed = grid.pack(codes, params, cols)
    deviation = 0.0
    if hasattr(grid, "dequantize"):  # the storage defines Q (ggml grids: may differ by an ulp)
        stored = grid.dequantize(packed, (rows, cols))
        deviation = float(np.max(np.abs(stored - Q))) if Q.size else 0.0
        Q = stored
    return GPTQResult(
        Q=Q,
        codes=codes,
        packed=packed,
        damp_used=float(damp_used),
        n_damp_retries=int(retries),
        loss=float(np.sum(loss_rows, dtype=np.float64)),
        n_dead=int(dead.sum()),
        perm=perm,
        storage_deviation=deviation,
    )


def layer_output_error(W: np.ndarray, Wq: np.ndarray, H: np.ndarray) -> float:
    """Relative proxy output error ``sqrt(tr(D H Dᵀ) / tr(W H Wᵀ))``, ``D = W − Wq``.

    With ``H ∝ XXᵀ`` this is ``‖(W − Wq) X‖_F / ‖W X‖_F`` over the calibration inputs.
    """
    W = np.asarray(W, np.float64)
    D = W - np.asarray(Wq, np.float64)
    num = float(np.sum((D @ H) * D))
    den = float(np.sum((W @ H) * W))
    return float(np.sqrt(max(num, 0.0) / den)) if den > 0 else 0.0


__all__ = [
    "DampingError",
    "GPTQResult",
    "Grid",
    "GroupParams",
    "HessianAccumulator",
    "IntGrid",
    "gptq_quantize",
    "inverse_cholesky_upper",
    "layer_output_error",
]
