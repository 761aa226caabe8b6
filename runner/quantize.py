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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from quant.intq import IntSpec, dequantize_int, quantize_int
from runner.config import MethodConfig, QuantConfig

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


def rel_error(w: np.ndarray, wq: np.ndarray) -> float:
    den = float(np.square(w, dtype=np.float64).sum())
    return float(np.square(w - wq, dtype=np.float64).sum() / den) if den else 0.0


LayerQuantizer = Callable[[str, np.ndarray], tuple[np.ndarray, int, str]]


def rtn_int_quantizer(spec: IntSpec, *, mse: bool = False) -> LayerQuantizer:
    def quantize(_name: str, w: np.ndarray) -> tuple[np.ndarray, int, str]:
        packed = quantize_int(w, spec, mse=mse)
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


def mixture_plan(model: torch.nn.Module, ftype: str):
    """llama.cpp's per-tensor plan for ``ftype`` and the model's parameters by llama.cpp name."""
    from quant.mixtures import plan_mixture
    from quant.names import hf_to_gguf_name, hparams_from_hf_config, tensor_infos_from_hf

    params = unique_parameters(model)
    tied = bool(model.config.tie_word_embeddings)
    infos = tensor_infos_from_hf({n: p.shape for n, p in params.items()}, tied)
    plan = plan_mixture(infos, ftype, hparams_from_hf_config(model.config))
    return plan, {hf_to_gguf_name(n): p for n, p in params.items()}


def apply_mixture(
    loaded,
    ftype: str,
    export_path=None,
    precomputed: dict | None = None,
) -> QuantReport:
    """Quantize every tensor with llama.cpp's per-tensor plan for ``ftype``.

    ``precomputed`` maps llama.cpp names to ``(EncodedTensor, relative error)`` of tensors that
    are already quantized (by GPTQ) and whose dequantized values the model already holds; the
    rest is round-to-nearest.
    With ``export_path`` the quantized model is also written as a GGUF file, and size and bits
    per weight are read back from that file.
    """
    from quant.gguf_export import (
        LlamaMeta,
        decode_tensor,
        encode_tensor,
        gguf_bits_per_weight,
        tokenizer_meta_from_gguf,
        tokenizer_meta_from_hf,
        write_llama_gguf,
    )
    from quant.mixtures import format_plan

    model = loaded.model
    config = model.config
    plan, by_gguf = mixture_plan(model, ftype)
    precomputed = precomputed or {}
    encoded, reports = {}, []
    for entry in tqdm(plan, desc=f"quantize {ftype}", unit="tensor"):
        param = by_gguf[entry.name]
        w = param.detach().float().numpy()
        if entry.name in precomputed:
            enc, err = precomputed[entry.name]
        else:
            enc, err = encode_tensor(entry.name, w, entry.qtype), None
        encoded[entry.name] = enc
        if entry.name not in precomputed and entry.quantized:
            wq = decode_tensor(enc)
            err = rel_error(w, wq)
            with torch.no_grad():
                param.copy_(torch.from_numpy(wq))
        reports.append(TensorReport(entry.name, entry.shape, entry.qtype, entry.bytes, err))
    n_params = sum(p.numel() for p in by_gguf.values())
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
        meta = LlamaMeta.from_hf_config(config, name=loaded.name)
        # The source GGUF's tokenizer metadata is exact (pre-tokenizer name included).
        tok_meta = (
            tokenizer_meta_from_gguf(loaded.tokenizer_gguf)
            if loaded.tokenizer_gguf
            else tokenizer_meta_from_hf(loaded.tokenizer)
        )
        file_bytes = write_llama_gguf(export_path, meta, tok_meta, encoded, ftype)
        report.extra.update(
            gguf_file=str(export_path),
            gguf_file_bytes=file_bytes,
            gguf_bits_per_weight=gguf_bits_per_weight(export_path),
        )
    return report


def _weight_name(names: Sequence[str], module_name: str) -> str:
    """The parameter name of ``module_name``'s weight (module names may lack the wrapper)."""
    target = module_name + ".weight"
    for n in names:
        if n == target or n.endswith("." + target):
            return n
    raise KeyError(f"no parameter for module {module_name}")


@dataclass
class _GptqLayer:
    packed: Any  # PackedInt, or ggml block bytes
    shape: tuple[int, int]
    err: float  # rel_error of GPTQ's weights against the original ones
    damp_used: float
    damp_retries: int


def apply_gptq(loaded, quant: QuantConfig, method: MethodConfig, export_path=None) -> QuantReport:
    """GPTQ on every linear layer of the transformer blocks, calibrated layer by layer.

    Integer levels use the integer grid (same packed storage as RTN); llama.cpp levels use each
    tensor's planned ggml block type as the grid, and the tensors outside the blocks (embeddings,
    output head) are round-to-nearest with the same plan, as llama.cpp would store them.
    """
    from metrics.text import load_text
    from quant.gguf_export import EncodedTensor
    from quant.gptq import IntGrid, gptq_quantize
    from quant.gptq_ggml import GGML_GRID_TYPES, GgmlGrid
    from runner.calibration import calibration_batches, gptq_quantize_model

    model, tokenizer = loaded.model, loaded.tokenizer
    text = load_text("calibration", method.calib_files)
    calib = calibration_batches(
        tokenizer,
        text,
        method.n_samples,
        method.seq_len,
        method.seed,
        wrap_special_tokens=True,  # [CLS] ... [SEP] for encoders, BOS first for LMs (as in eval)
    )
    names = list(unique_parameters(model))
    if quant.kind == "gguf":
        plan, _ = mixture_plan(model, quant.ftype)
        from quant.names import hf_to_gguf_name

        planned = {e.name: e.qtype for e in plan}

        def grid_for(weight_name: str):
            qtype = planned[hf_to_gguf_name(weight_name)]
            return GgmlGrid(qtype) if qtype in GGML_GRID_TYPES else None
    else:
        int_grid = IntGrid(int_spec(quant), mse=method.mse)

        def grid_for(weight_name: str):
            return int_grid

    results: dict[str, Any] = {}

    def quantize_layer(module_name: str, w: np.ndarray, h: np.ndarray) -> np.ndarray | None:
        weight_name = _weight_name(names, module_name)
        grid = grid_for(weight_name)
        if grid is None:  # a planned type GPTQ has no grid for (f16/f32): left to the plan
            return None
        res = gptq_quantize(
            w,
            h,
            grid,
            block_size=method.block_size,
            damp_percent=method.damp_percent,
            act_order=method.act_order,
            static_groups=method.static_groups,
        )
        if res.n_damp_retries:
            log.warning(
                "%s: Hessian not positive definite; damping raised to %.3g after %d retries",
                module_name,
                res.damp_used,
                res.n_damp_retries,
            )
        # keep the storage, not the float weights (they are written back into the model)
        results[weight_name] = _GptqLayer(
            res.packed, res.Q.shape, rel_error(w, res.Q), res.damp_used, res.n_damp_retries
        )
        return res.Q

    gptq_quantize_model(model, calib, quantize_layer, true_sequential=method.true_sequential)
    extra = {
        "gptq": {
            "n_layers": len(results),
            "damp_retries": {n: r.damp_retries for n, r in results.items() if r.damp_retries},
            "max_damp_used": max((r.damp_used for r in results.values()), default=0.0),
            "calibration": {"n_samples": method.n_samples, "seq_len": method.seq_len},
        }
    }
    if quant.kind == "gguf":
        precomputed = {}
        for weight_name, r in results.items():
            gname = hf_to_gguf_name(weight_name)
            shape = tuple(reversed(r.shape))
            precomputed[gname] = (EncodedTensor(gname, planned[gname], shape, r.packed), r.err)
        report = apply_mixture(loaded, quant.ftype, export_path, precomputed=precomputed)
    else:

        def precomputed_int(name: str, w: np.ndarray) -> tuple[np.ndarray, int, str]:
            # w already holds GPTQ's weights; the error against the original was kept
            return w, results[_weight_name(names, name)].packed.nbytes, f"int{quant.bits}"

        report = apply_to_linears(model, precomputed_int, desc="store")
        for t in report.tensors:
            if t.rel_error is not None:
                t.rel_error = results[_weight_name(names, t.name)].err
    report.extra.update(extra)
    return report
