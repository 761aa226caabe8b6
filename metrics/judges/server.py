"""A minimal OpenAI-compatible chat server over a local transformers model (stdlib http.server).

``python -m metrics.judges.server --model PATH [--host 127.0.0.1] [--port 0] [--name NAME]``
serves ``POST /v1/chat/completions`` and ``GET /v1/models``; it prints
``listening on http://HOST:PORT`` once ready. Requests are served one at a time (one model).
Useful to run an LLM judge out of process, and used by the tests of the HTTP backend.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from metrics.judges.responses import generate_chat, load_candidate


def make_handler(model, tokenizer, model_name: str):
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet
            pass

        def _send(self, code: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, code: int, message: str) -> None:
            self._send(code, {"error": {"message": message, "type": "invalid_request_error"}})

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._error(404, f"no route {self.path}")
            try:
                n = int(self.headers.get("Content-Length", "0"))
                req = json.loads(self.rfile.read(n) or b"{}")
                messages = req["messages"]
                if not isinstance(messages, list) or not all(
                    isinstance(m, dict) and "role" in m and "content" in m for m in messages
                ):
                    raise ValueError("messages must be a list of {role, content}")
            except (ValueError, KeyError) as e:
                return self._error(400, f"bad request: {e}")
            max_tokens = int(req.get("max_tokens") or 128)
            temperature = float(req.get("temperature") or 0.0)
            seed = int(req.get("seed") or 0)
            with lock:
                text = generate_chat(
                    model,
                    tokenizer,
                    messages,
                    max_new_tokens=max_tokens,
                    temperature=temperature,
                    seed=seed,
                )
            self._send(
                200,
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model_name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "length",
                        }
                    ],
                },
            )

    return Handler


def serve(
    model_path: str,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str | None = None,
    tokenizer_path: str | None = None,
) -> None:
    model, tokenizer = load_candidate(model_path, tokenizer_path=tokenizer_path)
    httpd = ThreadingHTTPServer((host, port), make_handler(model, tokenizer, name or "local"))
    print(f"listening on http://{host}:{httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metrics.judges.server", description=__doc__)
    ap.add_argument("--model", required=True, help="GGUF file or HF model directory")
    ap.add_argument("--tokenizer", default=None, help="tokenizer source if not with the model")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    ap.add_argument("--name", default="local", help="model name reported to clients")
    args = ap.parse_args(argv)
    serve(args.model, args.host, args.port, args.name, args.tokenizer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
