"""quantloop numerics: ggml block formats, integer RTN/GPTQ storage, kernels (no Hydra/W&B)."""

from quant.formats import QTYPES, QType, dequantize, get_qtype, quantize, row_bytes

__all__ = ["QTYPES", "QType", "dequantize", "get_qtype", "quantize", "row_bytes"]
