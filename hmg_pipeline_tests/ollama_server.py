"""A local HTTP server speaking Ollama's ``/api/generate`` JSON (non-streaming), for tests.

It checks the request the way Ollama would (model known, prompt present, images base64) and
answers with the fields Ollama returns; tests queue failures to exercise retries and errors.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hmg_pipeline.testing import running


@dataclass
class OllamaState:
    models: set[str] = field(default_factory=lambda: {"llava"})
    requests: list[dict] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)  # HTTP statuses to answer first

    def reply_for(self, body: dict) -> str:
        image = base64.b64decode(body["images"][0])
        return f"  A comment on a {len(image)}-byte photo: {body['prompt'][-40:]}  "


def _handler(state: OllamaState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            if self.path != "/api/generate":
                self._send(404, {"error": "404 page not found"})
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(body)
            if state.failures:
                self._send(state.failures.pop(0), {"error": "server busy"})
                return
            if body.get("model") not in state.models:
                self._send(404, {"error": f"model '{body.get('model')}' not found"})
                return
            try:
                if not body.get("prompt") or not body.get("images"):
                    raise ValueError("prompt and images are required")
                base64.b64decode(body["images"][0], validate=True)
            except (ValueError, binascii.Error) as error:
                self._send(400, {"error": str(error)})
                return
            self._send(
                200,
                {
                    "model": body["model"],
                    "created_at": "2026-11-26T12:00:00.000000Z",
                    "response": state.reply_for(body),
                    "done": True,
                    "done_reason": "stop",
                    "total_duration": 1000000,
                    "prompt_eval_count": 12,
                    "eval_count": 9,
                },
            )

    return Handler


@contextmanager
def ollama_server(state: OllamaState | None = None) -> Iterator[tuple[str, OllamaState]]:
    """``with ollama_server() as (url, state):`` a running server on a free local port."""
    state = state or OllamaState()
    with running(ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))) as url:
        yield url, state
