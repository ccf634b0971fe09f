"""A local HTTP server speaking the OpenAI chat-completions API with images, as vLLM, SGLang,
TGI and Ollama's ``/v1`` serve it, for the tests and the serving benchmark.

It checks a request the way vLLM does (bearer key when one is set, model served, a text part
and a base64 ``image_url`` data URL), answers with the body shape vLLM returns after a fixed
latency (a loaded GPU server's time per request), and counts requests in flight, so tests and
``bench/llava_serving.py`` can see the client's concurrency. Failures can be queued (429 with
``Retry-After``, 5xx, dropped connections) to exercise the client's retries.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hmg_pipeline.testing import running

SERVED_MODEL = "llava-hf/llava-1.5-7b-hf"


@dataclass
class OpenAIState:
    """What the server serves and saw. ``failures``: HTTP statuses to answer, in order, before
    serving normally (0 drops the connection); ``refuse_after``: requests after that many are
    answered 400; ``latency_s``: time per answered request."""

    models: tuple[str, ...] = (SERVED_MODEL,)
    api_key: str | None = None
    latency_s: float = 0.0
    failures: list[int] = field(default_factory=list)
    refuse_after: int | None = None
    retry_after: str | None = "0"
    requests: list[dict] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    completed: int = 0  # requests answered with a comment
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply_for(self, prompt: str, image: bytes) -> str:
        """A deterministic comment that shows which image and prompt it answered."""
        return f'  "A comment on a {len(image)}-byte photo: {prompt[-40:]}"  '

    def next_failure(self) -> int | None:
        with self.lock:
            if self.failures:
                return self.failures.pop(0)
            if self.refuse_after is not None and len(self.requests) > self.refuse_after:
                return 400
            return None


def _error(message: str, kind: str, code: int) -> dict:
    """vLLM's error body."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def parse_request(body: dict) -> tuple[str, bytes]:
    """The prompt and image bytes of a chat request with one user turn; ValueError otherwise."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    content = messages[-1].get("content")
    if not isinstance(content, list):
        raise ValueError("content must be a list of parts (text and image_url)")
    texts = [part["text"] for part in content if part.get("type") == "text"]
    urls = [part["image_url"]["url"] for part in content if part.get("type") == "image_url"]
    if len(texts) != 1 or len(urls) != 1:
        raise ValueError("expected one text part and one image_url part")
    header, _, data = urls[0].partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ValueError(f"image_url must be a base64 data URL, not {header[:40]!r}")
    try:
        return texts[0], base64.b64decode(data, validate=True)
    except binascii.Error as error:
        raise ValueError(f"invalid base64 image: {error}") from None


def _handler(state: OpenAIState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real server
        disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms ACK wait)

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if state.api_key and self.headers.get("Authorization") != f"Bearer {state.api_key}":
                self._send(401, _error("Unauthorized", "AuthenticationError", 401))
                return False
            return True

        def do_GET(self) -> None:
            if self.path != "/v1/models":
                self._send(404, _error("Not Found", "NotFoundError", 404))
                return
            if self._authorised():
                data = [{"id": m, "object": "model", "owned_by": "vllm"} for m in state.models]
                self._send(200, {"object": "list", "data": data})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            with state.lock:
                state.requests.append(body)
                state.headers.append(dict(self.headers))
            if self.path != "/v1/chat/completions":
                self._send(404, _error("Not Found", "NotFoundError", 404))
                return
            failure = state.next_failure()
            if failure == 0:
                self.close_connection = True
                self.connection.shutdown(2)  # a dropped connection: no answer at all
                return
            if failure is not None:
                retry = {"Retry-After": state.retry_after} if state.retry_after else {}
                self._send(failure, _error("busy", "ServiceUnavailableError", failure), retry)
                return
            if not self._authorised():
                return
            if body.get("model") not in state.models:
                message = f"The model `{body.get('model')}` does not exist."
                self._send(404, _error(message, "NotFoundError", 404))
                return
            try:
                prompt, image = parse_request(body)
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                self._send(400, _error(str(error), "BadRequestError", 400))
                return
            with state.lock:
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                time.sleep(state.latency_s)
            finally:
                with state.lock:
                    state.in_flight -= 1
                    state.completed += 1
            self._send(
                200,
                {
                    "id": f"chatcmpl-{len(state.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": state.reply_for(prompt, image),
                                "tool_calls": [],
                            },
                            "logprobs": None,
                            "finish_reason": "stop",
                            "stop_reason": None,
                        }
                    ],
                    "usage": {"prompt_tokens": 600, "total_tokens": 620, "completion_tokens": 20},
                },
            )

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: many clients connect at once


def make_server(state: OpenAIState, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """The server for ``state`` (port 0: a free one), not yet serving."""
    return _Server((host, port), _handler(state))


@contextmanager
def openai_server(state: OpenAIState | None = None) -> Iterator[tuple[str, OpenAIState]]:
    """``with openai_server(state) as (base_url, state):``; ``base_url`` ends in ``/v1``."""
    state = state or OpenAIState()
    with running(make_server(state)) as url:
        yield f"{url}/v1", state


def main(argv: list[str] | None = None) -> None:
    """Serve until Ctrl-C: ``python -m hmg_pipeline.testing.openai_server --port 8000``, then
    ``HMG_LLAVA_BACKEND=openai`` runs the pipeline's LLaVA assets against it (its comments are
    canned: a wiring check, not LLaVA)."""
    import argparse

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible LLaVA server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--model", default=SERVED_MODEL)
    args = parser.parse_args(argv)
    state = OpenAIState(models=(args.model,), latency_s=args.latency_ms / 1000)
    server = make_server(state, args.host, args.port)
    print(f"fake OpenAI-compatible server on http://{args.host}:{args.port}/v1 ({args.model})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print(f"{state.completed} requests answered, at most {state.max_in_flight} in flight")


if __name__ == "__main__":
    main()
