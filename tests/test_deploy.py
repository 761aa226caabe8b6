"""Deployment: validation, checksum refusal, backup/restore, rollback, recovery after a kill."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps.deploy import (
    FAULT_ENV,
    MANIFEST,
    DeployConfig,
    Deployer,
    DeployError,
    seal,
    sha256_file,
    validate,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """Two real (random-weight) Llama checkpoints saved like any HF model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    paths = []
    for seed in (0, 1):  # two different artifacts
        torch.manual_seed(seed)
        path = tmp_path_factory.mktemp("tiny") / f"ckpt{seed}"
        LlamaForCausalLM(cfg).save_pretrained(path)
        paths.append(path)
    return paths


def make_candidate(root: Path, name: str, ckpt: Path, quant: str, kld: float, passed=True) -> Path:
    job = root / name
    shutil.copytree(ckpt, job)
    result = {
        "schema_version": "1",
        "id": name,
        "model_name": "tiny_llama",
        "quant_format": quant,
        "method": "rtn",
        "size_mb": 1.0,
        "passed_threshold": passed,
        "status": "ok",
        "score": 0.9,
        "sweep_id": "s1",
        "metrics": {"kld_mean": kld, "top1_agreement": 95.0},
        "job_dir": str(job),
    }
    (job / "result.json").write_text(json.dumps(result))
    seal(job)
    return job


@pytest.fixture
def setup(tmp_path, tiny_checkpoint):
    sweep = tmp_path / "outputs" / "sweep"
    sweep.mkdir(parents=True)
    a = make_candidate(sweep, "job_q8", tiny_checkpoint[0], "q8_0", 0.01)
    b = make_candidate(sweep, "job_q4", tiny_checkpoint[1], "q4_K_M", 0.05)
    cfg = DeployConfig(
        core_dir=tmp_path / "deploy" / "core",
        backups_dir=tmp_path / "deploy" / "backups",
        candidate_roots=[tmp_path / "outputs"],
        limits={"kld_mean": {"max": 0.1}},
        load_check="full",
    )
    return cfg, a, b


def core_sums(cfg):
    return {
        p.name: sha256_file(p) for p in cfg.core_dir.iterdir() if p.is_file() and p.name != MANIFEST
    }


def leftovers(cfg):
    return sorted(
        p.name for p in cfg.core_dir.parent.iterdir() if ".staging-" in p.name or ".old-" in p.name
    )


def test_validate_and_deploy_writes_manifest(setup):
    cfg, a, _ = setup
    v = validate(a, cfg)
    assert v.ok, v.failures()
    assert [c["check"] for c in v.checks][-1] == "model_loads"
    out = Deployer(cfg).deploy(a)
    m = json.loads((cfg.core_dir / MANIFEST).read_text())
    assert m["candidate"]["quant_format"] == "q8_0"
    assert m["source_sweep"] == "s1"
    assert m["checksums"]["model.safetensors"] == sha256_file(a / "model.safetensors")
    assert out["backup"] is None  # nothing to back up on the first deploy
    assert core_sums(cfg) == {f: sha256_file(a / f) for f in m["checksums"]}
    assert not cfg.journal_path.exists() and not leftovers(cfg)


def test_corrupt_candidate_is_refused(setup):
    cfg, a, b = setup
    d = Deployer(cfg)
    d.deploy(a)
    before = core_sums(cfg)
    blob = bytearray((b / "model.safetensors").read_bytes())
    blob[-5] ^= 0xFF
    (b / "model.safetensors").write_bytes(bytes(blob))
    v = validate(b, cfg)
    assert not v.ok and "checksums" in v.failures() and "model.safetensors" in v.failures()
    with pytest.raises(DeployError, match="checksum"):
        d.deploy(b)
    assert core_sums(cfg) == before
    assert d.list_backups() == []  # refused before anything was touched


def test_policy_checks_refuse(setup, tmp_path, tiny_checkpoint):
    cfg, a, _ = setup
    bad = make_candidate(a.parent, "job_q2", tiny_checkpoint[0], "q2_K", 0.5)
    assert "limit:kld_mean" in validate(bad, cfg).failures()
    failed = make_candidate(a.parent, "job_fail", tiny_checkpoint[0], "q3_K", 0.05, passed=False)
    assert "passed_threshold" in validate(failed, cfg).failures()
    outside = make_candidate(tmp_path, "elsewhere", tiny_checkpoint[0], "q8_0", 0.01)
    assert "inside one of" in validate(outside, cfg).failures()
    sneaky = cfg.candidate_roots[0] / ".." / "elsewhere"
    assert not validate(sneaky, cfg).ok
    (a / "SHA256SUMS").write_text(f"{'0' * 64}  ../elsewhere/result.json\n")
    assert "escape" in validate(a, cfg).failures()
    with pytest.raises(DeployError, match="plain backup name"):
        Deployer(cfg).restore("../outputs")


def test_backup_restore_chosen_backup(setup):
    cfg, a, b = setup
    d = Deployer(cfg)
    d.deploy(a)
    sums_a = core_sums(cfg)
    out = d.deploy(b)
    assert (
        json.loads((cfg.core_dir / MANIFEST).read_text())["candidate"]["quant_format"] == "q4_K_M"
    )
    backups = d.list_backups()
    assert [x["name"] for x in backups] == [out["backup"]]
    assert backups[0]["quant"] == "q8_0"
    r = d.restore(out["backup"])
    assert core_sums(cfg) == sums_a
    assert sums_a["model.safetensors"] != sha256_file(b / "model.safetensors")
    assert json.loads((cfg.core_dir / MANIFEST).read_text())["candidate"]["quant_format"] == "q8_0"
    # restoring backed up the q4 core first, so nothing is lost
    names = [x["name"] for x in d.list_backups()]
    assert r["backup"] in names and len(names) == 2
    with pytest.raises(DeployError, match="no backup"):
        d.restore("backup_19990101_000000_000000")


def test_failure_after_swap_rolls_back(setup, monkeypatch):
    cfg, a, b = setup
    d = Deployer(cfg)
    d.deploy(a)
    before = core_sums(cfg)
    monkeypatch.setenv(FAULT_ENV, "raise:swapped")
    with pytest.raises(DeployError, match="rolled back"):
        d.deploy(b)
    assert core_sums(cfg) == before
    assert json.loads((cfg.core_dir / MANIFEST).read_text())["candidate"]["quant_format"] == "q8_0"
    assert not cfg.journal_path.exists() and not leftovers(cfg)


def _deploy_subprocess(cfg, candidate, fault):
    cmd = [
        sys.executable,
        "-m",
        "sweeps.deploy",
        "--core",
        str(cfg.core_dir),
        "--backups",
        str(cfg.backups_dir),
        *[arg for r in cfg.candidate_roots for arg in ("--root", str(r))],
        "--load-check",
        "none",
        "deploy",
        str(candidate),
    ]
    env = {**os.environ, FAULT_ENV: f"kill:{fault}", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("step", "expect"), [("moved_old", "q8_0"), ("swapped", "q8_0"), ("verified", "q4_K_M")]
)
def test_killed_deploy_is_recovered_by_next_command(setup, step, expect):
    cfg, a, b = setup
    cfg.load_check = "none"
    Deployer(cfg).deploy(a)
    proc = _deploy_subprocess(cfg, b, step)
    assert proc.returncode == -9, proc.stderr  # SIGKILL at the chosen step
    assert cfg.journal_path.exists()
    if step == "moved_old":
        assert not cfg.core_dir.exists()  # the window a crash can leave without the journal
    status = Deployer(cfg).status()  # any next command recovers
    assert status["recovered"]["step"] == step
    assert status["recovered"]["action"] == ("completed" if step == "verified" else "rolled_back")
    assert status["manifest"]["candidate"]["quant_format"] == expect
    src = a if expect == "q8_0" else b
    assert core_sums(cfg) == {f: sha256_file(src / f) for f in status["manifest"]["checksums"]}
    assert not cfg.journal_path.exists() and not leftovers(cfg)
    assert len(Deployer(cfg).list_backups()) == 1  # the pre-deploy backup survives
