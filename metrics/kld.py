"""KL divergence and top-1 agreement against the full-precision model, streamed per window.

The reference log-probabilities are stored once per (model, eval data) in a compact form (uint16
codes with a per-token offset and step, the same idea as llama.cpp's ``--kl-divergence-base``
file), so a job never holds all logits in memory: it decodes one window of reference, compares it
with its own logits and keeps only per-token scalars.

``KLD(P || Q) = sum_v P(v) * (log P(v) - log Q(v))`` per token, P = full precision, in nats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

_LEVELS = 65535.0


def encode_logprobs(logp: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, V) float log-probs -> uint16 codes (T, V), offsets (T,), steps (T,) (float32)."""
    logp = logp.float()
    lo = logp.min(dim=-1).values
    hi = logp.max(dim=-1).values
    step = torch.clamp((hi - lo) / _LEVELS, min=1e-12)
    codes = torch.round((logp - lo[:, None]) / step[:, None]).clamp_(0, _LEVELS)
    return (
        codes.to(torch.int32).numpy().astype(np.uint16),
        lo.numpy().astype(np.float32),
        step.numpy().astype(np.float32),
    )


def decode_logprobs(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> torch.Tensor:
    """Inverse of :func:`encode_logprobs`, renormalised so each row is a distribution."""
    x = torch.from_numpy(codes.astype(np.float32)) * torch.from_numpy(step)[:, None]
    x += torch.from_numpy(lo)[:, None]
    return torch.log_softmax(x, dim=-1)


def token_kld(ref_logp: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token KL(ref || model) and whether the argmax tokens agree; both shape (T,)."""
    logq = torch.log_softmax(logits.float(), dim=-1)
    kld = (ref_logp.exp() * (ref_logp - logq)).sum(-1).clamp_(min=0.0)
    agree = ref_logp.argmax(-1) == logq.argmax(-1)
    return kld, agree


@dataclass
class KLDStats:
    """Accumulates per-token values across windows; :meth:`summary` gives the reported metrics."""

    klds: list[np.ndarray] = field(default_factory=list)
    agrees: list[np.ndarray] = field(default_factory=list)

    def add(self, kld: torch.Tensor, agree: torch.Tensor) -> None:
        self.klds.append(kld.double().numpy())
        self.agrees.append(agree.numpy())

    def summary(self) -> dict[str, float]:
        if not self.klds:
            raise ValueError("no tokens were compared")
        k = np.concatenate(self.klds)
        a = np.concatenate(self.agrees)
        return {
            "kld_mean": float(k.mean()),
            "kld_median": float(np.median(k)),
            "kld_p99": float(np.percentile(k, 99)),
            "kld_max": float(k.max()),
            "top1_agreement": float(100.0 * a.mean()),
        }
