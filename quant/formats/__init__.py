"""ggml block formats (q8_0 ... q6_K): byte-exact numba codecs of llama.cpp's reference quantizers.

Public API::

    from quant.formats import quantize, dequantize, QTYPES, QType, row_bytes

See docs/formats.md for the layout table, the exactness guarantee and benchmark figures.
"""

from quant.formats.api import dequantize, quantize
from quant.formats.registry import QTYPES, QType, get_qtype, row_bytes

__all__ = ["QTYPES", "QType", "dequantize", "get_qtype", "quantize", "row_bytes"]
