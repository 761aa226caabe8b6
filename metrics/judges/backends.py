"""Chat backends for LLM judges: a local transformers model or an OpenAI-compatible endpoint.

Every backend has ``complete(messages, *, max_tokens, temperature, seed) -> str``.
The HTTP client uses only the standard library (urllib): it POSTs to
``{base_url}/chat/completions`` with a timeout, retries transient failures (connection errors,
timeouts, HTTP 429 and 5xx) with exponential backoff, and fails at once on other HTTP errors.
An API key, if any, is read from the environment variable named by ``api_key_env``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from metrics.judges.base import JudgeError


class BackendError(JudgeError):
    """The backend could not produce a completion (after its retries)."""


class ChatBackend(Protocol):
    name: str

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> str: ...


BACKENDS: dict[str, Callable[..., ChatBackend]] = {}


def register_backend(name: str):
    def deco(factory):
        BACKENDS[name] = factory
        return factory

    return deco


def build_backend(type: str, **kwargs: Any) -> ChatBackend:  # noqa: A002 (YAML key)
    if type not in BACKENDS:
        from metrics.judges import unknown_name_error

        raise unknown_name_error("judge backend", type, sorted(BACKENDS))
    return BACKENDS[type](**kwargs)


@register_backend("transformers")
class TransformersBackend:
    """A local causal LM (GGUF file or HF dir), loaded lazily on first use."""

    def __init__(
        self,
        model_path: str | None = None,
        tokenizer_path: str | None = None,
        cache_dir: str | None = None,
        model: Any = None,
        tokenizer: Any = None,
        name: str | None = None,
    ) -> None:
        if model is None and not model_path:
            raise JudgeError("transformers backend: set model_path (a .gguf file or HF directory)")
        self.model_path = model_path
        self.tokenizer_path = tokenizer_path
        self.cache_dir = cache_dir
        self._model = model
        self._tokenizer = tokenizer
        self.name = name or f"transformers:{Path(model_path).name if model_path else 'model'}"

    def _load(self) -> None:
        if self._model is None:
            from metrics.judges.responses import load_candidate

            self._model, self._tokenizer = load_candidate(
                self.model_path, tokenizer_path=self.tokenizer_path, cache_dir=self.cache_dir
            )

    def complete(self, messages, *, max_tokens=256, temperature=0.0, seed=0) -> str:
        from metrics.judges.responses import generate_chat

        self._load()
        return generate_chat(
            self._model,
            self._tokenizer,
            messages,
            max_new_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
        )


_TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}


@register_backend("openai")
class OpenAICompatibleBackend:
    """Any server speaking the OpenAI chat-completions API (vLLM, llama.cpp server, Ollama...)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 0.5,
        api_key_env: str | None = None,
        name: str | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise JudgeError(
                f"openai backend: base_url must start with http:// or https://, got {base_url!r}"
            )
        if timeout <= 0 or retries < 0:
            raise JudgeError("openai backend: timeout must be > 0 and retries >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.api_key_env = api_key_env
        self.name = name or f"openai:{model}"

    def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env and os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[self.api_key_env]}"
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions",
            data=json.dumps(body).encode(),
            headers=headers,
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def complete(self, messages, *, max_tokens=256, temperature=0.0, seed=0) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                data = self._request(body)
                return data["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:300]
                last = BackendError(f"{self.base_url}: HTTP {e.code}: {detail}")
                if e.code not in _TRANSIENT_HTTP:
                    raise last from e
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = BackendError(f"{self.base_url}: {e}")
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
                last = BackendError(f"{self.base_url}: response is not a chat completion ({e})")
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise BackendError(f"{last} (after {self.retries + 1} attempts)")
