"""Hugging Face Llama <-> llama.cpp (GGUF) tensor names, shapes and the q/k row permutation.

Names
    ``model.embed_tokens.weight``                       <-> ``token_embd.weight``
    ``model.layers.{i}.self_attn.{q,k,v}_proj.weight``   <-> ``blk.{i}.attn_{q,k,v}.weight``
    ``model.layers.{i}.self_attn.o_proj.weight``         <-> ``blk.{i}.attn_output.weight``
    ``model.layers.{i}.mlp.{gate,up,down}_proj.weight``  <-> ``blk.{i}.ffn_{gate,up,down}.weight``
    ``model.layers.{i}.input_layernorm.weight``          <-> ``blk.{i}.attn_norm.weight``
    ``model.layers.{i}.post_attention_layernorm.weight`` <-> ``blk.{i}.ffn_norm.weight``
    ``model.norm.weight``                               <-> ``output_norm.weight``
    ``lm_head.weight``                                  <-> ``output.weight``
    (``.bias`` variants map the same way.)

Shapes
    A PyTorch ``nn.Linear`` weight is ``(out_features, in_features)``; GGUF lists dims innermost
    first, so its ggml shape is ``(in_features, out_features)`` (``ne[0] = in_features``). The
    bytes are the same row-major buffer either way; only the order of the dims differs.

Rotary permutation of q and k
    HF Llama applies RoPE with ``rotate_half``: inside each head the first half of the dims is
    paired with the second half (``d`` with ``d + head_dim/2``). llama.cpp's ``llama`` arch uses
    the "normal" RoPE that pairs *adjacent* dims (``2j`` with ``2j+1``). llama.cpp's converter
    therefore reorders the output rows of ``q_proj`` (per query head) and ``k_proj`` (per kv
    head) so that row ``j`` and row ``j + head_dim/2`` of a head become neighbours; transformers
    applies the inverse when it loads a llama GGUF. The permutation only moves whole rows (output
    features), and ggml blocks run along a row, so quantizing then permuting the byte rows gives
    exactly the bytes of quantizing the permuted matrix (:func:`permute_qk` works on both).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from quant.mixtures import ModelHParams, TensorInfo

__all__ = [
    "hf_to_gguf_name",
    "gguf_to_hf_name",
    "permute_qk",
    "unpermute_qk",
    "qk_heads",
    "ggml_shape",
    "tensor_infos_from_hf",
    "hparams_from_hf_config",
    "tensor_infos_from_gguf",
    "hparams_from_gguf",
]

_GLOBAL = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
}
_LAYER = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_GLOBAL_INV = {v: k for k, v in _GLOBAL.items()}
_LAYER_INV = {v: k for k, v in _LAYER.items()}
_HF_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_GGUF_LAYER_RE = re.compile(r"^blk\.(\d+)\.(.+)\.(weight|bias)$")
_SUFFIX_RE = re.compile(r"^(.+)\.(weight|bias)$")


def _bad_name(kind: str, name: str, valid: Iterable[str]) -> KeyError:
    return KeyError(f"not a Llama {kind} tensor name: {name!r}; known: {', '.join(valid)}")


def hf_to_gguf_name(name: str) -> str:
    """``model.layers.3.self_attn.v_proj.weight`` -> ``blk.3.attn_v.weight``."""
    m = _HF_LAYER_RE.match(name)
    if m:
        layer, module, suffix = m.groups()
        if module in _LAYER:
            return f"blk.{layer}.{_LAYER[module]}.{suffix}"
    else:
        m = _SUFFIX_RE.match(name)
        if m and m.group(1) in _GLOBAL:
            return f"{_GLOBAL[m.group(1)]}.{m.group(2)}"
    valid = [*_GLOBAL, *(f"model.layers.{{i}}.{k}" for k in _LAYER)]
    raise _bad_name("HF", name, valid)


def gguf_to_hf_name(name: str) -> str:
    """``blk.3.attn_v.weight`` -> ``model.layers.3.self_attn.v_proj.weight``."""
    m = _GGUF_LAYER_RE.match(name)
    if m:
        layer, module, suffix = m.groups()
        if module in _LAYER_INV:
            return f"model.layers.{layer}.{_LAYER_INV[module]}.{suffix}"
    else:
        m = _SUFFIX_RE.match(name)
        if m and m.group(1) in _GLOBAL_INV:
            return f"{_GLOBAL_INV[m.group(1)]}.{m.group(2)}"
    valid = [*_GLOBAL_INV, *(f"blk.{{i}}.{k}" for k in _LAYER_INV)]
    raise _bad_name("llama.cpp", name, valid)


def qk_heads(gguf_name: str, n_head: int, n_head_kv: int) -> int | None:
    """Number of heads whose rows :func:`permute_qk` regroups for this tensor, or None."""
    if gguf_name.endswith("attn_q.weight") or gguf_name.endswith("attn_q.bias"):
        return n_head
    if gguf_name.endswith("attn_k.weight") or gguf_name.endswith("attn_k.bias"):
        return n_head_kv or n_head
    return None


def _check_rows(x: np.ndarray, n_heads: int) -> int:
    rows = x.shape[0]
    if n_heads <= 0 or rows % (2 * n_heads):
        raise ValueError(f"{rows} rows cannot be split into {n_heads} heads of even size")
    return rows // n_heads // 2


def permute_qk(x: np.ndarray, n_heads: int) -> np.ndarray:
    """HF row order -> llama.cpp row order for q_proj / k_proj (weights, biases or byte rows).

    Within each head, HF row ``h*hd + s*hd/2 + j`` (s in {0, 1}) moves to ``h*hd + 2j + s``.
    """
    half = _check_rows(x, n_heads)
    return np.ascontiguousarray(
        x.reshape(n_heads, 2, half, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)
    )


def unpermute_qk(x: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of :func:`permute_qk` (what transformers does when loading a llama GGUF)."""
    half = _check_rows(x, n_heads)
    return np.ascontiguousarray(
        x.reshape(n_heads, half, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)
    )


def ggml_shape(torch_shape: Iterable[int]) -> tuple[int, ...]:
    """PyTorch/NumPy shape (outermost first) -> ggml ``ne`` order (innermost first)."""
    return tuple(int(d) for d in reversed(tuple(torch_shape)))


def _cfg(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def tensor_infos_from_hf(
    shapes: Mapping[str, Iterable[int]], tie_word_embeddings: bool
) -> list[TensorInfo]:
    """TensorInfo list (llama.cpp names, ggml shapes) from HF parameter names and shapes.

    ``shapes`` maps HF names to PyTorch shapes; a ``state_dict()`` works directly because
    tensors have a ``.shape``. With tied embeddings ``lm_head.weight`` (which ``state_dict()``
    still lists) is dropped, as llama.cpp's converter does. Rotary buffers are skipped.
    """
    infos = []
    for hf_name, value in shapes.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        if tie_word_embeddings and hf_name == "lm_head.weight":
            continue
        shape = tuple(getattr(value, "shape", value))
        infos.append(TensorInfo(hf_to_gguf_name(hf_name), ggml_shape(shape)))
    return infos


def hparams_from_hf_config(config: Any) -> ModelHParams:
    """ModelHParams from a transformers ``LlamaConfig`` (or a dict with the same keys)."""
    n_head = int(_cfg(config, "num_attention_heads"))
    return ModelHParams(
        n_layer=int(_cfg(config, "num_hidden_layers")),
        n_head=n_head,
        n_head_kv=int(_cfg(config, "num_key_value_heads") or n_head),
        n_expert=int(_cfg(config, "num_local_experts", 0) or 0),
        arch="llama",
        tied_embeddings=bool(_cfg(config, "tie_word_embeddings", False)),
    )


def _reader(source: Any) -> Any:
    import gguf

    return source if isinstance(source, gguf.GGUFReader) else gguf.GGUFReader(source)


def tensor_infos_from_gguf(source: Any) -> list[TensorInfo]:
    """TensorInfo list of an existing GGUF file (a path or an open ``gguf.GGUFReader``)."""
    import gguf

    reader = _reader(source)
    infos = []
    for t in reader.tensors:
        dtype = "f16" if t.tensor_type == gguf.GGMLQuantizationType.F16 else "f32"
        infos.append(TensorInfo(t.name, tuple(int(d) for d in t.shape), dtype))
    return infos


def hparams_from_gguf(source: Any) -> ModelHParams:
    """ModelHParams from the metadata of a GGUF file (a path or an open ``gguf.GGUFReader``)."""
    reader = _reader(source)
    arch = reader.fields["general.architecture"].contents()

    def get(key: str, default: Any = None) -> Any:
        f = reader.fields.get(f"{arch}.{key}")
        return f.contents() if f is not None else default

    n_head = int(get("attention.head_count"))
    names = {t.name for t in reader.tensors}
    return ModelHParams(
        n_layer=int(get("block_count")),
        n_head=n_head,
        n_head_kv=int(get("attention.head_count_kv", n_head)),
        n_expert=int(get("expert_count", 0)),
        arch=str(arch),
        tied_embeddings="output.weight" not in names,
    )
