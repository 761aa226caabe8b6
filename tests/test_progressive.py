"""The progressive Pass-1 loop: ladder logic, the Hydra sweeper plugin on tiny_llama, idle wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps import last_results
from sweeps.idle import current_load, wait_for_idle
from sweeps.progressive import JobOutcome, LadderPlan, run_ladder, write_summary
from sweeps.selection_config import SelectionConfig, SelectionConfigError

REPO = Path(__file__).resolve().parents[1]


def _result(level: str, size_mb: float, ppl_deg: float, kld: float) -> dict:
    return {
        "id": f"job_{level}",
        "model_name": "m",
        "quant_format": level,
        "method": "rtn",
        "status": "ok",
        "size_mb": size_mb,
        "bits_per_weight": size_mb / 10,
        "score": 0.9,
        "metrics": {"perplexity": 10 * (1 + ppl_deg), "kld_mean": kld, "top1_agreement": 90.0},
        "degradation": {"perplexity": ppl_deg},
    }


class _Ladder:
    """A launch() over prepared outcomes that records what was launched."""

    def __init__(self, outcomes: dict[str, JobOutcome]):
        self.outcomes = outcomes
        self.launched: list[tuple[list[str], int]] = []

    def __call__(self, overrides: list[str], index: int) -> JobOutcome:
        self.launched.append((overrides, index))
        level = overrides[-1].split("=", 1)[1]
        return self.outcomes[level]


def _outcomes(**levels) -> dict[str, JobOutcome]:
    return {
        name: JobOutcome(job_dir=f"d/{name}", result=_result(name, *vals))
        for name, vals in levels.items()
    }


# --------------------------------------------------------------------------- ladder logic


def test_stops_at_first_level_meeting_targets_not_assuming_monotonic_quality():
    # b misses the quality target although c (smaller) meets it: quality is not monotonic.
    launch = _Ladder(
        _outcomes(a=(100, 0.01, 0.01), b=(60, 0.12, 0.2), c=(40, 0.05, 0.1), d=(20, 0.02, 0.1))
    )
    plan = LadderPlan(levels=["a", "b", "c", "d"], fixed_overrides=["model=x"])
    summary = run_ladder(plan, SelectionConfig(size_target="70MB"), launch)
    assert [o for o, _ in launch.launched] == [
        ["model=x", "quant=a"],
        ["model=x", "quant=b"],
        ["model=x", "quant=c"],
    ]
    assert [i for _, i in launch.launched] == [0, 1, 2]
    assert summary["target_achieved"] and summary["best_level"] == "c"
    assert summary["message"] == "target achieved at c"
    assert summary["statistics"]["levels_tried"] == 3
    assert [it["passed"] for it in summary["iterations"]] == [False, False, True]
    assert summary["iterations"][1]["reasons"] == ["perplexity degradation +12.00% > max 7.00%"]


def test_failed_job_is_recorded_and_the_loop_continues():
    outcomes = _outcomes(a=(100, 0.01, 0.01), c=(40, 0.05, 0.1))
    outcomes["b"] = JobOutcome(job_dir="d/b", error="RuntimeError: out of memory")
    summary = run_ladder(
        LadderPlan(levels=["a", "b", "c"]), SelectionConfig(size_target="50MB"), _Ladder(outcomes)
    )
    failed = summary["iterations"][1]
    assert failed["status"] == "failed" and not failed["passed"]
    assert failed["reasons"] == ["job failed: RuntimeError: out of memory"]
    assert summary["statistics"]["jobs_failed"] == 1
    assert summary["best_level"] == "c"


def test_unreachable_target_tries_whole_ladder():
    launch = _Ladder(_outcomes(a=(100, 0.01, 0.01), b=(60, 0.03, 0.05), c=(40, 2.5, 0.1)))
    summary = run_ladder(
        LadderPlan(levels=["a", "b", "c"]), SelectionConfig("smallest_passing", "10MB"), launch
    )
    assert len(launch.launched) == 3
    assert not summary["target_achieved"]
    assert summary["message"] == "target not achieved"
    assert summary["stopped_because"] == "ladder exhausted"
    # The reported best is never the catastrophic level c (perplexity x3.5).
    assert summary["best_level"] == "a"
    assert summary["best_rule"].startswith("target not achieved")


def test_max_iterations_limits_the_ladder():
    launch = _Ladder(_outcomes(a=(100, 0.01, 0.01), b=(60, 0.03, 0.05), c=(40, 0.05, 0.1)))
    plan = LadderPlan(levels=["a", "b", "c"], max_iterations=2)
    summary = run_ladder(plan, SelectionConfig(size_target="50MB"), launch)
    assert len(launch.launched) == 2
    assert summary["stopped_because"] == "max_iterations=2 reached"
    assert summary["statistics"]["levels_planned"] == 2


def test_quality_fails_mode_descends_and_picks_smallest_passing():
    launch = _Ladder(
        _outcomes(
            a=(100, 0.01, 0.01),
            b=(60, 0.03, 0.05),
            c=(40, 0.05, 0.1),
            d=(20, 0.3, 0.4),
            e=(10, 0.01, 0.01),
        )
    )
    plan = LadderPlan(levels=["a", "b", "c", "d", "e"], stop_when="quality_fails")
    summary = run_ladder(plan, SelectionConfig(), launch)
    assert len(launch.launched) == 4  # stops at d, the first failure after passes
    assert summary["best_level"] == "c"
    assert summary["stopped_because"] == "level d fails after a passing level"


@pytest.mark.parametrize(
    ("plan", "fragment"),
    [
        (LadderPlan(levels=[]), "hydra.sweeper.ladder"),
        (LadderPlan(levels=["a", "a"]), "duplicates"),
        (LadderPlan(max_iterations=0), "hydra.sweeper.max_iterations"),
        (LadderPlan(stop_when="target_met"), "did you mean 'targets_met'"),
    ],
)
def test_bad_ladder_settings(plan, fragment):
    with pytest.raises(SelectionConfigError, match=fragment):
        plan.validate()


def test_summary_file_and_last_results(tmp_path, capsys):
    launch = _Ladder(_outcomes(a=(100, 0.01, 0.01), b=(60, 0.03, 0.05)))
    summary = run_ladder(LadderPlan(levels=["a", "b"]), SelectionConfig(size_target="70MB"), launch)
    sweep = tmp_path / "sweeps" / "s1"
    path = write_summary(sweep, summary)
    assert path.name.startswith("pass1_summary_") and path.suffix == ".json"
    saved = json.loads(path.read_text())
    assert saved["best"]["id"] == "job_b" and saved["target_achieved"] is True
    assert last_results.main(["--sweeps-root", str(tmp_path / "sweeps")]) == 0
    out = capsys.readouterr().out
    assert "Pass-1: target achieved at b" in out
    assert "size 100 MB > target 70MB" in out
    assert last_results.main(["--sweeps-root", str(tmp_path / "empty")]) == 1


# --------------------------------------------------------------------------- plugin discovery


def test_plugin_is_discovered_and_registered():
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = [p.__name__ for p in Plugins.instance().discover(Sweeper)]
    assert "ProgressiveSweeper" in names
    node = ConfigStore.instance().load("hydra/sweeper/progressive.yaml").node
    assert list(node.ladder) == ["q8_0", "q6_K", "q5_K_M", "q4_K_M", "q3_K_L", "q2_K"]


# --------------------------------------------------------------------------- tiny_llama runs

LADDER = ["int8", "int4", "int2"]


def _run(tmp_outputs: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QUANTLOOP_OUTPUTS=str(tmp_outputs), HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "run.py",
        "+sweep=pass1_progressive",
        "model=tiny_llama",
        "eval=smoke",
        "tracking=disabled",
        *overrides,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _summary(sweep_dir: Path) -> dict:
    (path,) = sweep_dir.glob("pass1_summary_*.json")
    return json.loads(path.read_text())


def _unreachable_run(outputs: Path, ladder: list[str]) -> Path:
    """A Pass-1 run on tiny_llama whose size target no level can meet; its sweep dir."""
    _run(
        outputs,
        f"hydra.sweeper.ladder=[{','.join(ladder)}]",
        "selection.size_target=1MB",
        "sweep_name=unreachable",
    )
    return outputs / "sweeps" / "unreachable"


def test_tiny_llama_unreachable_target_tries_whole_ladder(tmp_path):
    ladder = ["int8", "int2"]
    sweep = _unreachable_run(tmp_path, ladder)
    summary = _summary(sweep)
    assert [it["level"] for it in summary["iterations"]] == ladder
    assert all(it["status"] == "ok" for it in summary["iterations"])
    assert summary["target_achieved"] is False
    assert summary["message"] == "target not achieved"
    assert summary["stopped_because"] == "ladder exhausted"
    assert all(any("target 1MB" in r for r in it["reasons"]) for it in summary["iterations"])
    decision = json.loads((sweep / "selection.json").read_text())
    assert decision["target_achieved"] is False and decision["chosen"] is None
    assert len(decision["candidates"]) == len(ladder)
    assert (sweep / "pareto.png").stat().st_size > 0
    assert (sweep / "selection.md").is_file()


@pytest.mark.slow
def test_tiny_llama_stops_at_level_chosen_by_measured_thresholds(tmp_path):
    # First measure every level (no level meets a 1 MB budget), then set thresholds from it.
    unreachable = _unreachable_run(tmp_path / "measure", LADDER)
    assert [it["level"] for it in _summary(unreachable)["iterations"]] == LADDER
    measured = {it["level"]: it["candidate"] for it in _summary(unreachable)["iterations"]}
    size = {k: c["size_mb"] for k, c in measured.items()}
    kld = {k: c["metrics"]["kld_mean"] for k, c in measured.items()}
    assert size["int8"] > size["int4"] > size["int2"], size
    assert kld["int8"] < kld["int4"] < kld["int2"], kld
    # Budget between int8 and int4; KL ceiling between int4 and int2: only int4 meets both.
    size_target = (size["int8"] + size["int4"]) / 2
    kld_max = (kld["int4"] + kld["int2"]) / 2
    expected = next(lv for lv in LADDER if size[lv] <= size_target and kld[lv] <= kld_max)
    assert expected == "int4"
    _run(
        tmp_path / "select",
        f"quant={','.join(LADDER)}",  # a sweep over the ladder key replaces the ladder
        f"selection.size_target={size_target:.6f}MB",
        "selection=kld",
        "selection.metric_min.top1_agreement=0",
        f"selection.metric_max.kld_mean={kld_max:.6f}",
        "sweep_name=reachable",
    )
    sweep = tmp_path / "select" / "sweeps" / "reachable"
    summary = _summary(sweep)
    assert [it["level"] for it in summary["iterations"]] == ["int8", "int4"]
    assert summary["target_achieved"] is True and summary["best_level"] == expected
    decision = json.loads((sweep / "selection.json").read_text())
    assert decision["chosen"]["quant_format"] == expected


@pytest.mark.slow
def test_sweep_over_another_key_is_refused(tmp_path):
    env = dict(os.environ, QUANTLOOP_OUTPUTS=str(tmp_path), HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "run.py",
        "+sweep=pass1_progressive",
        "model=tiny_llama",
        "tracking=disabled",
        "method=rtn,gptq",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "cannot also sweep 'method' (method=rtn,gptq)" in proc.stderr
    assert not list(tmp_path.glob("sweeps/*/*/result.json"))


# --------------------------------------------------------------------------- idle wait


def test_wait_for_idle_returns_at_once_when_idle():
    load = current_load("load")
    assert load >= 0
    waited = wait_for_idle(max_load=load + 1000.0, poll_s=0.01, timeout_s=1.0)
    assert waited.idle and waited.polls == 1


def test_wait_for_idle_polls_until_load_drops():
    loads = iter([0.9, 0.8, 0.2, 0.1])
    pauses = []
    waited = wait_for_idle(
        0.5, poll_s=7.0, timeout_s=None, load_fn=lambda: next(loads), sleep=pauses.append
    )
    assert waited.idle and waited.load == 0.2 and waited.polls == 3
    assert pauses == [7.0, 7.0]


def test_wait_for_idle_times_out():
    waited = wait_for_idle(0.5, poll_s=0.01, timeout_s=0.05, load_fn=lambda: 0.9)
    assert not waited.idle and waited.waited_s >= 0.05 and waited.polls >= 2


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_load": 0.0}, "runner.idle_max_load"),
        ({"max_load": 0.5, "poll_s": 0}, "poll_s"),
        ({"max_load": 0.5, "timeout_s": -1}, "runner.idle_timeout_s"),
        ({"max_load": 0.5, "measure": "gpu"}, "valid: load, cpu"),
    ],
)
def test_wait_for_idle_rejects_bad_settings(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        wait_for_idle(**kwargs)
