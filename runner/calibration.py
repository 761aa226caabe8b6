"""Sequential layer-by-layer GPTQ calibration of a transformers model (QUANT-SPEC §5.5).

The driver knows torch/transformers but no Hydra/W&B. It only moves activations; the numerics
live in ``quant.gptq`` and reach this module through the ``quantize_layer`` callback:

1. run the calibration ids through the model until the first transformer block and keep that
   block's inputs (hidden states, plus the attention mask / rotary position embeddings / other
   keyword arguments the model passes to each block);
2. for every block in order: group its ``nn.Linear`` modules by the input tensor they read
   (q/k/v, gate/up: one Hessian per group), and, stage by stage in forward order ("true
   sequential"), run the calibration batches through the block up to that stage with hooks that
   accumulate its Hessian, then quantize its linears (the dequantized weights are written back in
   place) so later stages see their outputs; finally run the whole block again so that the next
   block is calibrated on the outputs of the *quantized* block.

Memory: one block's input and output activations (``n_samples × seq_len × hidden`` floats each)
plus one Hessian per input group of the current block; the model itself is never copied.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from quant.gptq import HessianAccumulator, layer_output_error

QuantizeLayer = Callable[[str, np.ndarray, np.ndarray], "np.ndarray | None"]

# attribute paths of the repeated transformer blocks, tried in order
_BLOCK_PATHS = (
    "model.layers",  # Llama, Qwen2, Mistral, Gemma (CausalLM wrapper)
    "layers",  # LlamaModel itself
    "model.decoder.layers",  # OPT
    "decoder.layers",
    "transformer.h",  # GPT-2 family
    "encoder.layer",  # BERT / MiniLM (BertModel)
    "bert.encoder.layer",
)


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, int]  # (out_features, in_features)
    n_sequences: int
    n_tokens: int
    seconds: float
    weight_rel_err: float  # ‖W − Wq‖_F / ‖W‖_F
    output_rel_err: float  # ‖(W − Wq) X‖_F / ‖W X‖_F on the calibration inputs


class _StopForward(Exception):
    pass


def unwrap_model(model: nn.Module) -> nn.Module:
    """The transformers module inside a sentence-transformers model (else the model itself)."""
    if hasattr(model, "_first_module"):
        first = model._first_module()
        return getattr(first, "auto_model", first)
    return model


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(attribute path, ModuleList) of the model's repeated transformer blocks."""
    for path in _BLOCK_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return path, obj
    raise ValueError(
        f"cannot find the transformer blocks of {type(model).__name__}; "
        f"looked for {', '.join(_BLOCK_PATHS)}"
    )


def calibration_batches(
    tokenizer,
    texts: str | Sequence[str],
    n_samples: int,
    seq_len: int,
    seed: int = 0,
    *,
    wrap_special_tokens: bool = False,
) -> torch.LongTensor:
    """``n_samples`` random token windows of length ``seq_len`` from ``texts`` (joined by blank
    lines and tokenized once), window starts drawn with ``random.Random(seed)`` as in the GPTQ
    reference. ``wrap_special_tokens`` adds the tokenizer's special tokens (e.g. BERT's [CLS] …
    [SEP]) around each window, keeping the total length ``seq_len``."""
    if n_samples <= 0 or seq_len <= 1:
        raise ValueError(f"n_samples must be > 0 and seq_len > 1, got {n_samples}, {seq_len}")
    text = texts if isinstance(texts, str) else "\n\n".join(texts)
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    prefix, suffix = _special_tokens(tokenizer) if wrap_special_tokens else ([], [])
    body = seq_len - len(prefix) - len(suffix)
    if len(ids) < body + 2:
        raise ValueError(
            f"calibration text has {len(ids)} tokens, need more than seq_len={seq_len}; "
            "pass more text or lower seq_len"
        )
    rng = random.Random(seed)
    rows = []
    for _ in range(n_samples):
        i = rng.randint(0, len(ids) - body - 1)
        rows.append(prefix + ids[i : i + body] + suffix)
    return torch.tensor(rows, dtype=torch.long)


def _special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """([CLS], [SEP]) for BERT-style tokenizers, ([BOS], []) otherwise, or nothing."""
    cls, sep = getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "sep_token_id", None)
    if cls is not None and sep is not None:
        return [cls], [sep]
    bos = getattr(tokenizer, "bos_token_id", None)
    return ([bos] if bos is not None else []), []


def _call_kwargs(model: nn.Module) -> dict:
    params = inspect.signature(model.forward).parameters
    return {"use_cache": False} if "use_cache" in params else {}


@torch.no_grad()
def _capture_block_inputs(model, blocks, calib_ids, batch_size):
    """Inputs of block 0 for every calibration batch: list of (hidden, args, kwargs)."""
    captured = []

    def hook(_module, args, kwargs):
        captured.append((args[0], tuple(args[1:]), dict(kwargs)))
        raise _StopForward

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    extra = _call_kwargs(model)
    try:
        for start in range(0, calib_ids.shape[0], batch_size):
            ids = calib_ids[start : start + batch_size]
            with contextlib.suppress(_StopForward):
                model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra)
    finally:
        handle.remove()
    if len(captured) != -(-calib_ids.shape[0] // batch_size):
        raise RuntimeError("failed to capture the inputs of the first transformer block")
    return captured


def _run_block(block, hidden, args, kwargs):
    out = block(hidden, *args, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def gptq_quantize_model(
    model: nn.Module,
    calib_ids: torch.LongTensor,
    quantize_layer: QuantizeLayer,
    progress: bool = True,
    *,
    batch_size: int = 8,
    true_sequential: bool = True,
) -> dict[str, LayerReport]:
    """Quantize every ``nn.Linear`` inside the transformer blocks of ``model`` in place.

    ``quantize_layer(name, W, H)`` receives the full module name, the float32 weight
    (out_features, in_features) and the float64 Hessian (in_features, in_features) of that
    linear's calibration inputs, and returns the dequantized float32 weight to write back (or
    None to leave the layer unchanged). Embeddings, final norm and the LM head are not touched.

    Linears that read the same input tensor (q/k/v, gate/up) form one *stage* and share one
    Hessian. With ``true_sequential`` the stages of a block are quantized in the order the
    forward pass reaches them, each calibrated on the outputs of the already-quantized stages
    before it (q/k/v, then o, then gate/up, then down); otherwise every stage's Hessian comes
    from one pass over the unquantized block.
    """
    if calib_ids.ndim != 2:
        raise ValueError(f"calib_ids must be (n_samples, seq_len), got {tuple(calib_ids.shape)}")
    inner = unwrap_model(model)
    path, blocks = find_blocks(inner)
    was_training = inner.training
    inner.eval()
    reports: dict[str, LayerReport] = {}
    try:
        cache = _capture_block_inputs(inner, blocks, calib_ids, batch_size)
        hidden = [c[0] for c in cache]
        bar = tqdm(blocks, desc="GPTQ layers", disable=not progress, unit="layer")
        for i, block in enumerate(bar):
            calib = _BlockCalibration(block, hidden, cache)
            stages = calib.stages()
            for groups in [[st] for st in stages] if true_sequential else [stages]:
                hessians = calib.hessians(groups, early_stop=true_sequential)
                reports.update(
                    _quantize_linears(calib.linears, hessians, f"{path}.{i}", quantize_layer)
                )
            # outputs of the quantized block are the next block's inputs
            hidden = [_run_block(block, h, c[1], c[2]) for h, c in zip(hidden, cache, strict=True)]
            worst = max(r.output_rel_err for r in reports.values())
            bar.set_postfix(max_out_err=f"{worst:.4f}")
    finally:
        inner.train(was_training)
    return reports


class _BlockCalibration:
    """Hessians of one block's linears over the calibration batches, one per distinct input."""

    def __init__(self, block: nn.Module, hidden: list, cache: list):
        self.block, self.hidden, self.cache = block, hidden, cache
        self.linears = {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}

    def _run(self, hooks: dict[str, Callable], stop_after: str | None, n_batches=None) -> None:
        """Run the batches through the block with ``hooks`` (name -> fn(x)) on its linears; a
        batch's forward ends right after ``stop_after`` has run."""

        def wrap(name, fn):
            def hook(_module, inputs, _output):
                fn(inputs[0])
                if name == stop_after:
                    raise _StopForward

            return hook

        handles = [self.linears[n].register_forward_hook(wrap(n, fn)) for n, fn in hooks.items()]
        try:
            for h, c in list(zip(self.hidden, self.cache, strict=True))[:n_batches]:
                with contextlib.suppress(_StopForward):
                    _run_block(self.block, h, c[1], c[2])
        finally:
            for handle in handles:
                handle.remove()

    def stages(self) -> list[list[str]]:
        """Linears grouped by the input tensor they read, in the order the forward reaches
        them (seen on the first batch; a linear the forward never calls is an error)."""
        order: list[tuple[str, torch.Tensor]] = []
        self._run({n: lambda x, n=n: order.append((n, x)) for n in self.linears}, None, 1)
        groups: dict[int, list[str]] = {}
        for name, x in order:  # the inputs stay referenced, so their ids are unique
            groups.setdefault(id(x), []).append(name)
        missed = sorted(set(self.linears) - {n for n, _ in order})
        if missed:
            raise RuntimeError(f"the block's forward never calls {missed}; cannot calibrate them")
        return list(groups.values())

    def hessians(
        self, groups: list[list[str]], *, early_stop: bool
    ) -> dict[str, HessianAccumulator]:
        """One accumulator per group of linears that read the same input (the first of a group
        accumulates, the others are checked to read that very tensor). ``early_stop`` ends each
        batch's forward once the last linear of the last group has run."""
        accs: dict[str, HessianAccumulator] = {}
        current: dict[str, torch.Tensor] = {}  # owner -> its input in the running batch
        hooks: dict[str, Callable] = {}
        for owner, *sharers in groups:

            def own(x, owner=owner):
                current[owner] = x
                x = x.detach()
                acc = accs.setdefault(owner, HessianAccumulator(x.shape[-1]))
                acc.add_batch(
                    x.reshape(-1, x.shape[-1]).float().numpy(), x.shape[0] if x.ndim == 3 else 1
                )

            def share(x, name, owner=owner):
                if current.get(owner) is not x:
                    raise RuntimeError(f"{name} stopped reading the same input as {owner}")

            hooks[owner] = own
            hooks.update({n: lambda x, n=n, fn=share: fn(x, n) for n in sharers})
        self._run(hooks, groups[-1][-1] if early_stop else None)
        return {name: accs[group[0]] for group in groups for name in group}


def _quantize_linears(linears, accs, prefix, quantize_layer) -> dict[str, LayerReport]:
    reports = {}
    for name in accs:
        module = linears[name]
        full = f"{prefix}.{name}"
        W = module.weight.detach().float().numpy().copy()
        H = accs[name].H
        t0 = time.perf_counter()
        Wq = quantize_layer(full, W, H)
        seconds = time.perf_counter() - t0
        if Wq is None:
            continue
        Wq = np.asarray(Wq, dtype=np.float32)
        if Wq.shape != W.shape:
            raise ValueError(f"quantize_layer returned shape {Wq.shape} for {full} {W.shape}")
        module.weight.data.copy_(torch.from_numpy(Wq).to(module.weight.dtype))
        reports[full] = LayerReport(
            name=full,
            shape=tuple(W.shape),
            n_sequences=accs[name].n_sequences,
            n_tokens=accs[name].n_tokens,
            seconds=seconds,
            weight_rel_err=float(np.linalg.norm(W - Wq) / max(np.linalg.norm(W), 1e-30)),
            output_rel_err=layer_output_error(W, Wq, H),
        )
    return reports


__all__ = [
    "LayerReport",
    "calibration_batches",
    "find_blocks",
    "gptq_quantize_model",
    "unwrap_model",
]
