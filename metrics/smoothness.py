"""Layer-boundary smoothness of a per-layer statistic (seed 004's Markov smoothness, for LLMs).

Given a statistic ``v_0 .. v_{L-1}`` (one value per layer, or per group of layers), each boundary
``i`` (between ``v_i`` and ``v_{i+1}``) has a relative jump

    j_i = |v_{i+1} - v_i| / max(|v_i|, |v_{i+1}|)        (0 when both are 0), in [0, 1]

boundary score ``b_i = 1 - j_i`` and ``smoothness_score = 1 - mean_i j_i`` (the seed's
``1 - total_jump / max_possible_jump`` with the largest possible jump 1 per boundary); a constant
statistic scores exactly 1. A boundary with ``j_i > threshold`` is a violation; its severity is
``low`` (j <= medium_above), ``medium`` (j <= high_above) or ``high``.

In seed 004 the statistic is indexed by diffusion *time groups* (timesteps grouped into
``num_time_groups``); here it is indexed by decoder layers, optionally pooled into ``num_groups``
contiguous layer groups, which plays the same role: boundaries between consecutive groups.

The default statistic is the per-layer relative error of the hidden states of the quantized
model against the full-precision model on held-out text (``layer_hidden_error``); the per-block
relative weight error (``layer_weight_error``) is the alternative when both models are at hand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

STATISTICS = ("hidden_error", "weight_error")
PATTERNS = (
    "isolated_jump",
    "isolated_spike",
    "early_boundary",
    "late_boundary",
    "uniform_spread",
    "high_severity_jumps",
    "monotone_drift",
)
# Seed 004's interpretation bands of the smoothness score (Dream 7B INT2 over time groups).
BANDS = (
    (0.78, "excellent", "Above the seed's expected baseline range: smooth already."),
    (0.70, "good", "Inside the seed's good baseline range (0.70-0.78)."),
    (0.65, "fair", "Inside the seed's expected range (0.65-0.78) but below 'good'."),
    (-math.inf, "poor", "Below 0.65: consider more bits, smaller groups, or calibration."),
)


@dataclass
class SmoothnessConfig:
    statistic: str = "hidden_error"  # hidden_error | weight_error
    threshold: float = 0.3  # a boundary jump above this is a violation (seed default 0.3)
    medium_above: float = 0.4  # severity medium when jump > this
    high_above: float = 0.5  # severity high when jump > this (seed: "> 50 % jumps")
    num_groups: int | None = None  # pool layers into this many contiguous groups
    seq_len: int = 128  # hidden_error: tokens per window of held-out text
    n_windows: int = 2

    def validate(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(
                f"smoothness.statistic={self.statistic!r}; valid choices: {', '.join(STATISTICS)}"
            )
        if not 0 < self.threshold < self.medium_above < self.high_above < 1:
            raise ValueError(
                "smoothness needs 0 < threshold < medium_above < high_above < 1, got "
                f"{self.threshold}, {self.medium_above}, {self.high_above}"
            )
        if self.num_groups is not None and self.num_groups < 2:
            raise ValueError(f"smoothness.num_groups must be >= 2 or null, got {self.num_groups}")


@dataclass
class SmoothnessReport:
    statistic: str
    values: list[float]
    labels: list[str]
    boundary_jumps: list[float]
    boundary_scores: list[float]
    smoothness_score: float
    violations: list[dict] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    rating: str = ""
    interpretation: str = ""
    config: dict = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        b = np.asarray(self.boundary_scores) if self.boundary_scores else np.ones(1)
        return {
            "smoothness_score": self.smoothness_score,
            "smoothness_violations": float(len(self.violations)),
            "smoothness_high_violations": float(
                sum(v["severity"] == "high" for v in self.violations)
            ),
            "smoothness_boundary_min": float(b.min()),
            "smoothness_boundary_mean": float(b.mean()),
            "smoothness_boundary_std": float(b.std()),
        }


# ----------------------------------------------------------------------------- analysis


def boundary_jumps(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) < 2 or not np.all(np.isfinite(v)):
        raise ValueError("smoothness needs a 1-D finite statistic with at least 2 values")
    a, b = v[:-1], v[1:]
    scale = np.maximum(np.abs(a), np.abs(b))
    diff = np.abs(b - a)
    return np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0).clip(0.0, 1.0)


def group_values(values: Sequence[float], num_groups: int) -> tuple[np.ndarray, list[str]]:
    """Mean of the statistic over ``num_groups`` contiguous groups of layers, and group labels."""
    v = np.asarray(values, dtype=np.float64)
    if num_groups > len(v):
        raise ValueError(f"num_groups={num_groups} exceeds the number of layers ({len(v)})")
    parts = np.array_split(np.arange(len(v)), num_groups)
    return (
        np.array([v[p].mean() for p in parts]),
        [f"layers {p[0]}-{p[-1]}" if len(p) > 1 else f"layer {p[0]}" for p in parts],
    )


def severity(jump: float, cfg: SmoothnessConfig) -> str:
    return "high" if jump > cfg.high_above else "medium" if jump > cfg.medium_above else "low"


def detect_patterns(values: np.ndarray, violations: list[dict], threshold: float) -> list[str]:
    """Named patterns (see docs/metrics.md); several can apply at once."""
    n_b = len(values) - 1
    idx = [v["boundary"] for v in violations]
    found = []
    if len(idx) == 1:
        found.append("isolated_jump")
    for a, b in zip(violations, violations[1:], strict=False):
        if b["boundary"] == a["boundary"] + 1 and a["direction"] != b["direction"]:
            found.append("isolated_spike")
            break
    edge = max(1, n_b // 4)
    if any(i < edge for i in idx):
        found.append("early_boundary")
    if any(i >= n_b - edge for i in idx):
        found.append("late_boundary")
    if n_b >= 4 and len(idx) >= 3:
        quarters = {min(3, 4 * i // n_b) for i in idx}
        if len(quarters) >= 3 or len(idx) >= n_b / 2:
            found.append("uniform_spread")
    if 0 < len(idx) <= 2 and any(v["severity"] == "high" for v in violations):
        found.append("high_severity_jumps")
    diffs = np.diff(values)
    total = abs(values[-1] - values[0]) / max(np.abs(values).max(), 1e-300)
    monotone = bool(np.all(diffs >= 0) or np.all(diffs <= 0))
    if not violations and monotone and total > threshold:
        found.append("monotone_drift")
    return found


def interpret(score: float) -> tuple[str, str]:
    for lo, rating, text in BANDS:
        if score > lo or lo == -math.inf:
            return rating, text
    raise AssertionError("unreachable")


def analyze(
    values: Sequence[float],
    cfg: SmoothnessConfig | None = None,
    labels: Sequence[str] | None = None,
) -> SmoothnessReport:
    """Smoothness score, violations, patterns and interpretation of a per-layer statistic."""
    cfg = cfg or SmoothnessConfig()
    cfg.validate()
    v = np.asarray(values, dtype=np.float64)
    labels = list(labels) if labels is not None else [f"layer {i}" for i in range(len(v))]
    if cfg.num_groups:
        v, labels = group_values(v, cfg.num_groups)
    jumps = boundary_jumps(v)
    violations = [
        {
            "boundary": int(i),
            "between": [labels[i], labels[i + 1]],
            "from_value": float(v[i]),
            "to_value": float(v[i + 1]),
            "jump": float(j),
            "severity": severity(float(j), cfg),
            "direction": "up" if v[i + 1] > v[i] else "down",
        }
        for i, j in enumerate(jumps)
        if j > cfg.threshold
    ]
    score = float(1.0 - jumps.mean())
    rating, text = interpret(score)
    return SmoothnessReport(
        statistic=cfg.statistic,
        values=[float(x) for x in v],
        labels=labels,
        boundary_jumps=[float(j) for j in jumps],
        boundary_scores=[float(1.0 - j) for j in jumps],
        smoothness_score=score,
        violations=violations,
        patterns=detect_patterns(v, violations, cfg.threshold),
        rating=rating,
        interpretation=text,
        config=asdict(cfg),
    )


# ----------------------------------------------------------------------------- statistics


@dataclass
class SmoothnessBaseline:
    """Full-precision hidden states of every layer on a few held-out windows."""

    input_ids: torch.Tensor  # (n, T)
    hidden: torch.Tensor  # (L, n, T, d) float32, output of each decoder layer

    def save(self, path: str | Path) -> None:
        torch.save(vars(self), path)

    @classmethod
    def load(cls, path: str | Path) -> SmoothnessBaseline:
        return cls(**torch.load(path, weights_only=True))


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's list of decoder blocks (the longest ``layers`` / ``h`` / ``blocks`` list)."""
    best = None
    names = ("layers", "h", "blocks")
    for name, mod in model.named_modules():
        is_blocks = isinstance(mod, torch.nn.ModuleList) and name.split(".")[-1] in names
        if is_blocks and (best is None or len(mod) > len(best)):
            best = mod
    if best is None:
        raise ValueError("could not find the decoder layers (a ModuleList named layers/h/blocks)")
    return best


@torch.inference_mode()
def layer_hidden_states(model, input_ids: torch.Tensor) -> torch.Tensor:
    """(L, n, T, d): the raw output of each decoder block, captured with forward hooks.

    Hooks rather than HF ``hidden_states`` because HF's last entry is taken after the final
    norm, which would put an artificial jump at the last boundary.
    """
    outs: list[torch.Tensor] = []

    def hook(_mod, _inp, out):
        outs.append((out[0] if isinstance(out, tuple) else out).detach().float())

    handles = [blk.register_forward_hook(hook) for blk in decoder_layers(model)]
    try:
        model(input_ids)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(outs)


def baseline_smoothness(fp_model, tokenizer, cfg: SmoothnessConfig) -> SmoothnessBaseline:
    from metrics.embedding import _windows, default_sentences

    cfg.validate()
    ids = _windows(tokenizer, default_sentences(256), cfg.seq_len, cfg.n_windows)
    return SmoothnessBaseline(input_ids=ids, hidden=layer_hidden_states(fp_model, ids))


def layer_hidden_error(model, baseline: SmoothnessBaseline) -> np.ndarray:
    """Per layer: ||h_q - h_fp||_F / ||h_fp||_F over all tokens of the baseline windows."""
    hq = layer_hidden_states(model, baseline.input_ids)
    if hq.shape != baseline.hidden.shape:
        raise ValueError(
            f"hidden states {tuple(hq.shape)} != baseline {tuple(baseline.hidden.shape)}"
        )
    diff = (hq - baseline.hidden).flatten(1).norm(dim=1)
    return (diff / baseline.hidden.flatten(1).norm(dim=1).clamp(min=1e-30)).double().numpy()


def _block_index(name: str) -> int | None:
    parts = name.split(".")
    for a, b in zip(parts, parts[1:], strict=False):
        if a in ("layers", "h", "layer", "blocks") and b.isdigit():
            return int(b)
    return None


@torch.no_grad()
def layer_weight_error(fp_model, q_model) -> np.ndarray:
    """Per decoder block: ||W_q - W_fp||_F / ||W_fp||_F over all its nn.Linear weights."""
    fp = dict(fp_model.named_modules())
    num: dict[int, float] = {}
    den: dict[int, float] = {}
    for name, mod in q_model.named_modules():
        i = _block_index(name)
        if i is None or not isinstance(mod, torch.nn.Linear) or name not in fp:
            continue
        w_fp = fp[name].weight.double()
        num[i] = num.get(i, 0.0) + float((mod.weight.double() - w_fp).pow(2).sum())
        den[i] = den.get(i, 0.0) + float(w_fp.pow(2).sum())
    if not num:
        raise ValueError("no decoder-block nn.Linear weights found in the model")
    return np.array([math.sqrt(num[i] / max(den[i], 1e-300)) for i in sorted(num)])


def run_smoothness(
    model,
    tokenizer,
    cfg: SmoothnessConfig,
    baseline: SmoothnessBaseline | None = None,
    fp_model=None,
    out_dir: str | Path | None = None,
    title: str = "Layer smoothness",
) -> dict[str, float]:
    """Smoothness metrics of the quantized ``model``; JSON + HTML reports into ``out_dir``."""
    cfg.validate()
    if cfg.statistic == "hidden_error":
        if baseline is None:
            raise ValueError("smoothness.statistic=hidden_error needs the fp baseline")
        values = layer_hidden_error(model, baseline)
    else:
        if fp_model is None:
            raise ValueError("smoothness.statistic=weight_error needs fp_model")
        values = layer_weight_error(fp_model, model)
    report = analyze(values, cfg)
    if out_dir is not None:
        write_reports(report, Path(out_dir), title)
    return report.metrics()


# ----------------------------------------------------------------------------- reports


def write_reports(report: SmoothnessReport, out_dir: Path, title: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    j = out_dir / "smoothness.json"
    j.write_text(json.dumps({**asdict(report), "metrics": report.metrics()}, indent=1))
    h = out_dir / "smoothness.html"
    h.write_text(render_html(report, title), encoding="utf-8")
    return j, h


def plot(report: SmoothnessReport):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=False)
    x = np.arange(len(report.values))
    ax1.plot(x, report.values, marker="o", color="#1565c0")
    ax1.set_ylabel(report.statistic)
    ax1.set_title(f"smoothness score {report.smoothness_score:.3f} ({report.rating})")
    colors = {"low": "#f9a825", "medium": "#ef6c00", "high": "#c62828"}
    for v in report.violations:
        ax1.axvspan(v["boundary"], v["boundary"] + 1, color=colors[v["severity"]], alpha=0.25)
    bx = np.arange(len(report.boundary_jumps)) + 0.5
    sev = {v["boundary"]: v["severity"] for v in report.violations}
    ax2.bar(
        bx,
        report.boundary_jumps,
        width=0.8,
        color=[colors.get(sev.get(i, ""), "#90a4ae") for i in range(len(bx))],
    )
    cfg = report.config
    for y, ls in ((cfg["threshold"], "-"), (cfg["medium_above"], "--"), (cfg["high_above"], ":")):
        ax2.axhline(y, color="k", lw=0.8, ls=ls)
    ax2.set_ylabel("relative jump")
    ax2.set_xlabel("layer index (bars: boundaries between consecutive layers/groups)")
    fig.tight_layout()
    return fig


def render_html(report: SmoothnessReport, title: str) -> str:
    from metrics.report_html import figure_png_base64, img_tag, page, table

    m = report.metrics()
    summary = table(["metric", "value"], [[k, v] for k, v in m.items()])
    viol = (
        table(
            ["boundary", "between", "from", "to", "jump", "severity"],
            [
                [
                    v["boundary"],
                    " / ".join(v["between"]),
                    v["from_value"],
                    v["to_value"],
                    v["jump"],
                    v["severity"],
                ]
                for v in report.violations
            ],
            row_classes=[v["severity"] for v in report.violations],
        )
        if report.violations
        else "<p>No violations.</p>"
    )
    body = (
        f'<p><span class="badge {report.rating}">{report.rating}</span> '
        f"smoothness score {report.smoothness_score:.4f}: {report.interpretation}</p>"
        f"<p>Statistic: <b>{report.statistic}</b>; patterns: "
        f"{', '.join(report.patterns) or 'none'}</p>"
        f"{img_tag(figure_png_base64(plot(report)), 'statistic and boundary jumps')}"
        f"<h2>Summary</h2>{summary}<h2>Violations</h2>{viol}"
    )
    return page(title, body)
