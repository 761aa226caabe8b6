"""Per-tensor quantization plans that follow llama.cpp's mixture rules (QUANT-SPEC §4).

A *file type* (``ftype``: ``q4_K_M``, ``q2_K``, ...) names a mixture: most 2-D weights get the
file type's default block type, a few sensitive tensors (``attn_v``, ``ffn_down``, the output
matrix, ...) get more bits on selected layers, and tensors whose rows do not split into whole
blocks fall back to a 32-block type. :func:`plan_mixture` reproduces the choice that
``llama-quantize`` makes for every tensor and records *why* (the ``rule`` field), so a plan can be
audited line by line against a real llama.cpp run.

Everything here is pure: tensors are described by name and ggml shape (``ne`` order, ``ne[0]`` =
the contiguous dimension = ``in_features`` of a linear layer); no weights are needed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import gguf

from quant.formats import QTYPES

__all__ = [
    "FTYPES",
    "BLOCK_TYPES",
    "TensorInfo",
    "ModelHParams",
    "PlanEntry",
    "PlanSummary",
    "canonical_ftype",
    "default_type",
    "file_type_enum",
    "type_block",
    "tensor_nbytes",
    "use_more_bits",
    "is_quantizable",
    "tensor_category",
    "plan_mixture",
    "summarize_plan",
    "format_plan",
    "main",
]

# --------------------------------------------------------------------------------------------
# Type table
# --------------------------------------------------------------------------------------------

#: block types a plan may assign (ggml names, lower case with llama.cpp's ``_K`` suffix)
BLOCK_TYPES: tuple[str, ...] = tuple(QTYPES)
_PLAIN_TYPES = ("f32", "f16")


def _ggml_type(qtype: str) -> gguf.GGMLQuantizationType:
    if qtype not in BLOCK_TYPES and qtype not in _PLAIN_TYPES:
        raise ValueError(_unknown("qtype", qtype, (*BLOCK_TYPES, *_PLAIN_TYPES)))
    return gguf.GGMLQuantizationType[qtype.upper()]


def type_block(qtype: str) -> tuple[int, int]:
    """(elements per block, bytes per block) of a storage type; f32/f16 have 1-element blocks."""
    if qtype in QTYPES:
        return QTYPES[qtype].block_size, QTYPES[qtype].type_size
    return gguf.GGML_QUANT_SIZES[_ggml_type(qtype)]


def tensor_nbytes(shape: Sequence[int], qtype: str) -> int:
    """Bytes a tensor of ggml shape ``shape`` occupies in ``qtype`` (rows are never padded)."""
    block, size = type_block(qtype)
    n = 1
    for d in shape:
        n *= int(d)
    if shape and int(shape[0]) % block:
        raise ValueError(f"ne[0]={shape[0]} is not a multiple of the {qtype} block size {block}")
    return n // block * size


# --------------------------------------------------------------------------------------------
# File types
# --------------------------------------------------------------------------------------------

#: ftype name -> (default block type, llama.cpp ``llama_ftype`` value for ``general.file_type``)
FTYPES: dict[str, tuple[str, int]] = {
    "q2_K": ("q2_K", gguf.LlamaFileType.MOSTLY_Q2_K),
    "q3_K_S": ("q3_K", gguf.LlamaFileType.MOSTLY_Q3_K_S),
    "q3_K_M": ("q3_K", gguf.LlamaFileType.MOSTLY_Q3_K_M),
    "q3_K_L": ("q3_K", gguf.LlamaFileType.MOSTLY_Q3_K_L),
    "q4_K_S": ("q4_K", gguf.LlamaFileType.MOSTLY_Q4_K_S),
    "q4_K_M": ("q4_K", gguf.LlamaFileType.MOSTLY_Q4_K_M),
    "q5_K_S": ("q5_K", gguf.LlamaFileType.MOSTLY_Q5_K_S),
    "q5_K_M": ("q5_K", gguf.LlamaFileType.MOSTLY_Q5_K_M),
    "q6_K": ("q6_K", gguf.LlamaFileType.MOSTLY_Q6_K),
    "q8_0": ("q8_0", gguf.LlamaFileType.MOSTLY_Q8_0),
    "q4_0": ("q4_0", gguf.LlamaFileType.MOSTLY_Q4_0),
    "q4_1": ("q4_1", gguf.LlamaFileType.MOSTLY_Q4_1),
    "q5_0": ("q5_0", gguf.LlamaFileType.MOSTLY_Q5_0),
    "q5_1": ("q5_1", gguf.LlamaFileType.MOSTLY_Q5_1),
    # unquantized references (every eligible weight in that type, nothing else changes)
    "f16": ("f16", gguf.LlamaFileType.MOSTLY_F16),
    "f32": ("f32", gguf.LlamaFileType.ALL_F32),
}


def _unknown(field_name: str, value: object, valid: Iterable[str]) -> str:
    valid = list(valid)
    close = difflib.get_close_matches(str(value), valid, n=1, cutoff=0.5)
    if not close:
        lowered = {v.lower(): v for v in valid}
        close = difflib.get_close_matches(str(value).lower(), list(lowered), n=1, cutoff=0.5)
        close = [lowered[c] for c in close]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {field_name} {value!r}{hint}; valid: {', '.join(valid)}"


def canonical_ftype(ftype: str) -> str:
    """Return the canonical spelling of a file type (``Q4_K_M`` -> ``q4_K_M``) or raise."""
    if ftype in FTYPES:
        return ftype
    by_lower = {k.lower(): k for k in FTYPES}
    key = str(ftype).lower()
    if key in by_lower:
        return by_lower[key]
    raise ValueError(_unknown("ftype", ftype, FTYPES))


def default_type(ftype: str) -> str:
    """The block type most tensors of ``ftype`` get (``llama_ftype_get_default_type``)."""
    return FTYPES[canonical_ftype(ftype)][0]


def file_type_enum(ftype: str) -> int:
    """Value written to ``general.file_type`` for ``ftype``."""
    return int(FTYPES[canonical_ftype(ftype)][1])


# --------------------------------------------------------------------------------------------
# Inputs and outputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the model, by llama.cpp name and ggml shape (``ne[0]`` = in_features).

    ``dtype`` is the storage type the tensor keeps when the mixture does not quantize it
    (norms and other 1-D tensors; llama.cpp copies them unchanged, normally as f32).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "f32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if not self.shape or any(d <= 0 for d in self.shape):
            raise ValueError(f"TensorInfo {self.name!r}: bad shape {self.shape}")
        if self.dtype not in _PLAIN_TYPES:
            raise ValueError(_unknown(f"dtype of {self.name!r}", self.dtype, _PLAIN_TYPES))

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class ModelHParams:
    """The hyper-parameters that llama.cpp's mixture rules look at.

    ``tied_embeddings``: ``None`` infers it the way llama.cpp does (tied unless a tensor named
    ``output.weight`` exists); a bool is checked against the tensor list.
    """

    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int = 0
    arch: str = "llama"
    tied_embeddings: bool | None = None

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"ModelHParams.{name} must be > 0, got {getattr(self, name)}")
        if self.n_head_kv < 0 or self.n_expert < 0:
            raise ValueError("ModelHParams.n_head_kv and n_expert must be >= 0")

    @property
    def n_gqa(self) -> int:
        """Query heads per kv head (llama.cpp ``n_gqa()``; 0 when n_head_kv is 0)."""
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_llama_70b(self) -> bool:
        """llama.cpp's ``LLM_TYPE_70B`` for the llama arch: 80 layers with grouped kv heads."""
        return self.arch == "llama" and self.n_layer == 80 and self.n_head != self.n_head_kv


@dataclass(frozen=True)
class PlanEntry:
    """The storage type chosen for one tensor, its size, and the rule that chose it."""

    name: str
    shape: tuple[int, ...]
    qtype: str
    bytes: int
    rule: str

    @property
    def quantized(self) -> bool:
        return self.qtype in BLOCK_TYPES

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class PlanSummary:
    ftype: str
    n_tensors: int
    n_quantized: int
    n_elements: int
    total_bytes: int
    bits_per_weight: float  # over all tensors, as llama.cpp reports "model size (BPW)"
    bytes_by_type: dict[str, int] = field(default_factory=dict)
    count_by_type: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------

# tensors llama.cpp never quantizes although they are 2-D ``*weight`` tensors (§4.1)
_NEVER_QUANTIZED_SUBSTRINGS = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
)
_NEVER_QUANTIZED_EXACT = ("position_embd.weight", "token_types.weight")


def is_quantizable(name: str, shape: Sequence[int]) -> tuple[bool, str]:
    """Whether llama.cpp would quantize this tensor at all, and why not (§4.1)."""
    if len(shape) < 2:
        return False, "kept: 1-D tensor"
    if not name.endswith("weight"):
        return False, "kept: not a weight"
    if name in _NEVER_QUANTIZED_EXACT:
        return False, f"kept: {name} is never quantized"
    for s in _NEVER_QUANTIZED_SUBSTRINGS:
        if s in name:
            return False, f"kept: names containing {s!r} are never quantized"
    return True, ""


def tensor_category(name: str) -> str:
    """llama.cpp's tensor category (first match wins, substring tests; §4.4)."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (
        ("attn_qkv.weight", "attn_qkv"),
        ("attn_kv_b.weight", "attn_kv_b"),
        ("attn_v.weight", "attn_v"),
        ("attn_k.weight", "attn_k"),
        ("attn_q.weight", "attn_q"),
        ("attn_output.weight", "attn_output"),
        ("ffn_up", "ffn_up"),
        ("ffn_gate", "ffn_gate"),
        ("ffn_down", "ffn_down"),
    ):
        if key in name:
            return cat
    return "other"


_ATTN_V_LIKE = ("attn_v", "attn_qkv", "attn_kv_b")
_LAYER_RE = re.compile(r"blk\.(\d+)\.")


def _layer_of(name: str) -> int:
    m = _LAYER_RE.match(name)
    return int(m.group(1)) if m else -1


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's layer selector: first and last eighth, and every third layer in between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _output_rule(t: str, ne0: int, hp: ModelHParams) -> tuple[str, str]:
    block = type_block(t)[0]
    if hp.arch == "falcon":
        return "q8_0", "output: falcon -> q8_0"
    if ne0 % block:
        return "q8_0", f"output: ne0={ne0} % {block} != 0 -> q8_0"
    if t != "q8_0":
        return "q6_K", "output: -> q6_K"
    return t, "output: stays q8_0"


def _attn_v_rule(ftype: str, t: str, iw: int, nw: int, hp: ModelHParams) -> tuple[str, str]:
    where = f"iw={iw}/{nw}"
    if ftype == "q2_K":
        t = "q4_K" if hp.n_gqa >= 4 else "q3_K"
        why = f"attn_v: q2_K, n_gqa={hp.n_gqa} {'>=' if hp.n_gqa >= 4 else '<'} 4 -> {t}"
    elif ftype == "q3_K_M":
        t = "q5_K" if iw < 2 else "q4_K"
        why = f"attn_v: q3_K_M, {where} {'<' if iw < 2 else '>='} 2 -> {t}"
    elif ftype == "q3_K_L":
        t, why = "q5_K", "attn_v: q3_K_L -> q5_K"
    elif ftype in ("q4_K_M", "q5_K_M") and use_more_bits(iw, nw):
        t, why = "q6_K", f"attn_v: {ftype}, use_more_bits({where}) -> q6_K"
    elif ftype == "q4_K_S" and iw < 4:
        t, why = "q5_K", f"attn_v: q4_K_S, {where} < 4 -> q5_K"
    else:
        why = f"attn_v: default ({where})"
    if hp.is_llama_70b and t in ("q3_K", "q4_K"):
        t, why = "q5_K", why + "; llama 70B -> q5_K"
    if hp.n_expert == 8:
        t, why = "q8_0", why + "; 8 experts -> q8_0"
    return t, why


def _ffn_down_rule(ftype: str, t: str, i: int, n: int, hp: ModelHParams) -> tuple[str, str]:
    falcon = hp.arch == "falcon"
    where = f"layer {i}/{n}"
    if ftype == "q2_K":
        return "q3_K", "ffn_down: q2_K -> q3_K"
    if ftype == "q3_K_M":
        if i < n // 16:
            return "q5_K", f"ffn_down: q3_K_M, {where} < n/16 -> q5_K"
        if not falcon or use_more_bits(i, n):
            return "q4_K", f"ffn_down: q3_K_M, {where} -> q4_K"
        return "q3_K", f"ffn_down: q3_K_M falcon, {where} -> q3_K"
    if ftype == "q3_K_L":
        t = "q4_K" if falcon else "q5_K"
        return t, f"ffn_down: q3_K_L -> {t}"
    if ftype == "q4_K_M":
        if falcon:
            if i < n // 16:
                return "q6_K", f"ffn_down: q4_K_M falcon, {where} < n/16 -> q6_K"
            if use_more_bits(i, n):
                return "q5_K", f"ffn_down: q4_K_M falcon, use_more_bits({where}) -> q5_K"
            return t, f"ffn_down: default ({where})"
        if use_more_bits(i, n):
            return "q6_K", f"ffn_down: q4_K_M, use_more_bits({where}) -> q6_K"
        return t, f"ffn_down: default ({where})"
    if ftype == "q5_K_M" and use_more_bits(i, n):
        return "q6_K", f"ffn_down: q5_K_M, use_more_bits({where}) -> q6_K"
    if ftype == "q4_K_S" and not falcon and i < n // 8:
        return "q5_K", f"ffn_down: q4_K_S, {where} < n/8 -> q5_K"
    return t, f"ffn_down: default ({where})"


_ATTN_OUT_MOE8 = ("q2_K", "q3_K_S", "q3_K_M", "q4_K_S", "q4_K_M")
_ATTN_OUT_DENSE = {"q2_K": "q3_K", "q3_K_M": "q4_K", "q3_K_L": "q5_K"}


def _attn_output_rule(ftype: str, t: str, hp: ModelHParams) -> tuple[str, str]:
    if hp.arch == "falcon":
        if ftype == "q3_K_L":
            return "q4_K", "attn_output: falcon q3_K_L -> q4_K"
        return t, "attn_output: default"
    if hp.n_expert == 8:
        if ftype in _ATTN_OUT_MOE8:
            return "q5_K", f"attn_output: {ftype}, 8 experts -> q5_K"
        return t, "attn_output: default"
    if ftype in _ATTN_OUT_DENSE:
        new = _ATTN_OUT_DENSE[ftype]
        return new, f"attn_output: {ftype} -> {new}"
    return t, "attn_output: default"


# fallback when ne[0] is not a multiple of the chosen type's block size (§4.5, current master)
_SHAPE_FALLBACK = {"q2_K": "q4_0", "q3_K": "q4_0", "q4_K": "q5_0", "q5_K": "q5_1", "q6_K": "q8_0"}


def _shape_fallback(name: str, t: str, ne0: int) -> tuple[str, str]:
    block = type_block(t)[0]
    if ne0 % block == 0:
        return t, ""
    if t not in _SHAPE_FALLBACK:
        raise ValueError(
            f"{name}: ne[0]={ne0} is not a multiple of {block} and llama.cpp defines no "
            f"fallback for {t}"
        )
    new = _SHAPE_FALLBACK[t]
    if ne0 % type_block(new)[0]:
        return "f16", f"fallback: ne0={ne0} % {block} != 0 and % 32 != 0 -> f16"
    return new, f"fallback: ne0={ne0} % {block} != 0, {t} -> {new}"


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


def _sort_key(t: TensorInfo) -> tuple[int, str]:
    return (_layer_of(t.name), t.name)


def plan_mixture(
    tensors: Sequence[TensorInfo], ftype: str, hparams: ModelHParams
) -> list[PlanEntry]:
    """Choose the storage type of every tensor exactly as ``llama-quantize <ftype>`` would.

    Returns one :class:`PlanEntry` per tensor, in llama.cpp's visiting order (tensors without a
    ``blk.N.`` prefix first, then by numeric layer, then by name).
    """
    ftype = canonical_ftype(ftype)
    base = default_type(ftype)
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate tensor names: {dup}")

    tied = "output.weight" not in names
    if hparams.tied_embeddings is not None and hparams.tied_embeddings != tied:
        raise ValueError(
            f"ModelHParams.tied_embeddings={hparams.tied_embeddings} but the tensor list "
            f"{'has no' if tied else 'has an'} output.weight"
        )
    for t in tensors:
        layer = _layer_of(t.name)
        if layer >= hparams.n_layer:
            raise ValueError(f"{t.name}: layer {layer} >= ModelHParams.n_layer={hparams.n_layer}")

    n_attention_wv = sum(tensor_category(n) in _ATTN_V_LIKE for n in names)
    n_ffn = hparams.n_layer  # llama.cpp uses the hparam, not a tensor count
    i_attention_wv = 0
    i_ffn_down = 0
    quantizing = base in BLOCK_TYPES

    plan: list[PlanEntry] = []
    for t in sorted(tensors, key=_sort_key):
        ok, why_not = is_quantizable(t.name, t.shape)
        if not ok:
            plan.append(_entry(t, t.dtype, why_not))
            continue
        if not quantizing:
            plan.append(_entry(t, base, f"default({ftype}) = {base}"))
            continue

        cat = tensor_category(t.name)
        qt, rule = base, f"default({ftype}) = {base}"
        ne0 = t.shape[0]
        if cat == "output" or (tied and cat == "token_embd"):
            qt, rule = _output_rule(base, ne0, hparams)
            if cat == "token_embd":
                rule = "tied token_embd as " + rule
        elif cat == "token_embd":
            rule = f"token_embd (untied): default {base}"
        elif cat in _ATTN_V_LIKE:
            qt, rule = _attn_v_rule(ftype, base, i_attention_wv, n_attention_wv, hparams)
            i_attention_wv += 1
        elif cat == "attn_k" and hparams.n_expert == 8:
            qt, rule = "q8_0", "attn_k: 8 experts -> q8_0"
        elif cat == "ffn_down":
            layer = i_ffn_down if hparams.n_expert <= 1 else _layer_of(t.name)
            qt, rule = _ffn_down_rule(ftype, base, layer, n_ffn, hparams)
            i_ffn_down += 1
        elif cat == "attn_output":
            qt, rule = _attn_output_rule(ftype, base, hparams)

        fb, fb_rule = _shape_fallback(t.name, qt, ne0)
        if fb_rule:
            qt, rule = fb, f"{rule}; {fb_rule}"
        plan.append(_entry(t, qt, rule))
    return plan


def _entry(t: TensorInfo, qtype: str, rule: str) -> PlanEntry:
    return PlanEntry(t.name, t.shape, qtype, tensor_nbytes(t.shape, qtype), rule)


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def summarize_plan(plan: Sequence[PlanEntry], ftype: str = "") -> PlanSummary:
    """Totals of a plan: bytes, elements, bits per weight, and a per-type breakdown."""
    total = sum(e.bytes for e in plan)
    n = sum(e.n_elements for e in plan)
    by_bytes: dict[str, int] = {}
    by_count: dict[str, int] = {}
    for e in plan:
        by_bytes[e.qtype] = by_bytes.get(e.qtype, 0) + e.bytes
        by_count[e.qtype] = by_count.get(e.qtype, 0) + 1
    return PlanSummary(
        ftype=canonical_ftype(ftype) if ftype else "",
        n_tensors=len(plan),
        n_quantized=sum(e.quantized for e in plan),
        n_elements=n,
        total_bytes=total,
        bits_per_weight=8.0 * total / n if n else 0.0,
        bytes_by_type=dict(sorted(by_bytes.items())),
        count_by_type=dict(sorted(by_count.items())),
    )


def format_plan(plan: Sequence[PlanEntry], fmt: str = "markdown", ftype: str = "") -> str:
    """Render a plan as a table (``markdown`` or fixed-width ``text``) followed by its summary."""
    if fmt not in ("markdown", "text"):
        raise ValueError(_unknown("fmt", fmt, ("markdown", "text")))
    header = ("tensor", "shape", "type", "bytes", "rule")
    rows = [
        (e.name, "x".join(str(d) for d in e.shape), e.qtype, f"{e.bytes:,}", e.rule) for e in plan
    ]
    s = summarize_plan(plan, ftype)
    kinds = ", ".join(f"{k}: {v}" for k, v in s.count_by_type.items())
    summary = (
        f"{s.n_tensors} tensors ({s.n_quantized} quantized; {kinds}), "
        f"{s.total_bytes:,} bytes = {s.total_bytes / 2**20:.2f} MiB, "
        f"{s.n_elements:,} weights, {s.bits_per_weight:.4f} bits/weight"
    )
    if ftype:
        summary = f"{canonical_ftype(ftype)}: {summary}"
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [f"| `{r[0]}` | {r[1]} | {r[2]} | {r[3]} | {r[4]} |" for r in rows]
        return "\n".join(lines) + "\n\n" + summary + "\n"
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    fmt_row = (
        "  ".join(f"{{:{'>' if i == 3 else '<'}{w}}}" for i, w in enumerate(widths[:-1])) + "  {}"
    )
    lines = [fmt_row.format(*header)]
    lines += [fmt_row.format(*r) for r in rows]
    return "\n".join(lines) + "\n\n" + summary + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m quant.mixtures MODEL.gguf FTYPE [--format text|markdown]``: print a plan."""
    import argparse

    from quant.names import hparams_from_gguf, tensor_infos_from_gguf

    parser = argparse.ArgumentParser(
        prog="python -m quant.mixtures",
        description="Print llama.cpp's per-tensor type plan for a GGUF model and a file type.",
    )
    parser.add_argument("model", help="a .gguf file (its tensor list and hyper-parameters)")
    parser.add_argument("ftype", help=f"file type: {', '.join(FTYPES)}")
    parser.add_argument("--format", default="text", choices=("text", "markdown"))
    args = parser.parse_args(argv)
    try:
        ftype = canonical_ftype(args.ftype)
    except ValueError as exc:
        parser.error(str(exc))
    reader = gguf.GGUFReader(args.model)
    plan = plan_mixture(tensor_infos_from_gguf(reader), ftype, hparams_from_gguf(reader))
    print(format_plan(plan, args.format, ftype), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
