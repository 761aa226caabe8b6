"""Layer-boundary smoothness: known answers of the definitions, reports, real tiny model."""

from __future__ import annotations

import base64
import copy
import json
import math

import numpy as np
import pytest
import torch

from metrics.smoothness import (
    SmoothnessConfig,
    analyze,
    baseline_smoothness,
    boundary_jumps,
    layer_weight_error,
    run_smoothness,
    write_reports,
)


def test_constant_statistic_scores_one():
    r = analyze([0.25] * 12)
    assert r.smoothness_score == 1.0
    assert r.violations == [] and r.patterns == []
    assert r.boundary_scores == [1.0] * 11


def test_all_zero_statistic_scores_one():
    assert analyze([0.0, 0.0, 0.0]).smoothness_score == 1.0


def test_step_at_one_boundary_is_one_medium_violation():
    # Step 1 -> 2 between layer 2 and 3: jump |2-1|/2 = 0.5 -> medium (0.4 < 0.5 <= 0.5).
    r = analyze([1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    assert len(r.violations) == 1
    v = r.violations[0]
    assert v["boundary"] == 2 and v["jump"] == 0.5 and v["severity"] == "medium"
    assert v["direction"] == "up"
    assert r.patterns == ["isolated_jump"]
    assert math.isclose(r.smoothness_score, 1 - 0.5 / 5)


@pytest.mark.parametrize(("to", "sev"), [(1.5, "low"), (1.7, "medium"), (3.0, "high")])
def test_severity_levels_follow_the_bounds(to, sev):
    # jump = (to - 1) / to: 0.333 (low, <= 0.4), 0.412 (medium, <= 0.5), 0.667 (high)
    r = analyze([1.0, 1.0, to, to])
    assert [v["severity"] for v in r.violations] == [sev]


def test_spike_is_detected_with_high_severity():
    r = analyze([1, 1, 1, 1, 4, 1, 1, 1, 1])
    assert [v["boundary"] for v in r.violations] == [3, 4]
    assert "isolated_spike" in r.patterns and "high_severity_jumps" in r.patterns


def test_monotone_drift_without_violations():
    values = [1.0 * 1.15**i for i in range(10)]  # jumps 0.13 each, total change 0.72
    r = analyze(values)
    assert r.violations == [] and r.patterns == ["monotone_drift"]


def test_uniform_spread():
    values = [1, 2] * 6  # every boundary jumps by 0.5
    r = analyze(values)
    assert len(r.violations) == 11 and "uniform_spread" in r.patterns
    assert math.isclose(r.smoothness_score, 0.5) and r.rating == "poor"


def test_groups_pool_layers():
    r = analyze([1, 1, 1, 1, 2, 2, 2, 2], SmoothnessConfig(num_groups=2))
    assert r.values == [1.0, 2.0] and r.labels == ["layers 0-3", "layers 4-7"]
    assert len(r.violations) == 1


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="statistic"):
        analyze([1, 2], SmoothnessConfig(statistic="nope"))
    with pytest.raises(ValueError, match="threshold"):
        analyze([1, 2], SmoothnessConfig(threshold=0.6))
    with pytest.raises(ValueError, match="at least 2"):
        boundary_jumps([1.0])


def test_reports_json_and_html_with_embedded_png(tmp_path):
    r = analyze([1, 1, 1, 3, 3, 3])
    j, h = write_reports(r, tmp_path, "step")
    data = json.loads(j.read_text())
    assert data["violations"][0]["severity"] == "high" and data["metrics"]["smoothness_score"]
    page = h.read_text()
    marker = "data:image/png;base64,"
    assert marker in page and "<table>" in page and "high" in page
    b64 = page.split(marker, 1)[1].split('"', 1)[0]
    assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- tiny real model


def _rtn(model, bits: int, layers: set[int] | None = None):
    """Per-output-channel symmetric round-to-nearest of nn.Linear weights (optionally some layers)."""
    q = copy.deepcopy(model)
    qmax = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for name, mod in q.named_modules():
            if not isinstance(mod, torch.nn.Linear) or "lm_head" in name:
                continue
            if layers is not None and not any(f"layers.{i}." in name for i in layers):
                continue
            s = mod.weight.abs().amax(1, keepdim=True).clamp(min=1e-12) / qmax
            mod.weight.copy_((mod.weight / s).round().clamp(-qmax - 1, qmax) * s)
    return q


@pytest.fixture(scope="module")
def tiny(make_tiny_llama):
    return make_tiny_llama(num_hidden_layers=4)


def test_hidden_error_of_the_fp_model_itself_is_zero(tiny, tmp_path):
    model, tok = tiny
    cfg = SmoothnessConfig(seq_len=32, n_windows=1)
    base = baseline_smoothness(model, tok, cfg)
    m = run_smoothness(model, tok, cfg, base, out_dir=tmp_path)
    assert m["smoothness_score"] == 1.0 and m["smoothness_violations"] == 0
    assert (tmp_path / "smoothness.html").exists()
    q = run_smoothness(_rtn(model, 3), tok, cfg, base)
    assert all(np.isfinite(v) for v in q.values()) and 0 <= q["smoothness_score"] <= 1


def test_weight_error_marks_the_one_coarsely_quantized_layer(tiny):
    model, _ = tiny
    q = _rtn(_rtn(model, 8), 2, layers={2})  # int8 everywhere, int2 in layer 2
    err = layer_weight_error(model, q)
    assert len(err) == 4 and int(np.argmax(err)) == 2
    r = analyze(err)
    assert [v["boundary"] for v in r.violations] == [1, 2]
    assert "isolated_spike" in r.patterns
