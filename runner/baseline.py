"""The full-precision baseline: computed once per (model, eval data), cached by content hash.

A baseline directory holds the eval windows, the reference log-probs (uint16-coded, memory-mapped
so jobs stream them window by window), the per-token NLL and the baseline metrics. Several jobs
(or processes) asking for the same baseline at once are safe: one computes under a file lock and
renames a finished directory into place; the others wait and reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from tqdm.auto import tqdm

from metrics.kld import decode_logprobs, encode_logprobs
from metrics.perplexity import perplexity, token_nll

log = logging.getLogger(__name__)


@dataclass
class Baseline:
    path: Path
    windows: np.ndarray  # (n, seq_len) int64
    metrics: dict[str, float]

    def ref_logprobs(self, i: int) -> torch.Tensor:
        """Reference log-probs of window ``i`` (positions predicting tokens 1..T-1), (T-1, V)."""
        codes = np.load(self.path / "codes.npy", mmap_mode="r")[i]
        lo = np.load(self.path / "lo.npy", mmap_mode="r")[i]
        step = np.load(self.path / "step.npy", mmap_mode="r")[i]
        return decode_logprobs(np.array(codes), np.array(lo), np.array(step))


def baseline_key(model_hash: str, windows: np.ndarray) -> str:
    h = hashlib.sha256(model_hash.encode())
    h.update(np.ascontiguousarray(windows).tobytes())
    h.update(str(windows.shape).encode())
    return h.hexdigest()[:20]


@dataclass
class NLLTotal:
    """Token-weighted negative log-likelihood accumulated over windows."""

    nll_sum: float = 0.0
    n_tokens: int = 0

    def perplexity(self) -> float:
        return perplexity(self.nll_sum, self.n_tokens)


def forward_windows(model, windows: np.ndarray, batch_size: int, desc: str, total: NLLTotal):
    """Run ``model`` over the windows batch by batch, adding each batch's NLL to ``total``;
    yields (index of the batch's first window, logits)."""
    starts = range(0, len(windows), batch_size)
    for a in tqdm(starts, desc=desc, unit="batch"):
        ids = torch.from_numpy(windows[a : a + batch_size])
        with torch.inference_mode():
            logits = model(ids).logits
        nll = token_nll(logits, ids)
        total.nll_sum += float(nll.double().sum())
        total.n_tokens += nll.numel()
        yield a, logits


def _compute(model, windows: np.ndarray, batch_size: int, out: Path) -> dict[str, float]:
    n, t = windows.shape
    vocab = model.get_output_embeddings().weight.shape[0]
    codes = np.lib.format.open_memmap(out / "codes.npy", "w+", np.uint16, (n, t - 1, vocab))
    lo = np.zeros((n, t - 1), np.float32)
    step = np.zeros((n, t - 1), np.float32)
    total = NLLTotal()
    for a, logits in forward_windows(model, windows, batch_size, "baseline (fp)", total):
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        for j in range(len(logp)):
            codes[a + j], lo[a + j], step[a + j] = encode_logprobs(logp[j])
    codes.flush()
    np.save(out / "lo.npy", lo)
    np.save(out / "step.npy", step)
    return {"perplexity": total.perplexity(), "n_tokens": total.n_tokens}


def get_baseline(model, windows: np.ndarray, model_hash: str, cache: Path, batch_size: int):
    """Load the cached baseline for (model, windows), computing it once if missing."""
    key = baseline_key(model_hash, windows)
    target = cache / "baselines" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "baseline.json").exists():
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=key + ".tmp-"))
            try:
                np.save(tmp / "windows.npy", windows)
                metrics = _compute(model, windows, batch_size, tmp)
                (tmp / "baseline.json").write_text(json.dumps({"key": key, "metrics": metrics}))
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            log.info("reusing cached baseline %s", key)
    metrics = json.loads((target / "baseline.json").read_text())["metrics"]
    return Baseline(path=target, windows=np.load(target / "windows.npy"), metrics=metrics)


def cached_artifact(cache: Path, kind: str, key_parts: list[str], compute, save, load):
    """A full-precision artifact (e.g. reference embeddings), computed once per key.

    ``save(obj, path)`` writes a temporary file that is renamed into place under a file lock,
    so concurrent jobs compute it once and never read a partial file.
    """
    key = hashlib.sha256("\x00".join(key_parts).encode()).hexdigest()[:20]
    path = cache / "baselines" / f"{kind}-{key}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            obj = compute()
            tmp = path.with_name(path.name + ".tmp")
            save(obj, tmp)
            os.replace(tmp, path)
            return obj
    log.info("reusing cached %s baseline %s", kind, key)
    return load(path)
