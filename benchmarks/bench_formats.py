"""Throughput of quant.formats codecs, with ratios against references measured in the same run.

For every type: first-call time (numba compile, or load from the on-disk cache), quantize
throughput in M weights/s at 1 thread and at all numba threads, dequantize throughput, and
ratios against

* gguf-py's numpy ``gguf.quants.quantize`` (for the types it implements), and
* llama.cpp's C reference ``quantize_row_<type>_ref`` (single thread) when
  ``QUANTLOOP_LIBGGML`` points to a libggml-base build (e.g. one compiled from ggml's sources).

Usage::

    python benchmarks/bench_formats.py [--types q4_K,q8_0] [--mweights 2] [--min-time 0.5]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import time
import warnings

import gguf
import numba
import numpy as np

from quant import QTYPES, dequantize, quantize


def _best_rate(fn, n_weights: int, min_time: float, clock=time.perf_counter) -> float:
    """Best-of-repeats throughput in M weights/s (repeats until min_time has elapsed).

    ``clock=time.process_time`` measures CPU time, which is what a single-threaded rate should
    be judged by on a machine shared with other jobs; multi-threaded rates use wall time.
    """
    best = float("inf")
    spent = 0.0
    reps = 0
    while spent < min_time or reps < 3:
        t0 = clock()
        fn()
        dt = clock() - t0
        best = min(best, dt)
        spent += dt
        reps += 1
    return n_weights / best / 1e6


def _c_quantizer(lib: ctypes.CDLL | None, qtype: str):
    if lib is None:
        return None
    fn = getattr(lib, f"quantize_row_{qtype}_ref", None)
    if fn is None:
        return None
    qt = QTYPES[qtype]

    def run(x: np.ndarray) -> np.ndarray:
        out = np.empty(x.size // qt.block_size * qt.type_size, np.uint8)
        fn(ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(out.ctypes.data), ctypes.c_int64(x.size))
        return out

    return run


def bench(types: list[str], mweights: float, min_time: float) -> list[dict]:
    lib_path = os.environ.get("QUANTLOOP_LIBGGML")
    lib = ctypes.CDLL(lib_path) if lib_path else None
    all_threads = numba.config.NUMBA_NUM_THREADS
    cols = 4096
    rows = max(1, int(mweights * 1e6) // cols)
    x = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    n = x.size
    results = []
    for name in types:
        qt = QTYPES[name]
        disp = qt.codec.quantize_blocks
        misses = disp.stats.cache_misses.copy() if hasattr(disp, "stats") else {}
        t0 = time.perf_counter()
        q = quantize(x[:1], name)
        first_q = time.perf_counter() - t0
        t0 = time.perf_counter()
        dequantize(q, name, (1, cols))
        first_dq = time.perf_counter() - t0
        compiled = disp.stats.cache_misses != misses if hasattr(disp, "stats") else None

        row = {"type": name, "first_call_s": first_q + first_dq, "compiled": compiled}

        def ours(name=name):
            return quantize(x, name)

        numba.set_num_threads(1)
        row["q_1t"] = _best_rate(ours, n, min_time, time.process_time)
        row["q_1t_wall"] = _best_rate(ours, n, min_time)
        numba.set_num_threads(all_threads)
        row["q_nt"] = _best_rate(ours, n, min_time)
        blob = quantize(x, name)
        row["dq_nt"] = _best_rate(lambda b=blob, t=name: dequantize(b, t, x.shape), n, min_time)

        gtype = qt.ggml_type
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gguf.quants.quantize(x[:1], gtype)
                row["gguf"] = _best_rate(
                    lambda t=gtype: gguf.quants.quantize(x, t), n, min_time, time.process_time
                )
        except NotImplementedError:
            row["gguf"] = None
        crun = _c_quantizer(lib, name)
        if crun is not None:
            assert np.array_equal(crun(x), blob.reshape(-1)), f"{name}: bytes differ from C"
            row["c_1t"] = _best_rate(lambda f=crun: f(x), n, min_time, time.process_time)
        else:
            row["c_1t"] = None
        results.append(row)
    return results


def _fmt(v: float | None, spec: str = "8.1f") -> str:
    return format(v, spec) if v is not None else " " * (int(spec.split(".")[0]) - 1) + "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--types", default=",".join(QTYPES), help="comma-separated qtypes")
    ap.add_argument("--mweights", type=float, default=4.0, help="matrix size in M weights")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    args = ap.parse_args()
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    for t in types:
        if t not in QTYPES:
            ap.error(f"unknown qtype {t!r}; valid: {', '.join(QTYPES)}")

    nt = numba.config.NUMBA_NUM_THREADS
    print(
        f"numba {numba.__version__} ({'threads'}={nt}), "
        f"{args.mweights:g} M weights N(0,1), rows of 4096; rates in M weights/s"
    )
    res = bench(types, args.mweights, args.min_time)
    head = (
        f"{'type':5} {'first call':>13} {'q 1 thr':>8} {'q 1 wall':>8} {'q ' + str(nt) + ' thr':>8} "
        f"{'scaling':>7} {'dq ' + str(nt) + ' thr':>9} {'gguf-py':>8} {'x gguf':>7} "
        f"{'C ref':>8} {'x C':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in res:
        first = f"{r['first_call_s']:.2f}s" + (
            " (jit)" if r["compiled"] else " (cache)" if r["compiled"] is False else ""
        )
        print(
            f"{r['type']:5} {first:>13} {r['q_1t']:8.1f} {r['q_1t_wall']:8.1f} {r['q_nt']:8.1f} "
            f"{r['q_nt'] / r['q_1t_wall']:6.2f}x {r['dq_nt']:9.1f} {_fmt(r['gguf'])} "
            f"{_fmt(r['q_1t'] / r['gguf'] if r['gguf'] else None, '7.1f')} "
            f"{_fmt(r['c_1t'])} {_fmt(r['q_1t'] / r['c_1t'] if r['c_1t'] else None, '6.2f')}"
        )
    print(
        "q 1 thr, gguf-py, C ref: CPU-time rates (robust on a shared machine); q 1 wall, "
        f"q {nt} thr, dq: wall-clock. scaling = q {nt} thr / q 1 wall; "
        "x gguf / x C = q 1 thr divided by the reference's rate."
    )


if __name__ == "__main__":
    main()
