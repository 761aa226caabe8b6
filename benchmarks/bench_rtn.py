"""Throughput of the numba RTN kernel (quant/intq.py) vs a plain-numpy reference, same run.

Prints, per matrix shape and spec, the first-call time (includes JIT compile or cache load),
the steady-state time of both implementations and their ratio, at 1 thread and at all threads;
then the same for the MSE range search (``quantize_int(..., mse=True)``: 80 shrunken ranges per
group, error |w - q|^2.4) against numpy that evaluates every candidate for all groups at once.

    python benchmarks/bench_rtn.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from quant.intq import IntSpec, fp16_ceil, grid_params, grid_params_mse, quantize_int

SHAPES = [(2048, 2048), (576, 1536)]
SPECS = [
    IntSpec(4, "per_group", 128, symmetric=True),
    IntSpec(3, "per_group", 128, symmetric=False),
    IntSpec(8, "per_channel", symmetric=True),
]


def numpy_reference(w: np.ndarray, spec: IntSpec):
    """Vectorised numpy RTN with the same grid and bit-packing (codes, scales, zeros, bytes)."""
    rows, cols = w.shape
    maxq = 2**spec.bits - 1
    gc = spec.group_size if spec.granularity == "per_group" else cols
    g = w.reshape(1, 1, -1) if spec.granularity == "per_tensor" else w.reshape(rows, -1, gc)
    xmin = np.minimum(g.min(axis=2), 0)
    xmax = np.maximum(g.max(axis=2), 0)
    if spec.symmetric:
        xmax = np.maximum(-xmin, xmax)
        xmin = -xmax
    dead = (xmin == 0) & (xmax == 0)
    xmin = np.where(dead, np.float32(-1), xmin)
    xmax = np.where(dead, np.float32(1), xmax)
    s16 = fp16_ceil((xmax - xmin) / np.float32(maxq))
    s = s16.astype(np.float32)
    if spec.symmetric:
        zero = np.full(s.shape, (maxq + 1) // 2, np.float32)
    else:
        zero = np.clip(np.rint(-xmin / s), 0, maxq)
    codes = np.clip(np.rint(g / s[..., None]) + zero[..., None], 0, maxq).astype(np.uint8)
    codes = codes.reshape(rows, cols)
    bits = np.unpackbits(codes[..., None], axis=-1, bitorder="little")[..., : spec.bits]
    stream = bits.reshape(rows, -1)
    stream = np.pad(stream, ((0, 0), (0, (-stream.shape[1]) % 8)))
    return np.packbits(stream, axis=-1, bitorder="little"), s16, zero.astype(np.uint8)


def numpy_mse_reference(w: np.ndarray, bits: int, sym: bool, gc: int, norm: float = 2.4):
    """Shrink search vectorised over rows and groups (groups must divide the row here)."""
    rows, cols = w.shape
    g = w.reshape(rows, cols // gc, gc)
    xmin, xmax = g.min(axis=2), g.max(axis=2)
    best_err = np.full(xmin.shape, np.inf)
    best_s, best_z = grid_params(xmin, xmax, bits, sym)
    for i in range(80):
        p = np.float32(1 - i / 100)
        s16, z = grid_params(p * np.minimum(xmin, 0), p * np.maximum(xmax, 0), bits, sym)
        s, zf = s16.astype(np.float32)[..., None], z.astype(np.float32)[..., None]
        q = np.clip(np.rint(g / s) + zf, 0, 2**bits - 1)
        err = np.sum(np.abs((q - zf) * s - g).astype(np.float64) ** norm, axis=2)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s, best_z = np.where(better, s16, best_s), np.where(better, z, best_z)
    return best_s, best_z


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    all_threads = numba.config.NUMBA_NUM_THREADS

    t0 = time.perf_counter()
    quantize_int(rng.standard_normal((8, 256)).astype(np.float32), SPECS[0])
    print(f"first call (JIT compile or cache load): {time.perf_counter() - t0:.3f} s")

    print(f"{'shape':>11} {'spec':>22} {'thr':>3} {'numba ms':>9} {'numpy ms':>9} {'ratio':>6}")
    for shape in SHAPES:
        w = (rng.standard_t(4, size=shape) * 0.02).astype(np.float32)
        for spec in SPECS:
            p = quantize_int(w, spec)
            ref_data, ref_s, _ = numpy_reference(w, spec)
            assert np.array_equal(p.data, ref_data) and np.array_equal(p.scales, ref_s)
            t_np = _best(lambda w=w, spec=spec: numpy_reference(w, spec), args.repeat)
            label = f"{spec.bits}b {spec.granularity[4:]} {'sym' if spec.symmetric else 'asym'}"
            for threads in sorted({1, all_threads}):
                numba.set_num_threads(threads)
                t_nb = _best(lambda w=w, spec=spec: quantize_int(w, spec), args.repeat)
                print(
                    f"{shape[0]:>5}x{shape[1]:<5} {label:>22} {threads:>3} "
                    f"{t_nb * 1e3:>9.2f} {t_np * 1e3:>9.2f} {t_np / t_nb:>5.1f}x"
                )
            numba.set_num_threads(all_threads)

    print("\nMSE range search (4-bit asym, group 128)")
    print(f"{'shape':>11} {'thr':>3} {'numba ms':>9} {'numpy ms':>9} {'ratio':>6}")
    for shape in SHAPES:
        w = (rng.standard_t(4, size=shape) * 0.02).astype(np.float32)
        ref = numpy_mse_reference(w, 4, False, 128)
        got = grid_params_mse(w, 4, False, group_cols=128)
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])
        t_np = _best(lambda w=w: numpy_mse_reference(w, 4, False, 128), 1)
        for threads in sorted({1, all_threads}):
            numba.set_num_threads(threads)
            t_nb = _best(lambda w=w: grid_params_mse(w, 4, False, group_cols=128), args.repeat)
            print(
                f"{shape[0]:>5}x{shape[1]:<5} {threads:>3} "
                f"{t_nb * 1e3:>9.1f} {t_np * 1e3:>9.1f} {t_np / t_nb:>5.1f}x"
            )
        numba.set_num_threads(all_threads)


if __name__ == "__main__":
    main()
