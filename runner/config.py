"""Structured configs: one dataclass per config group, registered in Hydra's ConfigStore.

Hydra merges the YAML of each group onto these schemas, so an unknown key or a value of the wrong
type is rejected while composing. ``validate()`` then checks every value once, before any work
starts, and raises :class:`ConfigError` naming the field and the valid choices.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from sweeps.selection_config import SelectionConfig

MODEL_SOURCES = ("tiny", "gguf", "hf", "package")
MODEL_KINDS = ("causal_lm", "encoder")
QUANT_KINDS = ("int", "gguf", "none")
GRANULARITIES = ("per_tensor", "per_channel", "per_group")
METHODS = ("rtn", "gptq")
TRACKING_MODES = ("offline", "online", "disabled")
EXPORTS = ("none", "gguf")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the valid choices."""


def choice_error(field_name: str, value: Any, choices: tuple[str, ...] | list[str]) -> ConfigError:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(
        f"{field_name}={value!r} is not valid{hint}; valid choices: {', '.join(choices)}"
    )


def check_choice(field_name: str, value: Any, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise choice_error(field_name, value, choices)


def check_range(field_name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{field_name}={value!r} is outside the valid range [{lo:g}, {hi:g}]")


@dataclass
class TinyLlamaDims:
    """Dimensions of the config-built test Llama (multiples of 256 so k-quants apply)."""

    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    initializer_range: float = 0.08
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = MISSING
    # tiny: built from `tiny` dims; gguf: a .gguf file; hf: a transformers directory;
    # package: a GGUF shipped inside an installed PyPI package (`package` + `file`).
    source: str = "hf"
    kind: str = "causal_lm"
    path: str | None = None
    package: str | None = None
    file: str | None = None
    tiny: TinyLlamaDims = field(default_factory=TinyLlamaDims)

    def validate(self) -> None:
        check_choice("model.source", self.source, MODEL_SOURCES)
        check_choice("model.kind", self.kind, MODEL_KINDS)
        if self.source in ("gguf", "hf") and not self.path:
            raise ConfigError(f"model.path is required when model.source={self.source}")
        if self.source == "package" and not (self.package and self.file):
            raise ConfigError("model.package and model.file are required when source=package")


@dataclass
class QuantConfig:
    """One quantization level: an integer grid (int8..int2) or a llama.cpp file type."""

    name: str = MISSING
    kind: str = "int"
    bits: int = 4
    granularity: str = "per_group"
    group_size: int = 128
    symmetric: bool = True
    # llama.cpp file type (q4_K_M, ...) when kind=gguf
    ftype: str | None = None

    def validate(self) -> None:
        check_choice("quant.kind", self.kind, QUANT_KINDS)
        if self.kind == "int":
            if not 2 <= self.bits <= 8:
                raise ConfigError(f"quant.bits={self.bits} is outside the valid range 2..8")
            check_choice("quant.granularity", self.granularity, GRANULARITIES)
            if self.granularity == "per_group" and self.group_size < 2:
                raise ConfigError(f"quant.group_size={self.group_size} must be >= 2")
        if self.kind == "gguf" and not self.ftype:
            raise ConfigError("quant.ftype is required when quant.kind=gguf")


@dataclass
class MethodConfig:
    """How weights are rounded: round-to-nearest, or GPTQ with calibration data."""

    name: str = "rtn"
    act_order: bool = False
    static_groups: bool = False
    true_sequential: bool = True
    damp_percent: float = 0.01
    block_size: int = 128
    mse: bool = False
    calib_dataset: str = "wiki"
    calib_files: list[str] = field(default_factory=list)
    n_samples: int = 128
    seq_len: int = 512
    seed: int = 0

    def validate(self) -> None:
        check_choice("method.name", self.name, METHODS)
        check_range("method.damp_percent", self.damp_percent, 0.0, 1.0)
        if self.block_size < 1 or self.n_samples < 1 or self.seq_len < 2:
            raise ConfigError("method.block_size, n_samples must be >= 1 and seq_len >= 2")


@dataclass
class EvalConfig:
    """Perplexity and KL divergence on fixed windows of held-out text."""

    name: str = MISSING
    text_files: list[str] = field(default_factory=list)  # default: packaged Wikipedia eval split
    seq_len: int = 256
    n_windows: int = 8
    batch_size: int = 1
    # Extra suites beyond perplexity/KLD: tasks, embedding, emotional, smoothness (runner/suites.py)
    suites: list[str] = field(default_factory=list)
    # Per-suite settings, passed to the suite's config dataclass in metrics/ (docs/metrics.md)
    suite_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> None:
        if self.seq_len < 8:
            raise ConfigError(f"eval.seq_len={self.seq_len} must be >= 8")
        if self.n_windows < 1 or self.batch_size < 1:
            raise ConfigError("eval.n_windows and eval.batch_size must be >= 1")
        if self.suites or self.suite_options:
            from runner.suites import suite_configs

            suite_configs(self.suites, self.suite_options)


@dataclass
class TrackingConfig:
    mode: str = "offline"
    project: str = "quantloop"
    entity: str | None = None
    store: bool = True  # index results in the local SQLite store

    def validate(self) -> None:
        check_choice("tracking.mode", self.mode, TRACKING_MODES)


@dataclass
class PathsConfig:
    cache: str = "${oc.env:QUANTLOOP_CACHE,'~/.cache/quantloop'}"
    store: str = "${oc.env:QUANTLOOP_STORE,${paths.cache}/store.sqlite}"
    outputs: str = "${oc.env:QUANTLOOP_OUTPUTS,outputs}"


@dataclass
class RunnerConfig:
    wait_for_idle: bool = False
    idle_max_load: float = 0.5  # 1-minute load average per core
    idle_poll_s: float = 30.0
    idle_timeout_s: float = 3600.0  # then the job starts anyway, with a warning
    threads: int = 0  # 0 = all cores / jobs (see docs)
    log_level: str = "INFO"

    def validate(self) -> None:
        check_choice("runner.log_level", self.log_level, LOG_LEVELS)
        if self.threads < 0:
            raise ConfigError(f"runner.threads={self.threads} must be >= 0 (0 = automatic)")


@dataclass
class Config:
    model: ModelConfig = MISSING
    quant: QuantConfig = MISSING
    method: MethodConfig = MISSING
    eval: EvalConfig = MISSING
    tracking: TrackingConfig = MISSING
    selection: SelectionConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    seed: int = 0
    force: bool = False
    export: str = "none"
    sweep_name: str = MISSING

    def validate(self) -> Config:
        for part in (self.model, self.quant, self.method, self.eval, self.tracking, self.runner):
            part.validate()
        self.selection.validate()
        check_choice("export", self.export, EXPORTS)
        if self.export == "gguf" and self.quant.kind != "gguf":
            raise ConfigError(
                f"export=gguf needs a llama.cpp quant level (quant.kind=gguf), got quant={self.quant.name}"
            )
        if self.method.name == "gptq" and self.quant.kind == "none":
            raise ConfigError("method=gptq needs a quantized level, not quant.kind=none")
        if self.method.name == "gptq":
            self._check_gptq_groups()
        return self

    def _check_gptq_groups(self) -> None:
        m, q = self.method, self.quant
        grouped = q.kind == "gguf" or q.granularity == "per_group"
        if m.act_order and grouped and not m.static_groups:
            raise ConfigError(
                "method.act_order=true with per-group or llama.cpp block scales needs "
                "method.static_groups=true (the stored groups keep the original column order); "
                "valid: act_order=false, or act_order=true static_groups=true"
            )
        if q.kind == "int" and q.granularity == "per_group":
            gs, bs = q.group_size, m.block_size
            if bs % gs and gs % bs:
                raise ConfigError(
                    f"method.block_size={bs} and quant.group_size={gs} must divide one another "
                    "(so every group starts inside one block); e.g. block_size=128 with group "
                    "sizes 32, 64, 128 or 256"
                )


def job_dirname(model: str, quant: str, method: str, overrides: str) -> str:
    """A job directory name that is stable for the same overrides (so sweeps can resume)."""
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:6]
    return f"{model}_{quant}_{method}_{digest}"


def register_configs() -> None:
    if not OmegaConf.has_resolver("job_dirname"):
        OmegaConf.register_new_resolver("job_dirname", job_dirname)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)


def _reject_unknown_keys(node: DictConfig, where: str = "") -> None:
    """Keys added with ``+group.key=...`` bypass the schema; refuse them by name."""
    schema = OmegaConf.get_type(node)
    if is_dataclass(schema):
        valid = [f.name for f in fields(schema)]
        for key in node:
            if key not in valid and not (not where and key == "hydra"):
                raise choice_error(f"{where}{key} (unknown setting)", key, valid)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            _reject_unknown_keys(child, f"{where}{key}.")


def to_config(cfg: DictConfig) -> Config:
    """Resolve and validate a composed config; the typed object every job works from."""
    _reject_unknown_keys(cfg)
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, Config)
    return obj.validate()
