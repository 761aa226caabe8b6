"""Emotional-response suite: greedy replies to written scenarios, scored by six metrics in [0, 1].

Definitions (also in docs/metrics.md). For a scenario with prompt ``x``, expected emotion ``e``
and expected sentiment ``s`` (+1 positive, -1 negative), and a reply ``r`` with ``n`` words:

1. fluency    = clip(1 - NLL_fp(r | x) / ln V, 0, 1): mean per-token negative log-likelihood of
                the reply under the FULL-PRECISION model (the fixed judge), relative to a uniform
                guess over the vocabulary of size V.
2. intensity  = min(1, (E + 0.5 I) / (0.10 n)): E emotion-lexicon words, I intensifiers
                (words like "very", "so", and each "!"); one emotion word per ten words saturates.
3. match      = 1 - (rank(e) - 1) / (K - 1): rank of the expected emotion among the K emotion
                prototypes by MiniLM cosine similarity to the reply (1 = closest prototype).
4. sentiment  = (1 + s * p) / 2, p = (P - N) / (P + N) from positive/negative lexicon hits
                (a hit preceded by a negation within two words flips); p = 0 without hits.
5. empathy    = min(1, m / 2): m distinct empathy markers ("sorry to hear", "that sounds",
                "congratulations", "you're not alone", ...).
6. coherence  = max(0, cos(MiniLM(x), MiniLM(r))) * distinct-bigram ratio of r: on topic and
                not looping.

An empty reply scores 0 on every metric. ``emotional_score`` is the weighted mean of the six
(equal weights by default, as in the seed's overall score). Against the full-precision baseline:
``emotional_degradation = (score_fp - score) / score_fp`` (positive = worse),
``emotional_fp_similarity`` = mean MiniLM cosine between the reply and the fp model's reply.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

log = logging.getLogger(__name__)

SCENARIO_FILE = Path(__file__).parent / "data" / "emotional_scenarios.yaml"
METRICS = ("fluency", "intensity", "match", "sentiment", "empathy", "coherence")
SENTIMENTS = {"positive": 1, "negative": -1}


class EmotionalSuiteError(RuntimeError):
    """The emotional suite could not run (bad scenarios/config, time budget exceeded, ...)."""


def _words(s: str) -> frozenset[str]:
    return frozenset(s.split())


EMOTION_LEXICON: dict[str, frozenset[str]] = {
    "joy": _words(
        "happy happiness joy joyful glad delighted thrilled excited exciting wonderful fantastic "
        "amazing awesome celebrate celebrating celebration congratulations congrats proud smile "
        "smiling cheerful fun yay hooray ecstatic elated"
    ),
    "sadness": _words(
        "sad sadness unhappy lonely loneliness empty heartbroken miss missing cry crying tears "
        "disappointed disappointing disappointment sorrow gloomy depressed upset down"
    ),
    "anger": _words(
        "angry anger furious mad rage outraged outrageous annoyed annoying frustrated frustrating "
        "frustration unfair infuriating irritated livid resentment betrayed disrespectful"
    ),
    "fear": _words(
        "afraid fear fears scared frightened frightening terrified terrifying panic danger "
        "dangerous unsafe threat threatening fright dread"
    ),
    "surprise": _words(
        "surprise surprised surprising wow unexpected unexpectedly shocked shocking astonished "
        "amazed incredible unbelievable suddenly"
    ),
    "love": _words(
        "love loved loving lovely adore adored affection caring cherish cherished sweet dear "
        "heart warm warmth tender devoted"
    ),
    "gratitude": _words(
        "thank thanks thankful grateful gratitude appreciate appreciated appreciation kindness "
        "generous generosity blessed"
    ),
    "grief": _words(
        "grief grieve grieving loss mourn mourning passed death died condolences memory memories "
        "farewell"
    ),
    "anxiety": _words(
        "anxious anxiety worry worried worrying nervous stress stressed stressful overwhelmed "
        "overwhelming tense uneasy restless pressure"
    ),
}
AFFECT_WORDS = frozenset().union(*EMOTION_LEXICON.values()) | _words("feel feeling feelings")
INTENSIFIERS = _words(
    "very so really truly extremely incredibly deeply absolutely totally completely such"
)
POSITIVE = _words(
    "good great wonderful happy happiness glad love loved lovely joy joyful amazing excellent "
    "proud thank thanks thankful grateful hope hopeful better best beautiful kind kindness "
    "support supportive comfort peace peaceful calm brave strong celebrate congratulations "
    "congrats fantastic exciting excited lucky blessed enjoy fun success successful safe heal "
    "healing smile delighted special awesome thrilled cheerful warm sweet appreciate generous "
    "perfect incredible fortunate"
)
NEGATIVE = _words(
    "sad bad terrible awful hurt hurts hurting pain painful loss lost angry anger furious afraid "
    "scared fear worried worry anxious anxiety difficult hard stress stressful unfair wrong sorry "
    "upset lonely cry crying tears die died death grief miss horrible frustrating frustrated "
    "disappointed disappointing overwhelmed overwhelming terrified frightening nervous unbearable "
    "heartbroken tough struggle struggling suffering empty"
)
NEGATIONS = _words("not no never nothing nobody none isn't wasn't don't doesn't didn't can't won't")
EMPATHY_MARKERS = tuple(
    re.compile(p)
    for p in (
        r"\bi'?m (so |very |truly )?sorry\b",
        r"\bi am (so |very |truly )?sorry\b",
        r"\bsorry (to hear|for your)\b",
        r"\b(that|it) sounds\b",
        r"\bi (can )?understand\b",
        r"\bunderstandable\b",
        r"\bi can (only )?imagine\b",
        r"\bmust (be|have been|feel)\b",
        r"\bit'?s (okay|ok|normal|natural|understandable)\b",
        r"\byou('re| are) not alone\b",
        r"\bhere for you\b",
        r"\btake (care|your time)\b",
        r"\bbe (gentle|kind) (with|to) yourself\b",
        r"\byour feelings?\b",
        r"\bhow (are )?you('re)? feeling\b",
        r"\bcongratulations\b|\bcongrats\b",
        r"\bwell done\b",
        r"\b(proud of|happy for) you\b",
        r"\b(that'?s|what) (a |an )?(wonderful|amazing|great|beautiful|lovely)\b",
        r"\bi hope\b|\bhope you\b",
        r"\bwishing you\b",
        r"\bthank you for sharing\b",
        r"\b(hug|hugs)\b",
        r"\byou deserve\b",
        r"\breach out\b|\btalk to (someone|a friend|a professional)\b",
        r"\bsupport\b",
        r"\b(your|you) (loss|pain)\b",
    )
)
EMOTION_PROTOTYPES: dict[str, tuple[str, ...]] = {
    "joy": (
        "That is wonderful news, I'm so happy and excited for you!",
        "What a joyful moment, enjoy every bit of this happiness.",
    ),
    "sadness": (
        "I'm sorry you feel so sad and lonely right now; it's hard when things go wrong.",
        "Feeling down and disappointed is painful, and it's okay to be sad.",
    ),
    "anger": (
        "That is so unfair, no wonder you are angry and furious about it.",
        "Your frustration makes sense; being treated like that is infuriating.",
    ),
    "fear": (
        "That sounds really frightening; it's natural to feel scared and unsafe.",
        "Being afraid and terrified in that situation is completely understandable.",
    ),
    "surprise": (
        "Wow, what an unexpected surprise, you must have been shocked!",
        "That came completely out of nowhere, how astonishing.",
    ),
    "love": (
        "The love and affection you feel for them is beautiful and precious.",
        "It's heartwarming to cherish someone you love so deeply.",
    ),
    "gratitude": (
        "It's wonderful to feel so thankful and grateful for their kindness.",
        "Such generosity deserves appreciation; saying thank you means a lot.",
    ),
    "grief": (
        "I'm so sorry for your loss; grieving someone you loved is deeply painful.",
        "Mourning a death takes time, and your memories of them will stay with you.",
    ),
    "anxiety": (
        "Feeling anxious and overwhelmed before something important is very common.",
        "That worry and stress can be exhausting; try to breathe and take it one step at a time.",
    ),
}


@dataclass(frozen=True)
class Scenario:
    id: str
    emotion: str
    sentiment: str
    prompt: str


@dataclass
class EmotionalConfig:
    scenario_file: str | None = None  # default: metrics/data/emotional_scenarios.yaml
    max_scenarios: int | None = None  # first N scenarios (smoke runs)
    max_new_tokens: int = 64
    batch_size: int = 8
    max_time_per_batch: float = 600.0  # seconds, generate(max_time=...); a safety cap only
    max_total_seconds: float = 1800.0  # the whole generation phase; exceeded -> error
    use_chat_template: bool = True  # when the tokenizer has one
    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, 1.0))
    min_score: float | None = None  # emotional_score threshold (seed 000 used 0.82)
    max_degradation: float = 0.07  # relative drop vs the fp baseline (seed 001: < 7 %)

    def validate(self) -> None:
        bad = sorted(set(self.weights) - set(METRICS))
        if bad:
            raise ValueError(f"emotional.weights: unknown metric(s) {bad}; valid: {METRICS}")
        if sum(self.weights.values()) <= 0 or any(w < 0 for w in self.weights.values()):
            raise ValueError("emotional.weights must be >= 0 with a positive sum")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("emotional.max_new_tokens and emotional.batch_size must be >= 1")
        if self.max_scenarios is not None and self.max_scenarios < 1:
            raise ValueError("emotional.max_scenarios must be >= 1 or null")


@dataclass
class EmotionalBaseline:
    """The full-precision model's replies and their scores (computed once)."""

    scenario_version: str
    scenario_ids: list[str]
    responses: list[str]
    per_response: list[dict[str, float]]
    metrics: dict[str, float]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> EmotionalBaseline:
        return cls(**json.loads(Path(path).read_text()))


# ----------------------------------------------------------------------------- scenarios


def load_scenarios(path: str | Path | None = None) -> tuple[str, list[Scenario]]:
    """(version, scenarios) of a scenario YAML; every field is checked."""
    path = Path(path) if path else SCENARIO_FILE
    if not path.is_file():
        raise EmotionalSuiteError(f"scenario file not found: {path}")
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or "scenarios" not in doc or "version" not in doc:
        raise EmotionalSuiteError(f"{path.name}: needs top-level 'version' and 'scenarios'")
    out, seen = [], set()
    for i, raw in enumerate(doc["scenarios"]):
        missing = {"id", "emotion", "sentiment", "prompt"} - set(raw)
        if missing:
            raise EmotionalSuiteError(f"{path.name}: scenario {i} lacks {sorted(missing)}")
        if raw["emotion"] not in EMOTION_LEXICON:
            raise EmotionalSuiteError(
                f"{path.name}: scenario {raw['id']}: emotion {raw['emotion']!r}; "
                f"valid: {', '.join(EMOTION_LEXICON)}"
            )
        if raw["sentiment"] not in SENTIMENTS:
            raise EmotionalSuiteError(
                f"{path.name}: scenario {raw['id']}: sentiment {raw['sentiment']!r}; "
                f"valid: {', '.join(SENTIMENTS)}"
            )
        if raw["id"] in seen:
            raise EmotionalSuiteError(f"{path.name}: duplicate scenario id {raw['id']!r}")
        seen.add(raw["id"])
        out.append(Scenario(**{k: str(raw[k]) for k in ("id", "emotion", "sentiment", "prompt")}))
    return str(doc["version"]), out


# ----------------------------------------------------------------------------- lexicon scores

_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|!")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("\u2019", "'"))


def _words_only(toks: Sequence[str]) -> list[str]:
    return [t for t in toks if t != "!"]


def intensity(text: str) -> float:
    toks = tokens(text)
    words = _words_only(toks)
    if not words:
        return 0.0
    e = sum(1 for w in words if w in AFFECT_WORDS)
    i = sum(1 for t in toks if t in INTENSIFIERS or t == "!")
    return min(1.0, (e + 0.5 * i) / (0.10 * len(words)))


def polarity(text: str) -> float:
    """(P - N) / (P + N) over lexicon hits, negations within two words flip; 0 without hits."""
    words = _words_only(tokens(text))
    pos = neg = 0
    for k, w in enumerate(words):
        sign = 1 if w in POSITIVE else -1 if w in NEGATIVE else 0
        if sign == 0:
            continue
        if any(p in NEGATIONS for p in words[max(0, k - 2) : k]):
            sign = -sign
        pos += sign > 0
        neg += sign < 0
    return 0.0 if pos + neg == 0 else (pos - neg) / (pos + neg)


def sentiment_alignment(text: str, expected: str) -> float:
    if expected not in SENTIMENTS:
        raise ValueError(f"expected sentiment {expected!r}; valid: {', '.join(SENTIMENTS)}")
    if not _words_only(tokens(text)):
        return 0.0
    return (1.0 + SENTIMENTS[expected] * polarity(text)) / 2.0


def empathy(text: str) -> float:
    low = text.lower().replace("\u2019", "'")
    return min(1.0, sum(1 for m in EMPATHY_MARKERS if m.search(low)) / 2.0)


def distinct_bigram_ratio(text: str) -> float:
    words = _words_only(tokens(text))
    if len(words) < 3:
        return 1.0 if words else 0.0
    bigrams = list(zip(words, words[1:], strict=False))
    return len(set(bigrams)) / len(bigrams)


# ----------------------------------------------------------------------------- embedding scores


class Encoder:
    """MiniLM sentence encoder plus the emotion prototype embeddings."""

    def __init__(self, model=None, tokenizer=None):
        if model is None:
            from metrics.embedding import load_minilm

            model, tokenizer = load_minilm()
        self.model, self.tokenizer = model, tokenizer
        self.emotions = list(EMOTION_PROTOTYPES)
        protos = [self.encode(list(EMOTION_PROTOTYPES[e])).mean(0) for e in self.emotions]
        self.prototypes = torch.nn.functional.normalize(torch.stack(protos), dim=-1)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        from metrics.embedding import encode

        return encode(self.model, self.tokenizer, list(texts), batch_size=32, max_length=256)

    def emotion_match(self, vec: torch.Tensor, expected: str) -> float:
        sims = self.prototypes @ vec
        rank = 1 + int((sims > sims[self.emotions.index(expected)]).sum())
        return 1.0 - (rank - 1) / (len(self.emotions) - 1)


# ----------------------------------------------------------------------------- generation


def format_prompt(tokenizer, prompt: str, use_chat_template: bool = True) -> str:
    """The chat-formatted prompt when the tokenizer has a template, else a plain dialogue."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return f"User: {prompt}\nAssistant:"


def _clean_reply(text: str) -> str:
    for stop in ("\nUser:", "\nuser\n", "<|im_end|>", "<|im_start|>"):
        text = text.split(stop, 1)[0]
    return text.strip()


@torch.inference_mode()
def generate_responses(model, tokenizer, prompts: Sequence[str], cfg: EmotionalConfig) -> list[str]:
    """Greedy replies (left-padded batches, bounded tokens and wall time)."""
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    start, out = time.monotonic(), []
    for b in range(0, len(prompts), cfg.batch_size):
        if time.monotonic() - start > cfg.max_total_seconds:
            raise EmotionalSuiteError(
                f"generation exceeded max_total_seconds={cfg.max_total_seconds} after "
                f"{len(out)}/{len(prompts)} replies"
            )
        texts = [
            format_prompt(tokenizer, p, cfg.use_chat_template)
            for p in prompts[b : b + cfg.batch_size]
        ]
        enc = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(len(e) for e in enc)
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=False,
            max_time=cfg.max_time_per_batch,
            pad_token_id=pad,
        )
        new = gen[:, width:]
        if new.shape[1] < cfg.max_new_tokens:
            eos = tokenizer.eos_token_id
            if eos is None or not bool((new == eos).any(dim=1).all()):
                log.warning(
                    "emotional: generation stopped by max_time_per_batch=%s s; replies are "
                    "truncated and not comparable to an untruncated baseline",
                    cfg.max_time_per_batch,
                )
        for row in new:
            out.append(_clean_reply(tokenizer.decode(row, skip_special_tokens=True)))
    return out


@torch.inference_mode()
def response_nll(fp_model, tokenizer, prompt_text: str, response: str) -> float:
    """Mean NLL (nats/token) of the reply's tokens given the formatted prompt, under fp_model."""
    p = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    if not r:
        return math.inf
    ids = torch.tensor([p + r])
    logits = fp_model(ids).logits[0, len(p) - 1 : -1].float()
    return float(torch.nn.functional.cross_entropy(logits, ids[0, len(p) :]))


def vocab_size(model) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


# ----------------------------------------------------------------------------- scoring


def score_responses(
    scenarios: Sequence[Scenario],
    responses: Sequence[str],
    tokenizer,
    fp_model,
    encoder: Encoder,
    cfg: EmotionalConfig,
) -> list[dict[str, float]]:
    """Six metrics per reply (see the module docstring)."""
    if len(scenarios) != len(responses):
        raise ValueError(f"{len(scenarios)} scenarios but {len(responses)} responses")
    ln_v = math.log(vocab_size(fp_model))
    prompt_vecs = encoder.encode([s.prompt for s in scenarios])
    reply_vecs = encoder.encode([r if r else " " for r in responses])
    rows = []
    for sc, reply, pv, rv in zip(scenarios, responses, prompt_vecs, reply_vecs, strict=True):
        if not reply.strip():
            rows.append(dict.fromkeys(METRICS, 0.0))
            continue
        prompt_text = format_prompt(tokenizer, sc.prompt, cfg.use_chat_template)
        nll = response_nll(fp_model, tokenizer, prompt_text, reply)
        rows.append(
            {
                "fluency": min(1.0, max(0.0, 1.0 - nll / ln_v)),
                "intensity": intensity(reply),
                "match": encoder.emotion_match(rv, sc.emotion),
                "sentiment": sentiment_alignment(reply, sc.sentiment),
                "empathy": empathy(reply),
                "coherence": max(0.0, float(pv @ rv)) * distinct_bigram_ratio(reply),
            }
        )
    return rows


def aggregate(rows: Sequence[dict[str, float]], weights: dict[str, float]) -> dict[str, float]:
    """Mean of each metric over replies and the weighted ``emotional_score``."""
    out = {f"emotional_{m}": sum(r[m] for r in rows) / len(rows) for m in METRICS}
    total = sum(weights.get(m, 0.0) for m in METRICS)
    out["emotional_score"] = (
        sum(weights.get(m, 0.0) * out[f"emotional_{m}"] for m in METRICS) / total
    )
    return out


def _select(cfg: EmotionalConfig) -> tuple[str, list[Scenario]]:
    cfg.validate()
    version, scenarios = load_scenarios(cfg.scenario_file)
    return version, scenarios[: cfg.max_scenarios] if cfg.max_scenarios else scenarios


def baseline_emotional(
    fp_model, tokenizer, cfg: EmotionalConfig, encoder: Encoder | None = None
) -> EmotionalBaseline:
    """Replies of the full-precision model and their scores (fluency judged by itself)."""
    version, scenarios = _select(cfg)
    encoder = encoder or Encoder()
    responses = generate_responses(fp_model, tokenizer, [s.prompt for s in scenarios], cfg)
    rows = score_responses(scenarios, responses, tokenizer, fp_model, encoder, cfg)
    return EmotionalBaseline(
        scenario_version=version,
        scenario_ids=[s.id for s in scenarios],
        responses=responses,
        per_response=rows,
        metrics=aggregate(rows, cfg.weights),
    )


def run_emotional(
    model,
    tokenizer,
    cfg: EmotionalConfig,
    baseline: EmotionalBaseline,
    fp_model,
    encoder: Encoder | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, float]:
    """Emotional metrics of ``model`` and its degradation against the fp baseline.

    ``fp_model`` (the full-precision model) judges fluency, so quantized and fp replies are
    scored by the same judge. With ``out_dir`` the replies and per-reply scores are written to
    ``emotional_responses.jsonl``.
    """
    version, scenarios = _select(cfg)
    if baseline.scenario_version != version or baseline.scenario_ids != [s.id for s in scenarios]:
        raise EmotionalSuiteError(
            f"baseline was computed on scenario version {baseline.scenario_version} with "
            f"{len(baseline.scenario_ids)} scenarios; this run uses version {version} with "
            f"{len(scenarios)}: recompute the baseline"
        )
    encoder = encoder or Encoder()
    responses = generate_responses(model, tokenizer, [s.prompt for s in scenarios], cfg)
    rows = score_responses(scenarios, responses, tokenizer, fp_model, encoder, cfg)
    metrics = aggregate(rows, cfg.weights)
    ours = encoder.encode([r or " " for r in responses])
    ref = encoder.encode([r or " " for r in baseline.responses])
    metrics["emotional_fp_similarity"] = float((ours * ref).sum(-1).clamp(min=0).mean())
    metrics["emotional_fp_identical"] = sum(
        a == b for a, b in zip(responses, baseline.responses, strict=True)
    ) / len(responses)
    base = baseline.metrics["emotional_score"]
    deg = (base - metrics["emotional_score"]) / base if base > 0 else 0.0
    metrics["emotional_degradation"] = deg
    passed = deg <= cfg.max_degradation and (
        cfg.min_score is None or metrics["emotional_score"] >= cfg.min_score
    )
    metrics["emotional_passed"] = float(passed)
    if out_dir is not None:
        _write_responses(Path(out_dir), scenarios, responses, rows, baseline)
    return metrics


def _write_responses(out_dir, scenarios, responses, rows, baseline) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "emotional_responses.jsonl", "w", encoding="utf-8") as fh:
        for sc, reply, row, fp_reply in zip(
            scenarios, responses, rows, baseline.responses, strict=True
        ):
            rec = {**asdict(sc), "response": reply, "fp_response": fp_reply, "scores": row}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
