"""Configuration of the selection step: targets, thresholds, weights and the catastrophic guard.

A plain dataclass (no Hydra import): the runner registers :class:`SelectionConfig` in Hydra's
ConfigStore under ``selection``; ``sweeps/`` and tests build it directly or with
:meth:`SelectionConfig.from_mapping`. :meth:`SelectionConfig.validate` checks every field once and
raises :class:`SelectionConfigError` naming the field and the valid range or choices.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# The strategies that pick one candidate among those that pass (see ``sweeps.selection``).
STRATEGIES = ("smallest_passing", "best_score", "best_efficiency")

# Known metric directions; others must be declared in ``SelectionConfig.directions``.
LOWER_IS_BETTER = ("perplexity", "kld_mean", "kld_median", "kld_p99", "kld_max")
HIGHER_IS_BETTER = ("top1_agreement", "score")
DIRECTIONS = ("lower", "higher")

# Size units accepted by ``size_target``: factor to megabytes (1 MB = 10**6 bytes, as size_mb).
SIZE_UNITS_TO_MB = {
    "b": 1e-6,
    "kb": 1e-3,
    "mb": 1.0,
    "gb": 1e3,
    "tb": 1e6,
    "kib": 1024 / 1e6,
    "mib": 1024**2 / 1e6,
    "gib": 1024**3 / 1e6,
}
BPW_UNIT = "bpw"
DEFAULT_WEIGHTS = {"perplexity": 0.5, "top1_agreement": 0.5}
_TARGET_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]+)\s*$")


class SelectionConfigError(ValueError):
    """A selection setting is out of range or unknown; the message names the field."""


def did_you_mean(name: str, choices: tuple[str, ...] | list[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for a close match, else an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class SizeTarget:
    """A parsed size budget: ``value`` in megabytes (``unit == "mb"``) or bits per weight."""

    value: float
    unit: str
    text: str

    def measure(self, size_mb: float | None, bits_per_weight: float | None) -> float | None:
        """The candidate's size in this target's unit (None when the result lacks it)."""
        return bits_per_weight if self.unit == BPW_UNIT else size_mb

    def describe(self) -> str:
        if self.unit == BPW_UNIT:
            return f"<= {self.value:g} bits/weight"
        return f"<= {self.value:g} MB"


def parse_size_target(text: str | float | int | None) -> SizeTarget | None:
    """Parse ``"500MB"``, ``"1.2GB"``, ``"800 MiB"`` or ``"4.5bpw"``; None/"" means no target."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none", "null")):
        return None
    match = _TARGET_RE.match(str(text))
    if match is None:
        raise SelectionConfigError(
            f"selection.size_target={text!r} is not '<number><unit>'; examples: '500MB', "
            f"'1.2GB', '4.5bpw'; units: {', '.join([*SIZE_UNITS_TO_MB, BPW_UNIT])}"
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    if number <= 0 or not math.isfinite(number):
        raise SelectionConfigError(f"selection.size_target={text!r} must be > 0")
    if unit == BPW_UNIT:
        if number > 32:
            raise SelectionConfigError(
                f"selection.size_target={text!r}: bits per weight must be in (0, 32]"
            )
        return SizeTarget(number, BPW_UNIT, str(text))
    if unit not in SIZE_UNITS_TO_MB:
        choices = (*SIZE_UNITS_TO_MB, BPW_UNIT)
        raise SelectionConfigError(
            f"selection.size_target={text!r}: unknown unit '{match.group(2)}'"
            f"{did_you_mean(unit, choices)}; valid units: {', '.join(choices)}"
        )
    return SizeTarget(number * SIZE_UNITS_TO_MB[unit], "mb", str(text))


@dataclass
class GuardConfig:
    """Catastrophic-failure guard: a candidate that trips it is rejected whatever the weights.

    ``max_ppl_ratio``: perplexity / baseline perplexity (from ``degradation.perplexity + 1``).
    ``max_kld_mean``: mean KL divergence to the baseline in nats.
    ``min_top1_agreement``: percent (0..100) of positions whose argmax matches the baseline.
    Any of them may be null (off). Non-finite metrics and failed jobs always trip the guard.
    """

    max_ppl_ratio: float | None = 3.0
    max_kld_mean: float | None = 1.0
    min_top1_agreement: float | None = None


@dataclass
class SelectionConfig:
    """How candidates of a sweep are judged and one is chosen (see docs/selection.md)."""

    # Rule that picks among passing candidates: smallest_passing | best_score | best_efficiency.
    strategy: str = "smallest_passing"
    # Size budget: "500MB", "1.2GB", "800MiB", "4.5bpw" or null (no size target).
    size_target: str | None = None
    # Quality metric of the Pareto front and of the degradation target.
    primary_metric: str = "perplexity"
    # Max relative degradation of the primary metric vs the baseline (0.07 = 7 %); null = off.
    max_degradation: float | None = 0.07
    # Extra per-metric relative-degradation caps, e.g. {top1_agreement: 0.1}.
    max_degradations: dict[str, float] = field(default_factory=dict)
    # Absolute bounds on metric values, e.g. metric_max: {kld_mean: 0.2}, metric_min: {...}.
    metric_min: dict[str, float] = field(default_factory=dict)
    metric_max: dict[str, float] = field(default_factory=dict)
    # Composite score weights over metrics ("score" = the job's own score); empty = the
    # built-in DEFAULT_WEIGHTS (so a YAML mapping replaces them instead of merging into them).
    weights: dict[str, float] = field(default_factory=dict)
    # Direction of metrics not in the built-in table: {my_metric: higher}.
    directions: dict[str, str] = field(default_factory=dict)
    # Sizes within this relative tolerance count as equal (then the composite score decides);
    # 0 = only identical sizes tie.
    size_tie_tolerance: float = 0.0
    guard: GuardConfig = field(default_factory=GuardConfig)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> SelectionConfig:
        """Build from a dict or DictConfig; unknown keys are errors listing the valid ones."""
        if data is None:
            return cls()
        if isinstance(data, SelectionConfig):
            return data
        data = _to_plain(data)
        if not isinstance(data, Mapping):
            raise SelectionConfigError(f"selection must be a mapping, got {type(data).__name__}")
        valid = [f.name for f in fields(cls)]
        _reject_unknown(data, valid, "selection")
        kwargs = dict(data)
        guard = kwargs.pop("guard", None)
        if isinstance(guard, Mapping):
            _reject_unknown(guard, [f.name for f in fields(GuardConfig)], "selection.guard")
            kwargs["guard"] = GuardConfig(**guard)
        elif isinstance(guard, GuardConfig):
            kwargs["guard"] = guard
        elif guard is not None:
            raise SelectionConfigError("selection.guard must be a mapping")
        return cls(**kwargs)

    def direction(self, metric: str) -> str:
        """``"lower"`` or ``"higher"`` (is better) for ``metric``."""
        if metric in self.directions:
            return self.directions[metric]
        if metric in LOWER_IS_BETTER or metric.startswith("kld"):
            return "lower"
        if metric in HIGHER_IS_BETTER:
            return "higher"
        raise SelectionConfigError(
            f"direction of metric '{metric}' is unknown; add selection.directions.{metric}: "
            f"lower|higher (built-in: {', '.join(LOWER_IS_BETTER + HIGHER_IS_BETTER)})"
        )

    def effective_weights(self) -> dict[str, float]:
        """``weights``, or :data:`DEFAULT_WEIGHTS` when none are given."""
        return dict(self.weights) if self.weights else dict(DEFAULT_WEIGHTS)

    def parsed_size_target(self) -> SizeTarget | None:
        return parse_size_target(self.size_target)

    def validate(self) -> SelectionConfig:
        """Check every field; raise :class:`SelectionConfigError` naming the first bad one."""
        if self.strategy not in STRATEGIES:
            raise SelectionConfigError(
                f"selection.strategy='{self.strategy}' is unknown"
                f"{did_you_mean(self.strategy, STRATEGIES)}; valid: {', '.join(STRATEGIES)}"
            )
        if not self.primary_metric:
            raise SelectionConfigError("selection.primary_metric must be a metric name")
        self.parsed_size_target()
        for name, value in self.directions.items():
            if value not in DIRECTIONS:
                raise SelectionConfigError(
                    f"selection.directions.{name}='{value}' must be one of {', '.join(DIRECTIONS)}"
                )
        self.direction(self.primary_metric)
        _check_range("selection.max_degradation", self.max_degradation, 0.0, None)
        for name, value in self.max_degradations.items():
            _check_range(f"selection.max_degradations.{name}", value, 0.0, None)
        for kind, bounds in (("metric_min", self.metric_min), ("metric_max", self.metric_max)):
            for name, value in bounds.items():
                hi = 100.0 if name == "top1_agreement" else None
                lo = 0.0 if name == "top1_agreement" or name.startswith("kld") else None
                _check_range(f"selection.{kind}.{name}", value, lo, hi, required=True)
        self._validate_weights()
        _check_range("selection.size_tie_tolerance", self.size_tie_tolerance, 0.0, 1.0, True)
        g = self.guard
        _check_range("selection.guard.max_ppl_ratio", g.max_ppl_ratio, 1.0, None)
        _check_range("selection.guard.max_kld_mean", g.max_kld_mean, 0.0, None)
        _check_range("selection.guard.min_top1_agreement", g.min_top1_agreement, 0.0, 100.0)
        return self

    def _validate_weights(self) -> None:
        for name, value in self.weights.items():
            _check_range(f"selection.weights.{name}", value, 0.0, None, required=True)
            self.direction(name)
        if self.weights and sum(self.weights.values()) <= 0:
            raise SelectionConfigError("selection.weights must have at least one weight > 0")


def _check_range(
    name: str, value: Any, lo: float | None, hi: float | None, required: bool = False
) -> None:
    if value is None:
        if required:
            raise SelectionConfigError(f"{name} must be a number, got null")
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SelectionConfigError(f"{name}={value!r} must be a finite number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise SelectionConfigError(f"{name}={value!r} is outside the valid range [{lo_s}, {hi_s}]")


def _reject_unknown(data: Mapping[str, Any], valid: list[str], where: str) -> None:
    for key in data:
        if key not in valid:
            raise SelectionConfigError(
                f"{where}.{key} is not a selection setting{did_you_mean(str(key), valid)}; "
                f"valid: {', '.join(valid)}"
            )


def _to_plain(data: Any) -> Any:
    """DictConfig → dict without importing omegaconf here when it is not needed."""
    if type(data).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(data, resolve=True)
    return data
