"""Prompt sets, candidate loading and greedy response generation.

A candidate is a path: a GGUF file (loaded by transformers with ``gguf_file=``, dequantized to
float) or a Hugging Face model directory. Responses are generated greedily with a bounded number
of new tokens, through the tokenizer's chat template when it has one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metrics.judges.base import JudgeError, Prompt

PROMPTS_DIR = Path(__file__).parent / "prompts"
DEFAULT_PROMPTS = "emotional_v1"
DEFAULT_SYSTEM = "You are a warm, thoughtful companion. Answer in a few sentences."


@dataclass(frozen=True)
class PromptSet:
    name: str
    prompts: tuple[Prompt, ...]
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "prompts": [{"id": p.id, "emotion": p.emotion, "text": p.text} for p in self.prompts],
        }


def load_prompts(source: str | Path | None = None, limit: int | None = None) -> PromptSet:
    """Load a JSONL prompt set: a bundled name (``emotional_v1``) or a file path.

    Each line: ``{"id": ..., "text": ..., "emotion": ...}``; ids must be unique.
    """
    source = source or DEFAULT_PROMPTS
    path = Path(source)
    if not path.suffix:
        path = PROMPTS_DIR / f"{source}.jsonl"
        if not path.exists():
            bundled = sorted(p.stem for p in PROMPTS_DIR.glob("*.jsonl"))
            raise JudgeError(f"unknown prompt set '{source}'; bundled sets: {', '.join(bundled)}")
    if not path.exists():
        raise JudgeError(f"prompt file '{path}' does not exist")
    data = path.read_bytes()
    prompts: list[Prompt] = []
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise JudgeError(f"{path.name} line {n}: not JSON ({e})") from e
        for key in ("id", "text"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise JudgeError(f"{path.name} line {n}: field '{key}' must be a non-empty string")
        prompts.append(Prompt(row["id"], row["text"], row.get("emotion", "")))
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise JudgeError(f"{path.name}: prompt ids must be unique")
    if not prompts:
        raise JudgeError(f"{path.name}: no prompts")
    if limit is not None:
        prompts = prompts[:limit]
    digest = hashlib.sha256(data).hexdigest()
    return PromptSet(path.stem, tuple(prompts), digest)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def make_saveable(model) -> None:
    """Forget that a model came from GGUF (its weights are already float) so it can be saved."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _gguf_to_dir(gguf: Path, cache_dir: Path) -> Path:
    """Dequantize a GGUF once into a float32 HF directory under ``cache_dir`` (atomic)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir / f"{gguf.stem}-{sha256_file(gguf)[:16]}"
    if (target / ".complete").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=target.name + ".tmp-"))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        make_saveable(model)
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        (tmp / ".complete").write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_candidate(
    path: str | Path,
    *,
    tokenizer_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
):
    """Load ``(model, tokenizer)`` from a GGUF file or an HF directory (float32, eval mode).

    A job directory holding ``model.gguf`` is accepted too. ``tokenizer_path`` overrides where
    the tokenizer comes from (an HF dir or a GGUF file). ``cache_dir`` caches GGUF conversions.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if path.is_dir() and not (path / "config.json").exists() and (path / "model.gguf").exists():
        path = path / "model.gguf"
    if not path.exists():
        raise JudgeError(f"candidate path '{path}' does not exist")
    if path.is_file() and path.suffix != ".gguf":
        raise JudgeError(f"candidate file '{path}' is not a .gguf file (or pass an HF directory)")
    if path.is_file() and cache_dir is not None:
        path = _gguf_to_dir(path, Path(cache_dir))
    if path.is_file():
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok_src = Path(tokenizer_path) if tokenizer_path else path
    if tok_src.is_file():
        tokenizer = AutoTokenizer.from_pretrained(tok_src.parent, gguf_file=tok_src.name)
    else:
        tokenizer = AutoTokenizer.from_pretrained(tok_src)
    model.eval()
    return model, tokenizer


def encode_chat(tokenizer, messages: list[dict[str, str]]):
    """Token ids for a chat: the chat template if present, else a plain role-tagged transcript."""
    if getattr(tokenizer, "chat_template", None):
        enc = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return enc["input_ids"], enc.get("attention_mask")
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    enc = tokenizer(text, return_tensors="pt")
    return enc["input_ids"], enc.get("attention_mask")


def generate_chat(
    model,
    tokenizer,
    messages: list[dict[str, str]],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
) -> str:
    """One completion: greedy when ``temperature == 0``, seeded sampling otherwise."""
    import torch

    ids, mask = encode_chat(tokenizer, messages)
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    if temperature > 0:
        torch.manual_seed(seed)
        kwargs.update(do_sample=True, temperature=temperature, top_p=0.95)
    else:
        kwargs.update(do_sample=False)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, **kwargs)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def generate_responses(
    model,
    tokenizer,
    prompts: list[Prompt] | tuple[Prompt, ...],
    *,
    max_new_tokens: int = 64,
    system: str | None = DEFAULT_SYSTEM,
    progress: bool = False,
) -> dict[str, str]:
    """Greedy responses of one model to every prompt: prompt id -> text."""
    out: dict[str, str] = {}
    items = list(prompts)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="responses", unit="prompt")
    for p in items:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": p.text}
        ]
        out[p.id] = generate_chat(model, tokenizer, messages, max_new_tokens=max_new_tokens)
    return out
