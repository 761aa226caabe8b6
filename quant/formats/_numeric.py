"""Scalar building blocks shared by every codec: bit casts, fp16, the three rounding rules.

Everything here is float32-exact with ggml's C reference (QUANT-SPEC §1.2-§1.4):

* numba cannot handle float16, so fp32 <-> fp16 is done on the IEEE bit patterns;
* ``nearest_int`` reproduces ggml's "add 1.5 * 2**23 and read the mantissa" trick bit for bit,
  including its behaviour outside the range where it equals round-half-to-even;
* ``c_roundf`` is C's ``roundf`` (half away from zero), used only by q8_0;
* the 32-blocks q4_0/q4_1/q5_0/q5_1 truncate after adding a float32 offset (``c_to_int8``).

Float32 discipline: numba promotes ``float32 * int`` and ``float32 * <python float>`` to float64.
All constants are therefore ``np.float32`` values and integer codes are cast with ``np.float32``
before they touch a float.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

F0 = np.float32(0.0)
F1 = np.float32(1.0)
FLT_MAX = np.float32(3.4028234663852886e38)
# 1.5 * 2**23: adding it to a float32 of magnitude <= 2**22 leaves round-half-even(f) in the
# low mantissa bits.
_NINT_MAGIC = np.float32(12582912.0)
# ggml's GROUP_MAX_EPS: sub-blocks whose largest |x| is below this are treated as all zero.
GROUP_MAX_EPS = np.float32(1e-15)
_TWO23 = np.float32(8388608.0)


@intrinsic
def f32_to_bits(typingctx, x):
    """Reinterpret a float32 as its uint32 bit pattern (no conversion)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def bits_to_f32(typingctx, b):
    """Reinterpret a uint32 bit pattern as a float32."""
    if b != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@njit(cache=True)
def nearest_int(f):
    """ggml ``nearest_int``: round-half-even of a float32 (exact C bit trick), as int64."""
    val = f + _NINT_MAGIC
    i = np.int64(f32_to_bits(val))
    return (i & 0x007FFFFF) - 0x00400000


@njit(cache=True)
def round_half_even_small(f):
    """``float32(nearest_int(f))`` computed in float32; exact only for ``|f| <= 2**22``.

    Adding 1.5 * 2**23 rounds to an integer (ties to even) and subtracting it back is exact.
    Avoiding the int round trip lets LLVM vectorise the scale-search loops.
    """
    return (f + _NINT_MAGIC) - _NINT_MAGIC


@njit(cache=True)
def c_roundf(f):
    """C ``roundf`` (half away from zero) of a float32, returned as float32.

    ``a - trunc(a)`` is exact in float32 for 0 <= a < 2**23, so the >= 0.5 test decides ties
    exactly; larger magnitudes (and inf/nan) are already integral and returned unchanged.
    """
    a = abs(f)
    if not a < _TWO23:
        return f
    t = np.float32(np.int64(a))
    if a - t >= np.float32(0.5):
        t += F1
    return -t if f < F0 else t


@njit(cache=True)
def c_to_int8(f):
    """C ``(int8_t)f`` as compiled for x86-64 (truncate, keep the low byte, sign-extended).

    Inside the codecs' valid range this is plain truncation toward zero; for inf/nan (which only
    arise from a subnormal block scale) x86 yields 0, and so does this.
    """
    t = np.int64(f)
    return ((t & 0xFF) ^ 0x80) - 0x80


@njit(cache=True)
def c_to_uint8(f):
    """C ``(uint8_t)f`` as compiled for x86-64 (truncate, keep the low byte)."""
    return np.int64(f) & 0xFF


@njit(cache=True)
def fp32_to_fp16(f):
    """IEEE binary16 bits (0..65535) of a float32 with round-to-nearest-even (ggml semantics)."""
    bits = np.int64(f32_to_bits(f))
    sign = (bits >> 16) & 0x8000
    e = bits & 0x7F800000
    if e >= 0x47800000:
        # |f| >= 65536, inf or nan
        if (bits & 0x7FFFFFFF) > 0x7F800000:
            return sign | 0x7E00
        return sign | 0x7C00
    if e <= 0x38000000:
        # result is a subnormal half or zero
        if e < 0x33000000:
            return sign
        ex = e >> 23
        sig = 0x800000 + (bits & 0x7FFFFF)
        sig >>= 113 - ex
        if (sig & 0x3FFF) != 0x1000 or (bits & 0x7FF) != 0:
            sig += 0x1000
        return sign + (sig >> 13)
    hexp = (e - 0x38000000) >> 13
    sig = bits & 0x7FFFFF
    if (sig & 0x3FFF) != 0x1000:
        sig += 0x1000
    # a carry out of the mantissa correctly bumps the exponent (up to inf)
    return sign + ((sig >> 13) + hexp)


@njit(cache=True)
def fp16_to_fp32(h):
    """Exact float32 value of IEEE binary16 bits ``h`` (an integer 0..65535)."""
    h = np.int64(h)
    sign = (h & 0x8000) << 16
    e5 = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e5 == 0:
        # zero or subnormal: m * 2**-24 is exact in float32
        v = np.float32(m) * np.float32(5.9604644775390625e-08)
        return -v if sign else v
    if e5 == 31:
        return bits_to_f32(np.uint32(sign | 0x7F800000 | (m << 13)))
    return bits_to_f32(np.uint32(sign | ((e5 + 112) << 23) | (m << 13)))


@njit(cache=True)
def store_fp16(out, pos, f):
    """Round float32 ``f`` to fp16 and write it little-endian at ``out[pos:pos+2]``.

    Returns the float32 value of the stored half (what the K-quants re-read).
    """
    h = fp32_to_fp16(f)
    out[pos] = np.uint8(h & 0xFF)
    out[pos + 1] = np.uint8(h >> 8)
    return fp16_to_fp32(h)


@njit(cache=True)
def load_fp16(blk, pos):
    """Read the little-endian fp16 at ``blk[pos:pos+2]`` as float32."""
    return fp16_to_fp32(np.int64(blk[pos]) | (np.int64(blk[pos + 1]) << 8))
