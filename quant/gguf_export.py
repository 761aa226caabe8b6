"""Write a quantized Llama model as a GGUF file that llama.cpp and transformers can load.

Pure numerics + file I/O: inputs are numpy arrays, a mixture plan (``quant.mixtures``) and plain
metadata dataclasses; nothing here knows about the runner.

Flow (see docs/mixtures.md)::

    infos = tensor_infos_from_hf(state_dict, config.tie_word_embeddings)     # quant.names
    plan = plan_mixture(infos, "q4_K_M", hparams_from_hf_config(config))     # quant.mixtures
    encoded = quantize_plan(weights_by_gguf_name, plan)                       # RTN, HF row order
    size = write_llama_gguf(path, LlamaMeta.from_hf_config(config), tok, encoded, "q4_K_M",
                            n_head=..., n_head_kv=...)

Tensors are handed over in Hugging Face row order; the writer applies llama.cpp's rotary row
permutation to ``attn_q``/``attn_k`` (on the quantized byte rows, which is equivalent to
permuting the float rows first because blocks never cross rows).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gguf
import numpy as np

from quant.formats import dequantize, quantize
from quant.mixtures import (
    BLOCK_TYPES,
    PlanEntry,
    canonical_ftype,
    file_type_enum,
    tensor_nbytes,
)
from quant.names import permute_qk, qk_heads, unpermute_qk

__all__ = [
    "LlamaMeta",
    "TokenizerMeta",
    "EncodedTensor",
    "GGUFTensor",
    "tokenizer_meta_from_hf",
    "tokenizer_meta_from_gguf",
    "encode_tensor",
    "decode_tensor",
    "quantize_plan",
    "write_llama_gguf",
    "read_gguf_tensors",
    "dequantize_gguf_tensor",
    "gguf_bits_per_weight",
    "unpermute_gguf_qk",
]


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


def _cfg(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def _reader(source: Any) -> gguf.GGUFReader:
    return source if isinstance(source, gguf.GGUFReader) else gguf.GGUFReader(source)


@dataclass(frozen=True)
class LlamaMeta:
    """Hyper-parameters written under ``llama.*`` (names as in the GGUF spec)."""

    context_length: int
    embedding_length: int
    block_count: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    rope_freq_base: float
    rms_eps: float
    vocab_size: int
    rope_dimension_count: int
    name: str = ""

    def __post_init__(self) -> None:
        for key in (
            "context_length",
            "embedding_length",
            "block_count",
            "feed_forward_length",
            "head_count",
            "head_count_kv",
            "vocab_size",
            "rope_dimension_count",
        ):
            if int(getattr(self, key)) <= 0:
                raise ValueError(f"LlamaMeta.{key} must be > 0, got {getattr(self, key)}")
        if self.head_count % self.head_count_kv:
            raise ValueError("LlamaMeta.head_count must be a multiple of head_count_kv")

    @classmethod
    def from_hf_config(cls, config: Any, name: str = "") -> LlamaMeta:
        """From a transformers ``LlamaConfig`` (or a dict with its keys)."""
        n_head = int(_cfg(config, "num_attention_heads"))
        hidden = int(_cfg(config, "hidden_size"))
        head_dim = int(_cfg(config, "head_dim", None) or hidden // n_head)
        rope_base = _cfg(config, "rope_theta", None)
        if rope_base is None:  # transformers 5 keeps it in rope_parameters
            params = _cfg(config, "rope_parameters", None) or {}
            rope_base = params.get("rope_theta", 10000.0)
            if params.get("rope_type", "default") not in ("default", None):
                raise ValueError(
                    f"rope_type {params.get('rope_type')!r} is not supported by this exporter "
                    "(only plain RoPE)"
                )
        return cls(
            context_length=int(_cfg(config, "max_position_embeddings")),
            embedding_length=hidden,
            block_count=int(_cfg(config, "num_hidden_layers")),
            feed_forward_length=int(_cfg(config, "intermediate_size")),
            head_count=n_head,
            head_count_kv=int(_cfg(config, "num_key_value_heads", None) or n_head),
            rope_freq_base=float(rope_base),
            rms_eps=float(_cfg(config, "rms_norm_eps")),
            vocab_size=int(_cfg(config, "vocab_size")),
            rope_dimension_count=head_dim,
            name=name or str(_cfg(config, "_name_or_path", "") or ""),
        )

    @classmethod
    def from_gguf(cls, source: Any, name: str | None = None) -> LlamaMeta:
        """From the ``llama.*`` metadata of a GGUF file (path or ``gguf.GGUFReader``)."""
        reader = _reader(source)
        if reader.fields["general.architecture"].contents() != "llama":
            raise ValueError("LlamaMeta.from_gguf: general.architecture is not 'llama'")

        def get(key: str, default: Any = None) -> Any:
            f = reader.fields.get(f"llama.{key}")
            return f.contents() if f is not None else default

        n_head = int(get("attention.head_count"))
        hidden = int(get("embedding_length"))
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        vocab = get("vocab_size", len(tokens.data) if tokens is not None else None)
        if name is None:
            f = reader.fields.get("general.name")
            name = f.contents() if f is not None else ""
        return cls(
            context_length=int(get("context_length")),
            embedding_length=hidden,
            block_count=int(get("block_count")),
            feed_forward_length=int(get("feed_forward_length")),
            head_count=n_head,
            head_count_kv=int(get("attention.head_count_kv", n_head)),
            rope_freq_base=float(get("rope.freq_base", 10000.0)),
            rms_eps=float(get("attention.layer_norm_rms_epsilon")),
            vocab_size=int(vocab),
            rope_dimension_count=int(get("rope.dimension_count", hidden // n_head)),
            name=str(name),
        )


@dataclass(frozen=True)
class TokenizerMeta:
    """A BPE ("gpt2"-style, byte-level) tokenizer as GGUF stores it under ``tokenizer.ggml.*``."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    model: str = "gpt2"
    pre: str = "default"
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    unknown_token_id: int | None = None
    padding_token_id: int | None = None
    add_bos_token: bool | None = None
    add_eos_token: bool | None = None
    chat_template: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model != "gpt2":
            raise ValueError(f"tokenizer model {self.model!r} not supported; valid: gpt2")
        if len(self.tokens) != len(self.token_types):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.token_types)} token types")
        for key in ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id"):
            v = getattr(self, key)
            if v is not None and not 0 <= v < len(self.tokens):
                raise ValueError(f"TokenizerMeta.{key}={v} outside the vocabulary")


def tokenizer_meta_from_hf(tokenizer: Any, pre: str = "default") -> TokenizerMeta:
    """Extract a byte-level BPE tokenizer from a transformers (fast) tokenizer object.

    ``pre`` is llama.cpp's pre-tokenizer name (``tokenizer.ggml.pre``; e.g. ``"smollm"`` for
    SmolLM2). llama.cpp's converter identifies it by hashing the tokenization of a probe text;
    we take it as an argument (``"default"`` is accepted by llama.cpp with a warning).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("tokenizer has no backend_tokenizer; a fast (tokenizers) BPE is needed")
    spec = json.loads(backend.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(f"tokenizer model type {model.get('type')!r} is not BPE")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    vocab = tokenizer.get_vocab()
    n = max(len(tokenizer), max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [int(gguf.TokenType.UNUSED)] * n
    for tok, i in vocab.items():
        tokens[i] = tok
        types[i] = int(gguf.TokenType.NORMAL)
    for i, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        tokens[i] = added.content
        special = getattr(added, "special", False)
        types[i] = int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)

    template = getattr(tokenizer, "chat_template", None)
    return TokenizerMeta(
        tokens=tokens,
        token_types=types,
        merges=merges,
        pre=pre,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        unknown_token_id=tokenizer.unk_token_id,
        padding_token_id=tokenizer.pad_token_id,
        add_bos_token=getattr(tokenizer, "add_bos_token", None),
        add_eos_token=getattr(tokenizer, "add_eos_token", None),
        chat_template=template if isinstance(template, str) else None,
    )


def tokenizer_meta_from_gguf(source: Any) -> TokenizerMeta:
    """Copy the tokenizer of a GGUF file (path or ``gguf.GGUFReader``), e.g. the model's source."""
    reader = _reader(source)

    def get(key: str, default: Any = None) -> Any:
        f = reader.fields.get(f"tokenizer.ggml.{key}")
        return f.contents() if f is not None else default

    template = reader.fields.get("tokenizer.chat_template")
    return TokenizerMeta(
        tokens=list(get("tokens")),
        token_types=[int(t) for t in get("token_type")],
        merges=list(get("merges", [])),
        model=str(get("model")),
        pre=str(get("pre", "default")),
        bos_token_id=get("bos_token_id"),
        eos_token_id=get("eos_token_id"),
        unknown_token_id=get("unknown_token_id"),
        padding_token_id=get("padding_token_id"),
        add_bos_token=get("add_bos_token"),
        add_eos_token=get("add_eos_token"),
        chat_template=template.contents() if template is not None else None,
    )


# --------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedTensor:
    """One tensor ready to be written, in Hugging Face row order.

    ``shape`` is the ggml shape (``ne[0]`` = in_features). ``data`` is the uint8 block bytes of
    shape ``(rows, bytes_per_row)`` for block types, or a float32 / float16 array in numpy
    shape for ``f32`` / ``f16``.
    """

    name: str
    qtype: str
    shape: tuple[int, ...]
    data: np.ndarray

    def __post_init__(self) -> None:
        expected = tensor_nbytes(self.shape, self.qtype)
        if self.data.nbytes != expected:
            raise ValueError(
                f"{self.name}: {self.data.nbytes} bytes of data, {self.qtype} of shape "
                f"{self.shape} needs {expected}"
            )
        want = {"f32": np.float32, "f16": np.float16}.get(self.qtype, np.uint8)
        if self.data.dtype != want:
            raise ValueError(f"{self.name}: {self.qtype} data must be {np.dtype(want)}")


def encode_tensor(name: str, weight: np.ndarray, qtype: str) -> EncodedTensor:
    """Quantize (or cast) one weight given in numpy/PyTorch layout (HF row order)."""
    w = np.asarray(weight, dtype=np.float32)
    shape = tuple(int(d) for d in reversed(w.shape))
    if qtype == "f32":
        data = np.ascontiguousarray(w)
    elif qtype == "f16":
        data = w.astype(np.float16)
    elif qtype in BLOCK_TYPES:
        rows = w.reshape(-1, w.shape[-1]) if w.ndim > 1 else w.reshape(1, -1)
        data = np.ascontiguousarray(quantize(rows, qtype), dtype=np.uint8)
    else:
        raise ValueError(f"{name}: unknown qtype {qtype!r}; valid: f32, f16, {BLOCK_TYPES}")
    return EncodedTensor(name, qtype, shape, data)


def decode_tensor(t: EncodedTensor) -> np.ndarray:
    """Float32 weights an :class:`EncodedTensor` stands for (numpy shape, HF row order)."""
    shape = tuple(reversed(t.shape))
    if t.qtype in ("f32", "f16"):
        return t.data.astype(np.float32).reshape(shape)
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    return dequantize(t.data, t.qtype, (rows, shape[-1])).reshape(shape)


def quantize_plan(
    weights: Mapping[str, np.ndarray], plan: Sequence[PlanEntry]
) -> dict[str, EncodedTensor]:
    """Round-to-nearest quantization of every tensor in ``plan`` (keys: llama.cpp names).

    ``weights`` maps llama.cpp names to arrays in numpy/PyTorch layout and HF row order (see
    ``quant.names.hf_to_gguf_name``). Returns the encoded tensors in plan order.
    """
    missing = [e.name for e in plan if e.name not in weights]
    if missing:
        raise KeyError(f"no weights for planned tensors: {missing[:5]}")
    out = {}
    for e in plan:
        enc = encode_tensor(e.name, weights[e.name], e.qtype)
        if enc.shape != e.shape:
            raise ValueError(f"{e.name}: weight has ggml shape {enc.shape}, plan has {e.shape}")
        out[e.name] = enc
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _add_tokenizer(w: gguf.GGUFWriter, tok: TokenizerMeta) -> None:
    w.add_tokenizer_model(tok.model)
    w.add_tokenizer_pre(tok.pre)
    w.add_token_list(tok.tokens)
    w.add_token_types(tok.token_types)
    if tok.merges:
        w.add_token_merges(tok.merges)
    for key, adder in (
        ("bos_token_id", w.add_bos_token_id),
        ("eos_token_id", w.add_eos_token_id),
        ("unknown_token_id", w.add_unk_token_id),
        ("padding_token_id", w.add_pad_token_id),
    ):
        v = getattr(tok, key)
        if v is not None:
            adder(int(v))
    if tok.add_bos_token is not None:
        w.add_add_bos_token(bool(tok.add_bos_token))
    if tok.add_eos_token is not None:
        w.add_add_eos_token(bool(tok.add_eos_token))
    if tok.chat_template:
        w.add_chat_template(tok.chat_template)


def _add_llama_meta(w: gguf.GGUFWriter, meta: LlamaMeta) -> None:
    if meta.name:
        w.add_name(meta.name)
    w.add_context_length(meta.context_length)
    w.add_embedding_length(meta.embedding_length)
    w.add_block_count(meta.block_count)
    w.add_feed_forward_length(meta.feed_forward_length)
    w.add_head_count(meta.head_count)
    w.add_head_count_kv(meta.head_count_kv)
    w.add_rope_freq_base(meta.rope_freq_base)
    w.add_layer_norm_rms_eps(meta.rms_eps)
    w.add_vocab_size(meta.vocab_size)
    w.add_rope_dimension_count(meta.rope_dimension_count)


def _file_order(name: str) -> tuple[int, str]:
    if name.startswith("blk."):
        return (int(name.split(".")[1]), name)
    return (-1, name)


def _check_model(meta: LlamaMeta, tok: TokenizerMeta, tensors: Mapping[str, EncodedTensor]):
    if len(tok.tokens) != meta.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tok.tokens)} tokens but LlamaMeta.vocab_size={meta.vocab_size}"
        )
    emb = tensors.get("token_embd.weight")
    if emb is None:
        raise ValueError("no token_embd.weight among the tensors")
    if emb.shape != (meta.embedding_length, meta.vocab_size):
        raise ValueError(
            f"token_embd.weight has ggml shape {emb.shape}, expected "
            f"({meta.embedding_length}, {meta.vocab_size})"
        )
    for i in range(meta.block_count):
        for part in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_down", "attn_norm"):
            if f"blk.{i}.{part}.weight" not in tensors:
                raise ValueError(f"missing tensor blk.{i}.{part}.weight")


def write_llama_gguf(
    path: str | os.PathLike[str],
    meta: LlamaMeta,
    tokenizer: TokenizerMeta,
    tensors: Iterable[EncodedTensor] | Mapping[str, EncodedTensor],
    ftype: str,
    *,
    qk_order: str = "hf",
) -> int:
    """Write a llama-architecture GGUF atomically and return its size in bytes.

    ``tensors`` use llama.cpp names. With ``qk_order="hf"`` (default) q/k rows are in Hugging
    Face order and are permuted here; use ``"gguf"`` for tensors already in llama.cpp order.
    The file is written to a temporary file next to ``path`` and moved into place.
    """
    ftype = canonical_ftype(ftype)
    if qk_order not in ("hf", "gguf"):
        raise ValueError(f"unknown qk_order {qk_order!r}; valid: hf, gguf")
    by_name = dict(tensors) if isinstance(tensors, Mapping) else {t.name: t for t in tensors}
    _check_model(meta, tokenizer, by_name)

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".gguf", dir=directory)
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, arch="llama")
        _add_llama_meta(w, meta)
        w.add_file_type(file_type_enum(ftype))
        if any(t.qtype in BLOCK_TYPES for t in by_name.values()):
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_tokenizer(w, tokenizer)
        for name in sorted(by_name, key=_file_order):
            t = by_name[name]
            data = t.data
            heads = qk_heads(name, meta.head_count, meta.head_count_kv)
            if qk_order == "hf" and heads is not None:
                data = permute_qk(data, heads)
            if t.qtype in BLOCK_TYPES:
                w.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[t.qtype.upper()])
            else:
                w.add_tensor(name, data)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return os.path.getsize(path)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GGUFTensor:
    """A tensor as stored in a GGUF file: type name, ggml shape, raw bytes (rows x row bytes)."""

    qtype: str
    shape: tuple[int, ...]
    data: np.ndarray

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


def _type_name(t: gguf.GGMLQuantizationType) -> str:
    name = t.name.lower()
    return name[:-2] + "_K" if name.endswith("_k") else name


def read_gguf_tensors(source: Any) -> dict[str, GGUFTensor]:
    """``{name: GGUFTensor(qtype, ggml shape, uint8 bytes of shape (rows, row_bytes))}``.

    ``source`` is a path or an open ``gguf.GGUFReader`` (parsing a 50k-token vocabulary takes
    seconds, so reuse a reader when you need several views of one file).
    """
    reader = _reader(source)
    out = {}
    for t in reader.tensors:
        qtype = _type_name(t.tensor_type)
        shape = tuple(int(d) for d in t.shape)
        rows = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        raw = np.array(t.data).view(np.uint8).reshape(rows, -1)
        out[t.name] = GGUFTensor(qtype, shape, raw)
    return out


def dequantize_gguf_tensor(t: GGUFTensor) -> np.ndarray:
    """Float32 values of a stored tensor, numpy shape (outermost first), file row order."""
    shape = tuple(reversed(t.shape))
    if t.qtype == "f32":
        return t.data.view(np.float32).reshape(shape).copy()
    if t.qtype == "f16":
        return t.data.view(np.float16).astype(np.float32).reshape(shape)
    return dequantize(t.data, t.qtype, (t.data.shape[0], t.shape[0])).reshape(shape)


def gguf_bits_per_weight(source: Any) -> float:
    """Bits per weight of a GGUF file: 8 * tensor data bytes / number of weights (all tensors).

    This is the "BPW" llama.cpp prints next to the model size (metadata excluded).
    ``source`` is a path or an open ``gguf.GGUFReader``.
    """
    tensors = _reader(source).tensors
    n = sum(int(t.n_elements) for t in tensors)
    nbytes = sum(int(t.n_bytes) for t in tensors)
    return 8.0 * nbytes / n if n else 0.0


def unpermute_gguf_qk(name: str, values: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation on values read from a file (no-op for others)."""
    heads = qk_heads(name, n_head, n_head_kv)
    return values if heads is None else unpermute_qk(values, heads)
