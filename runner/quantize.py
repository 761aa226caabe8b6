"""Quantize a loaded model in place and measure what was stored.

Two kinds of levels:
* ``int``: integer grids (int8..int2) on every linear layer of the transformer blocks, packed by
  ``quant.intq`` (codes + fp16 scales + zero-points). Embeddings and the output head stay fp16.
* ``gguf``: a llama.cpp file type (q4_K_M, ...): every tensor gets the ggml type of llama.cpp's
  per-tensor plan (``quant.mixtures``), quantized by our byte-exact codecs (``quant.quantize``).

Either way the model's weights are replaced by the dequantized values (evaluation runs in torch),
and size is the sum of the bytes actually stored, tensor by tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from quant.intq import IntSpec, dequantize_int, quantize_int
from runner.config import ConfigError, QuantConfig

log = logging.getLogger(__name__)

FP16_BYTES = 2


@dataclass
class TensorReport:
    name: str
    shape: tuple[int, ...]
    qtype: str
    nbytes: int
    rel_error: float | None  # ||W - Wq||^2 / ||W||^2 (None when not quantized)


@dataclass
class QuantReport:
    tensors: list[TensorReport]
    n_params: int
    total_bytes: int
    plan_table: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bits_per_weight(self) -> float:
        """From the exported file when there is one, else from the stored tensors."""
        if "gguf_bits_per_weight" in self.extra:
            return self.extra["gguf_bits_per_weight"]
        return 8.0 * self.total_bytes / self.n_params

    @property
    def size_mb(self) -> float:
        return self.extra.get("gguf_file_bytes", self.total_bytes) / 1e6

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(t) for t in self.tensors]


def unique_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Named parameters, each storage once (tied embeddings count once)."""
    seen: set[int] = set()
    out = {}
    for name, p in model.named_parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        out[name] = p
    return out


def fp16_size_bytes(model: torch.nn.Module) -> int:
    """Size of the model stored entirely as fp16: the reference for compression ratios."""
    return FP16_BYTES * sum(p.numel() for p in unique_parameters(model).values())


def int_targets(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """Linear layers inside the transformer blocks (not the embeddings or the output head)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m is not head and "pooler" not in name
    }


def int_spec(q: QuantConfig) -> IntSpec:
    return IntSpec(
        bits=q.bits, granularity=q.granularity, group_size=q.group_size, symmetric=q.symmetric
    )


def check_int_shapes(model: torch.nn.Module, q: QuantConfig) -> None:
    """Fail before any work if ``quant.group_size`` does not divide every target row."""
    if q.kind != "int" or q.granularity != "per_group":
        return
    cols = sorted({m.in_features for m in int_targets(model).values()})
    bad = [c for c in cols if c % q.group_size]
    if bad:
        common = [g for g in (32, 64, 128, 256) if all(c % g == 0 for c in cols)]
        raise ConfigError(
            f"quant.group_size={q.group_size} does not divide the rows of this model "
            f"(row lengths {cols}); valid group sizes include {common or 'per_channel'}"
        )


def rel_error(w: np.ndarray, wq: np.ndarray) -> float:
    den = float(np.square(w, dtype=np.float64).sum())
    return float(np.square(w - wq, dtype=np.float64).sum() / den) if den else 0.0


LayerQuantizer = Callable[[str, np.ndarray], tuple[np.ndarray, int, str]]


def rtn_int_quantizer(spec: IntSpec) -> LayerQuantizer:
    def quantize(_name: str, w: np.ndarray) -> tuple[np.ndarray, int, str]:
        packed = quantize_int(w, spec)
        return dequantize_int(packed), packed.nbytes, f"int{spec.bits}"

    return quantize


def apply_to_linears(
    model: torch.nn.Module, quantize: LayerQuantizer, desc: str = "quantize"
) -> QuantReport:
    """Quantize every target linear with ``quantize``; other tensors are stored as fp16."""
    targets = int_targets(model)
    target_ids = {m.weight.data_ptr() for m in targets.values()}
    reports = []
    for name, m in tqdm(targets.items(), desc=desc, unit="layer"):
        w = m.weight.detach().float().numpy()
        wq, nbytes, qtype = quantize(name, w)
        reports.append(TensorReport(name, tuple(w.shape), qtype, nbytes, rel_error(w, wq)))
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(wq))
    params = unique_parameters(model)
    for name, p in params.items():
        if p.data_ptr() not in target_ids:
            reports.append(TensorReport(name, tuple(p.shape), "f16", FP16_BYTES * p.numel(), None))
    n_params = sum(p.numel() for p in params.values())
    return QuantReport(reports, n_params, sum(r.nbytes for r in reports))


def no_quantization(model: torch.nn.Module) -> QuantReport:
    params = unique_parameters(model)
    reports = [
        TensorReport(n, tuple(p.shape), "f16", FP16_BYTES * p.numel(), None)
        for n, p in params.items()
    ]
    return QuantReport(reports, sum(p.numel() for p in params.values()), fp16_size_bytes(model))


def apply_mixture(
    model: torch.nn.Module, tokenizer, ftype: str, export_path=None, model_name: str = ""
) -> QuantReport:
    """Quantize every tensor with llama.cpp's per-tensor plan for ``ftype``.

    With ``export_path`` the quantized model is also written as a GGUF file, and size and bits
    per weight are read back from that file.
    """
    from quant.gguf_export import (
        LlamaMeta,
        decode_tensor,
        encode_tensor,
        gguf_bits_per_weight,
        tokenizer_meta_from_hf,
        write_llama_gguf,
    )
    from quant.mixtures import format_plan, plan_mixture
    from quant.names import hf_to_gguf_name, hparams_from_hf_config, tensor_infos_from_hf

    config = model.config
    params = unique_parameters(model)
    infos = tensor_infos_from_hf(
        {n: p.shape for n, p in params.items()}, bool(config.tie_word_embeddings)
    )
    plan = plan_mixture(infos, ftype, hparams_from_hf_config(config))
    by_gguf = {hf_to_gguf_name(n): p for n, p in params.items()}
    encoded, reports = {}, []
    for entry in tqdm(plan, desc=f"quantize {ftype}", unit="tensor"):
        param = by_gguf[entry.name]
        w = param.detach().float().numpy()
        enc = encode_tensor(entry.name, w, entry.qtype)
        encoded[entry.name] = enc
        err = None
        if entry.quantized:
            wq = decode_tensor(enc)
            err = rel_error(w, wq)
            with torch.no_grad():
                param.copy_(torch.from_numpy(wq))
        reports.append(TensorReport(entry.name, entry.shape, entry.qtype, entry.bytes, err))
    n_params = sum(p.numel() for p in params.values())
    report = QuantReport(
        reports, n_params, sum(r.nbytes for r in reports), format_plan(plan, "markdown", ftype)
    )
    report.extra["plan"] = [
        {
            "tensor": e.name,
            "shape": list(e.shape),
            "type": e.qtype,
            "bytes": e.bytes,
            "rule": e.rule,
        }
        for e in plan
    ]
    if export_path is not None:
        meta = LlamaMeta.from_hf_config(config, name=model_name)
        file_bytes = write_llama_gguf(
            export_path, meta, tokenizer_meta_from_hf(tokenizer), encoded, ftype
        )
        report.extra.update(
            gguf_file=str(export_path),
            gguf_file_bytes=file_bytes,
            gguf_bits_per_weight=gguf_bits_per_weight(export_path),
        )
    return report
