"""The real CLI in a subprocess on the config-built tiny Llama: jobs, sweeps, resume, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runner.schema import CORE_METRICS, validate_result
from runner.store import ResultStore
from runner.tracking import read_offline_run

TINY = ("model=tiny_llama", "eval=smoke")


def sweep_results(sweep_dir: Path) -> dict[str, dict]:
    out = {}
    for path in sweep_dir.glob("*/result.json"):
        r = json.loads(path.read_text())
        out[r["quant_format"]] = r
    return out


def latest_run(env: dict[str, str], suffix: str) -> Path:
    """The newest single-run directory ending in ``suffix`` that has a result."""
    runs = sorted((Path(env["QUANTLOOP_OUTPUTS"]) / "runs").glob(f"*{suffix}/result.json"))
    return runs[-1].parent


@pytest.fixture(scope="module")
def int_sweep(ql_env, cli):
    proc = cli("-m", *TINY, "quant=int8,int4,int2", "sweep_name=cli_sweep")
    return Path(ql_env["QUANTLOOP_OUTPUTS"]) / "sweeps" / "cli_sweep", proc


def test_single_job_writes_a_valid_result(ql_env, cli):
    proc = cli(*TINY, "quant=int4")
    job_dir = latest_run(ql_env, "tiny_llama_int4_rtn")
    result = json.loads((job_dir / "result.json").read_text())
    validate_result(result)
    assert result["status"] == "ok" and result["error_count"] == 0
    assert set(CORE_METRICS) <= set(result["metrics"])
    assert result["metrics"]["perplexity"] > 1
    assert 0 <= result["metrics"]["top1_agreement"] <= 100
    assert (job_dir / "config.json").exists() and (job_dir / "per_layer.json").exists()
    assert f"perplexity {result['metrics']['perplexity']:.5g}" in proc.stderr + proc.stdout


def test_sweep_writes_jobs_summary_store_and_wandb(int_sweep, ql_env):
    sweep_dir, _ = int_sweep
    results = sweep_results(sweep_dir)
    assert set(results) == {"int8", "int4", "int2"}
    for r in results.values():
        validate_result(r)
        assert r["status"] == "ok" and r["sweep_id"] == "cli_sweep"
    # int8 stores more bytes than int4, int4 more than int2; quality falls in the same order
    assert results["int8"]["size_mb"] > results["int4"]["size_mb"] > results["int2"]["size_mb"]
    kld = {q: r["metrics"]["kld_mean"] for q, r in results.items()}
    assert kld["int8"] < kld["int4"] < kld["int2"]
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["n_jobs"] == 3 and summary["n_ok"] == 3
    md = (sweep_dir / "summary.md").read_text()
    assert all(Path(r["job_dir"]).name in md for r in results.values())
    assert (sweep_dir / "selection.json").exists() and (sweep_dir / "pareto.png").exists()
    report = (sweep_dir / "report.html").read_text()
    assert all(r["id"] in report for r in results.values())

    store = ResultStore(ql_env["QUANTLOOP_STORE"])
    assert store.count(sweep_id="cli_sweep") == 3
    listed = subprocess.run(
        [sys.executable, "-m", "runner.history", "--sweep-id", "cli_sweep", "--json"],
        env=ql_env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert {r["id"] for r in json.loads(listed.stdout)} == {r["id"] for r in results.values()}

    run_dirs = sorted((sweep_dir / "wandb").glob("offline-run-*"))
    runs = [read_offline_run(d) | {"dir": d} for d in run_dirs]
    job_runs = {
        r["summary"].get("metrics/kld_mean"): r for r in runs if r["job_type"] == "quantize"
    }
    assert len(job_runs) == 3
    for r in results.values():
        run = job_runs[r["metrics"]["kld_mean"]]
        assert run["group"] == "cli_sweep"
        assert run["config"]["quant"]["name"] == r["quant_format"]
        assert "per_layer_error" in run["history_keys"]
        (table,) = (run["dir"] / "files" / "media" / "table").glob("per_layer_error*.json")
        layers = json.loads((Path(r["job_dir"]) / "per_layer.json").read_text())
        assert len(json.loads(table.read_text())["data"]) == len(layers)
    assert any(r["job_type"] == "selection" and r["group"] == "cli_sweep" for r in runs)


def test_rerun_skips_finished_jobs_and_force_redoes_them(int_sweep, cli):
    sweep_dir, _ = int_sweep
    before = {q: r["id"] for q, r in sweep_results(sweep_dir).items()}
    proc = cli("-m", *TINY, "quant=int8,int4", "sweep_name=cli_sweep")
    assert proc.stderr.count("skipping") + proc.stdout.count("skipping") == 2
    assert {q: r["id"] for q, r in sweep_results(sweep_dir).items()} == before
    cli("-m", *TINY, "quant=int2", "sweep_name=cli_sweep", "force=true")
    after = sweep_results(sweep_dir)
    assert after["int2"]["id"] != before["int2"]
    assert after["int8"]["id"] == before["int8"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("quant=int9",), "Available options in 'quant'"),
        (("quant=int4", "quant.bits=9"), "quant.bits=9 is outside the valid range 2..8"),
        (
            ("quant=int4", "quant.granularity=per_row"),
            "valid choices: per_tensor, per_channel, per_group",
        ),
        (("method.damp_percent=1.5",), "method.damp_percent=1.5 is outside the valid range [0, 1]"),
        (("selection.max_degradation=-0.5",), "selection.max_degradation=-0.5"),
        (("selection.size_tie_tolerance=2",), "selection.size_tie_tolerance=2"),
        (("+quant.colour=red",), "quant.colour (unknown setting)='colour' is not valid"),
        (("quant.colour=red",), "Key 'colour' not in 'QuantConfig'"),
        (("tracking.mode=cloud",), "valid choices: offline, online, disabled"),
        (
            ("tracking.mode=ofline",),
            "tracking.mode='ofline' is not valid (did you mean 'offline'?)",
        ),
        (
            ("quant=int4", "quant.group_size=96", "method=gptq"),
            "method.block_size=128 and quant.group_size=96 must divide one another",
        ),
        (
            ("quant=q4_K_M", "method=gptq", "method.act_order=true", "method.static_groups=false"),
            "needs method.static_groups=true",
        ),
    ],
)
def test_bad_input_fails_early_with_a_clear_message(cli, args, message):
    proc = cli(*TINY, *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_llama_cpp_level_exports_a_gguf_with_the_planned_types(ql_env, cli):
    from quant.gguf_export import gguf_bits_per_weight, read_gguf_tensors

    cli(*TINY, "quant=q4_K_M", "export=gguf")
    job_dir = latest_run(ql_env, "tiny_llama_q4_K_M_rtn")
    result = json.loads((job_dir / "result.json").read_text())
    gguf_path = job_dir / "model.gguf"
    assert result["size_mb"] == pytest.approx(gguf_path.stat().st_size / 1e6)
    assert result["bits_per_weight"] == pytest.approx(gguf_bits_per_weight(gguf_path))
    planned = {
        row["name"]: row["qtype"] for row in json.loads((job_dir / "per_layer.json").read_text())
    }
    in_file = {name: t.qtype for name, t in read_gguf_tensors(gguf_path).items()}
    assert in_file == planned
    assert {"q4_K", "q6_K"} <= set(in_file.values())  # q4_K_M mixes types (use_more_bits)
    assert "| `blk.0.attn_v.weight` |" in (job_dir / "plan.md").read_text()


@pytest.mark.slow
@pytest.mark.real_model
def test_smollm2_int8_drifts_less_than_int4(ql_env, cli):
    cli("-m", "model=smollm2_135m", "eval=smoke", "quant=int8,int4", "sweep_name=smollm2_int")
    results = sweep_results(Path(ql_env["QUANTLOOP_OUTPUTS"]) / "sweeps" / "smollm2_int")
    for r in results.values():
        assert r["status"] == "ok"
        assert all(np.isfinite(r["metrics"][k]) for k in CORE_METRICS)
        assert r["baseline"]["perplexity"] < 100  # a real, trained model on real text
    assert results["int8"]["metrics"]["kld_mean"] < results["int4"]["metrics"]["kld_mean"]


@pytest.mark.slow
@pytest.mark.real_model
def test_minilm_int2_gptq_meets_the_embedding_bar(ql_env, cli):
    """Seed 003's INT2 MiniLM reached cosine 0.118; the bar is 0.70 with GPTQ (default preset)."""
    cli(
        "-m",
        "model=minilm",
        "quant=int2",
        "method=rtn,gptq",
        "method.n_samples=64",
        "method.seq_len=128",
        "sweep_name=minilm_int2",
    )
    sweep_dir = Path(ql_env["QUANTLOOP_OUTPUTS"]) / "sweeps" / "minilm_int2"
    results = [json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")]
    cos = {r["method"]: r["metrics"]["embedding_cosine_mean"] for r in results}
    assert cos["gptq"] >= 0.70 > cos["rtn"]
    # per-layer errors are measured against the original weights, not GPTQ's written-back ones
    (gptq,) = [r for r in results if r["method"] == "gptq"]
    layers = json.loads((Path(gptq["job_dir"]) / "per_layer.json").read_text())
    errs = [row["rel_error"] for row in layers if row["qtype"] == "int2"]
    assert len(errs) == 36 and all(0 < e < 1 for e in errs)


def test_wait_for_idle_waits_then_starts_with_a_warning(cli):
    proc = cli(
        *TINY,
        "quant=int8",
        "runner.wait_for_idle=true",
        "runner.idle_max_load=0.000001",
        "runner.idle_poll_s=0.2",
        "runner.idle_timeout_s=1",
    )
    assert "system still busy after" in proc.stderr + proc.stdout


def test_gptq_on_llama_cpp_types_exports_valid_blocks(ql_env, cli):
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    from quant import dequantize
    from quant.gguf_export import read_gguf_tensors

    cli(
        *TINY,
        "quant=q4_K_M",
        "method=gptq",
        "method.n_samples=8",
        "method.seq_len=64",
        "export=gguf",
    )
    job_dir = latest_run(ql_env, "tiny_llama_q4_K_M_gptq")
    result = json.loads((job_dir / "result.json").read_text())
    assert result["status"] == "ok" and result["method"] == "gptq"
    tensors = read_gguf_tensors(job_dir / "model.gguf")
    assert {t.qtype for t in tensors.values()} >= {"q4_K", "q6_K"}
    # GPTQ's blocks are valid: our decoder, gguf-py's and transformers' GGUF loader agree
    model = AutoModelForCausalLM.from_pretrained(
        job_dir, gguf_file="model.gguf", dtype=torch.float32
    )
    t = tensors["blk.1.ffn_gate.weight"]
    rows = t.shape[1]
    ours = dequantize(t.data, t.qtype, (rows, t.shape[0]))
    theirs = gguf.quants.dequantize(t.data, gguf.GGMLQuantizationType[t.qtype.upper()])
    np.testing.assert_array_equal(ours, theirs.reshape(ours.shape))
    np.testing.assert_array_equal(ours, model.model.layers[1].mlp.gate_proj.weight.detach().numpy())


def test_all_suites_run_offline_and_reach_result_and_wandb(ql_env, cli):
    cli("-m", "model=tiny_llama", "eval=full_smoke", "quant=int4", "sweep_name=suites")
    sweep_dir = Path(ql_env["QUANTLOOP_OUTPUTS"]) / "sweeps" / "suites"
    (result,) = sweep_results(sweep_dir).values()
    assert result["status"] == "ok" and result["error_count"] == 0, result["errors"]
    m = result["metrics"]
    for key in (
        "task/ql_wiki_cloze/acc",
        "task/ql_wiki_rolling/bits_per_byte",
        "task/ql_wiki_recall/exact_match",
        "hidden_cosine_mean",
        "emotional_score",
        "smoothness_score",
    ):
        assert key in m and np.isfinite(m[key]), key
    job_dir = Path(result["job_dir"])
    assert "data:image/png;base64," in (job_dir / "smoothness.html").read_text()
    assert (job_dir / "emotional_responses.jsonl").read_text().count("\n") == 2
    runs = [read_offline_run(d) for d in (sweep_dir / "wandb").glob("offline-run-*")]
    (run,) = [r for r in runs if r["job_type"] == "quantize"]
    assert run["summary"]["metrics/task/ql_wiki_cloze/acc"] == m["task/ql_wiki_cloze/acc"]
    assert "smoothness" in run["history_keys"]
