"""The table of ggml block formats: name -> (block size, bytes per block, ggml enum, codec)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np
from gguf import GGMLQuantizationType

from quant.formats import q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0


@dataclass(frozen=True)
class QType:
    """One ggml block format.

    ``block_size`` weights are stored in ``type_size`` bytes; ``codec`` is the module holding
    the numba kernels ``quantize_blocks(x, out)`` and ``dequantize_blocks(blob, out)``.
    """

    name: str
    block_size: int
    type_size: int
    ggml_type: GGMLQuantizationType
    codec: ModuleType = field(repr=False, compare=False)

    @property
    def bpw(self) -> float:
        """Bits per weight (8 * type_size / block_size)."""
        return 8.0 * self.type_size / self.block_size

    def row_bytes(self, cols: int) -> int:
        """Bytes taken by one row of ``cols`` weights (cols must be a multiple of block_size)."""
        return check_cols(self, cols) // self.block_size * self.type_size


def _entry(name: str, ggml_type: GGMLQuantizationType, codec: ModuleType) -> QType:
    return QType(name, codec.BLOCK_SIZE, codec.TYPE_SIZE, ggml_type, codec)


_T = GGMLQuantizationType
QTYPES: dict[str, QType] = {
    q.name: q
    for q in (
        _entry("q8_0", _T.Q8_0, q8_0),
        _entry("q4_0", _T.Q4_0, q4_0),
        _entry("q4_1", _T.Q4_1, q4_1),
        _entry("q5_0", _T.Q5_0, q5_0),
        _entry("q5_1", _T.Q5_1, q5_1),
        _entry("q2_K", _T.Q2_K, q2_k),
        _entry("q3_K", _T.Q3_K, q3_k),
        _entry("q4_K", _T.Q4_K, q4_k),
        _entry("q5_K", _T.Q5_K, q5_k),
        _entry("q6_K", _T.Q6_K, q6_k),
    )
}


def get_qtype(qtype: str | QType) -> QType:
    """Look up a format by its ggml name (e.g. ``"q4_K"``); unknown names list the valid ones."""
    if isinstance(qtype, QType):
        return qtype
    if not isinstance(qtype, str):
        raise TypeError(
            f"qtype must be a format name (str), got {type(qtype).__name__}; "
            f"valid: {', '.join(QTYPES)}"
        )
    try:
        return QTYPES[qtype]
    except KeyError:
        pass
    close = difflib.get_close_matches(qtype, QTYPES, n=1, cutoff=0.5)
    if not close:
        # catches case slips such as "Q4_K" / "q4_k"
        close = [name for name in QTYPES if name.lower() == qtype.lower()]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown qtype {qtype!r}; valid qtypes: {', '.join(QTYPES)}.{hint}")


def check_cols(qt: QType, cols: int) -> int:
    """Validate a row length for ``qt`` and return it as int."""
    if isinstance(cols, bool) or not isinstance(cols, int | np.integer):
        raise TypeError(f"row length must be an int, got {type(cols).__name__}")
    cols = int(cols)
    if cols <= 0 or cols % qt.block_size:
        raise ValueError(
            f"row length {cols} is not a positive multiple of {qt.name}'s block size "
            f"{qt.block_size}; valid row lengths are {qt.block_size}, {2 * qt.block_size}, ..."
        )
    return cols


def row_bytes(qtype: str | QType, cols: int) -> int:
    """Bytes of one quantized row of ``cols`` weights in format ``qtype``."""
    return get_qtype(qtype).row_bytes(cols)
