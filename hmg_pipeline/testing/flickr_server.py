"""A local HTTP server that speaks Flickr's REST JSON (bodies from shared/flickr/, copied into
``flickr_bodies/``), with scriptable failures, for testing the client and the Flickr assets."""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from hmg_pipeline.testing import running

BODIES = Path(__file__).parent / "flickr_bodies"


def body(name: str) -> dict[str, Any]:
    return json.loads((BODIES / f"{name}.json").read_text(encoding="utf-8"))


def comment(comment_id: str, text: str, author_is_deleted: int = 0) -> dict[str, Any]:
    """A comment in the shape of comments_getList_ok.json."""
    template = copy.deepcopy(body("comments_getList_ok")["comments"]["comment"][0])
    template.update(id=comment_id, _content=text, author_is_deleted=author_is_deleted)
    return template


@dataclass
class Reply:
    """A scripted reply: a JSON body, a raw text body, an HTTP status, headers, a delay."""

    json_body: dict[str, Any] | None = None
    text: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False  # close the connection without answering (a connection error)


TRANSIENT = Reply(json_body=body("service_unavailable"))
GONE = Reply(json_body=body("photo_not_found"))
PRIVATE = Reply(json_body={"stat": "fail", "code": 2, "message": "Permission denied"})
RANDOM_TRANSIENTS = (
    TRANSIENT,
    Reply(status=429, text="Too Many Requests", headers={"Retry-After": "1"}),
    Reply(status=500, text="Internal Server Error"),
    Reply(status=502, text="Bad Gateway"),
    Reply(text='{"comments": {"photo_id": "1", "comm'),
)
BAD_KEY = Reply(json_body={"stat": "fail", "code": 100, "message": "Invalid API Key"})
DROPPED = Reply(drop=True)
UNAVAILABLE = Reply(status=503, text="Service Unavailable")


@dataclass
class Outage:
    """Flickr down for a while, counted in requests so tests are deterministic: after ``after``
    requests (API calls and downloads) the next ``length`` get ``replies`` in turn."""

    after: int
    length: int
    replies: tuple[Reply, ...] = (DROPPED, UNAVAILABLE, TRANSIENT)
    seen: int = 0

    def next_reply(self) -> Reply | None:
        """The failure for the current request, or None when Flickr is up for it."""
        index, self.seen = self.seen - self.after, self.seen + 1
        if 0 <= index < self.length:
            return self.replies[index % len(self.replies)]
        return None


@dataclass
class FakeFlickr:
    """State of the fake service; tests edit it between runs."""

    api_key: str
    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    private: set[str] = field(default_factory=set)
    groups: dict[str, tuple[str, str]] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)
    # (method, item id) -> replies served, in order, before the normal answer
    script: dict[tuple[str, str], list[Reply]] = field(default_factory=dict)
    jsonp: bool = False
    # share of API requests answered by a random transient failure (benchmarks)
    transient_rate: float = 0.0
    outage: Outage | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    requests: list[tuple[str, str, float]] = field(default_factory=list)
    served_ok: Counter[tuple[str, str]] = field(default_factory=Counter)
    raw_queries: list[str] = field(default_factory=list)
    base_url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, params: dict[str, str]) -> Reply:
        item = params.get("photo_id") or params.get("group_id") or params.get("user_id") or ""
        with self.lock:
            self.requests.append((method, item, time.monotonic()))
            down = self.outage.next_reply() if self.outage else None
            if down is not None:
                return down
            queue = self.script.get((method, item))
            if queue:
                return queue.pop(0)
            if self.transient_rate and self.rng.random() < self.transient_rate:
                return self.rng.choice(RANDOM_TRANSIENTS)
        if params.get("api_key") != self.api_key:
            return BAD_KEY
        reply = self.normal_answer(method, item, params)
        if reply.json_body and reply.json_body.get("stat") == "ok":
            with self.lock:
                self.served_ok[(method, item)] += 1
        return reply

    def normal_answer(self, method: str, item: str, params: dict[str, str]) -> Reply:
        if item in self.gone:
            return GONE
        if item in self.private:
            return PRIVATE
        if method == "flickr.photos.comments.getList":
            found = self.comments.get(item, [])
            answer = body("comments_getList_empty")
            answer["comments"]["photo_id"] = item
            if found:
                answer["comments"]["comment"] = found
            return Reply(json_body=answer)
        if method == "flickr.photos.getSizes":
            answer = body("photos_getSizes_ok")
            for size in answer["sizes"]["size"]:
                size["source"] = f"{self.base_url}static/{item}.jpg"
            return Reply(json_body=answer)
        if method == "flickr.groups.getInfo":
            answer = body("groups_getInfo_ok")
            name, description = self.groups.get(item, ("Group " + item, ""))
            answer["group"].update(
                id=item, name={"_content": name}, description={"_content": description}
            )
            return Reply(json_body=answer)
        if method == "flickr.photos.getInfo":
            return Reply(json_body={"photo": {"id": item}, "stat": "ok"})
        if method == "flickr.contacts.getPublicList":
            answer = body("contacts_getPublicList_ok")
            page = int(params.get("page", "1"))
            answer["contacts"].update(page=page, pages=2, perpage=1)
            answer["contacts"]["contact"] = [answer["contacts"]["contact"][page - 1]]
            return Reply(json_body=answer)
        if method == "flickr.people.getPublicGroups":
            return Reply(json_body=body("people_getPublicGroups_ok"))
        return Reply(json_body={"stat": "fail", "code": 112, "message": "Method not found"})


def make_handler(state: FakeFlickr) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            with state.lock:
                state.raw_queries.append(self.path)
            if url.path.startswith("/static/"):
                image_id = url.path.rsplit("/", 1)[-1].removesuffix(".jpg")
                with state.lock:
                    state.requests.append(("download", image_id, time.monotonic()))
                    down = state.outage.next_reply() if state.outage else None
                if down is not None:
                    text = down.text if down.json_body is None else json.dumps(down.json_body)
                    self._send(down, (text or "").encode())
                    return
                data = state.images.get(image_id)
                self._send(Reply(text=None, status=200 if data else 404), data or b"")
                return
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            reply = state.answer(params.get("method", ""), params)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.text is not None:
                payload = reply.text.encode()
            else:
                text = json.dumps(reply.json_body)
                if state.jsonp or params.get("nojsoncallback") != "1":
                    text = f"jsonFlickrApi({text})"
                payload = text.encode()
            self._send(reply, payload)

        def _send(self, reply: Reply, payload: bytes) -> None:
            if reply.drop:
                self.close_connection = True
                return
            try:
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serve(state: FakeFlickr) -> Iterator[FakeFlickr]:
    with running(ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))) as url:
        state.base_url = f"{url}/"
        yield state
