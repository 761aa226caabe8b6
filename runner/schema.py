"""The versioned schema of ``result.json``, the record every job writes.

Other code (selection, the store, the dashboard) and users' scripts read these top-level keys.
A change that removes or renames a key bumps ``SCHEMA_VERSION``.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = "1"

CORE_METRICS = ("perplexity", "kld_mean", "kld_median", "kld_p99", "kld_max", "top1_agreement")

_num = {"type": "number"}
_opt_num = {"type": ["number", "null"]}

RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "quantloop job result",
    "type": "object",
    "required": [
        "schema_version",
        "id",
        "status",
        "model_name",
        "quant_format",
        "method",
        "size_mb",
        "bits_per_weight",
        "compression_ratio",
        "passed_threshold",
        "score",
        "metrics",
        "degradation",
        "thresholds",
        "duration_seconds",
        "memory_peak_mb",
        "cpu_avg_percent",
        "error_count",
        "errors",
        "timestamp",
        "config_hash",
        "seed",
        "sweep_id",
        "job_dir",
        "versions",
        "git_hash",
    ],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "id": {"type": "string", "minLength": 1},
        "status": {"enum": ["ok", "failed"]},
        "model_name": {"type": "string"},
        "quant_format": {"type": "string"},
        "method": {"type": "string"},
        "size_mb": _opt_num,
        "bits_per_weight": _opt_num,
        "compression_ratio": _opt_num,
        "passed_threshold": {"type": "boolean"},
        "score": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "metrics": {"type": "object", "additionalProperties": _opt_num},
        "baseline": {"type": "object", "additionalProperties": _opt_num},
        "degradation": {"type": "object", "additionalProperties": _opt_num},
        "thresholds": {"type": "object"},
        "duration_seconds": _num,
        "memory_peak_mb": _num,
        "cpu_avg_percent": _num,
        "error_count": {"type": "integer", "minimum": 0},
        "errors": {"type": "array", "items": {"type": "string"}},
        "timestamp": {"type": "string", "format": "date-time"},
        "config_hash": {"type": "string", "minLength": 8},
        "seed": {"type": "integer"},
        "sweep_id": {"type": ["string", "null"]},
        "job_dir": {"type": "string"},
        "versions": {"type": "object", "additionalProperties": {"type": "string"}},
        "git_hash": {"type": ["string", "null"]},
    },
}


def validate_result(result: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``result`` does not follow the schema."""
    import jsonschema

    jsonschema.validate(result, RESULT_SCHEMA)
