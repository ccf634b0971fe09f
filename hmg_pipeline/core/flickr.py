"""Flickr REST client: rate-limited, retrying, and careful never to leak the API key.

Six methods of ``shared/flickr/README.md`` are wrapped. Every request, including every retry,
passes one :class:`RateLimiter` shared by all threads, so the request rate never exceeds
``max_qps`` for the whole run. Transient failures (code 105, HTTP 429 honouring Retry-After,
HTTP 5xx, timeouts, connection errors, a body that is not JSON) are retried by tenacity with
exponential backoff and full jitter; permanent answers are not: code 1 -> :class:`FlickrGone`,
code 2 -> :class:`FlickrPrivate`, code 100 -> :class:`FlickrBadKey` (the caller stops), any
other code or HTTP 4xx -> :class:`FlickrFailed`. A transient failure that outlasts the retries
is raised as :class:`FlickrTransient`; later runs retry the item (see ``flickr_store``).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.flickr.com/services/rest/"
CONFIG_ERROR_CODES = {
    100: "invalid API key",
    111: "format not found",
    112: "method not found",
    116: "bad URL",
}
_JSONP = re.compile(r"^\s*jsonFlickrApi\((.*)\)\s*;?\s*$", re.S)


_KEY_IN_URL = re.compile(r"(api_key=)[^&\s\"']+")


class RedactApiKey(logging.Filter):
    """Rewrites log records of HTTP libraries so that ``api_key=...`` in a URL reads ``***``.

    urllib3 logs every request line at DEBUG, query string included; a user who turns on debug
    logging must still not see the key.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "api_key=" in message:
            record.msg, record.args = _KEY_IN_URL.sub(r"\1***", message), ()
        return True


def install_key_redaction() -> None:
    """Attach :class:`RedactApiKey` to the loggers of requests and urllib3 (idempotent)."""
    for name in ("urllib3.connectionpool", "urllib3", "requests"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactApiKey) for f in logger.filters):
            logger.addFilter(RedactApiKey())


class FlickrError(Exception):
    """Base class; messages never contain the API key."""

    def __init__(
        self, message: str, *, code: int | None = None, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class FlickrGone(FlickrError):
    """Code 1: the photo, group or user no longer exists."""


class FlickrPrivate(FlickrError):
    """Code 2: permission denied / private."""


class FlickrBadKey(FlickrError):
    """Code 100 (or another configuration error): stop the run, retrying cannot help."""


class FlickrFailed(FlickrError):
    """A permanent failure code (or HTTP 4xx) this pipeline has no special meaning for."""


class FlickrTransient(FlickrError):
    """A failure worth retrying; ``retry_after`` is the server's wish in seconds, if any."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.retry_after = retry_after


class RateLimiter:
    """At most ``max_qps`` acquisitions per second, for every thread together.

    Acquisitions are spaced ``1 / (max_qps * (1 - headroom))`` seconds apart (no bursts), so any
    half-open window of W seconds holds at most ``ceil(W * max_qps)`` requests. The small
    headroom (2% by default) absorbs the jitter between our send time and the server's arrival
    time, which could otherwise let the server see one request too many in a window. The clock
    and the sleep are injectable so the ceiling can be tested without waiting. (A spacing
    limiter is used rather than pyrate-limiter's bucket because a bucket allows bursts.)
    """

    def __init__(
        self,
        max_qps: float,
        headroom: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (math.isfinite(max_qps) and max_qps > 0):  # nan would remove the ceiling
            raise ValueError(f"max_qps must be a positive finite number, got {max_qps}")
        if not 0 <= headroom < 1:
            raise ValueError(f"headroom must be in [0, 1), got {headroom}")
        self.interval = 1.0 / (max_qps * (1.0 - headroom))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot: float | None = None

    def acquire(self) -> float:
        """Block until this caller's slot; return the slot time on the limiter's clock."""
        with self._lock:
            now = self._clock()
            slot = now if self._next_slot is None else max(now, self._next_slot)
            self._next_slot = slot + self.interval
        wait = slot - self._clock()
        if wait > 0:
            self._sleep(wait)
        return slot


@dataclass
class FlickrSettings:
    api_key: str
    api_url: str = DEFAULT_API_URL
    max_qps: float = 1.0
    max_attempts: int = 5
    timeout_s: float = 10.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0


@dataclass
class RequestRecord:
    """One HTTP request's outcome, for the fetch log (never the key or the full URL)."""

    method: str
    item_id: str
    attempt: int
    outcome: str
    http_status: int | None
    flickr_code: int | None
    message: str
    at: float


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    first_request_at: float | None = None
    last_request_at: float | None = None

    @property
    def effective_qps(self) -> float:
        if self.first_request_at is None or self.last_request_at is None:
            return 0.0
        span = self.last_request_at - self.first_request_at
        return self.requests / span if span > 0 else float(self.requests)


class FlickrClient:
    """A ``requests.Session`` for Flickr's REST API with one rate ceiling and retries."""

    def __init__(
        self,
        settings: FlickrSettings,
        session: requests.Session | None = None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not settings.api_key:
            raise FlickrBadKey("no Flickr API key given (set FLICKR_API_KEY)")
        install_key_redaction()
        self.settings = settings
        self.session = session or requests.Session()
        self.limiter = limiter or RateLimiter(settings.max_qps)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self.stats = ClientStats()
        self._records: dict[str, list[RequestRecord]] = {}

    # -- the six methods ------------------------------------------------------------------

    def photo_comments(self, photo_id: str) -> list[dict[str, Any]]:
        """All comments of a photo (``flickr.photos.comments.getList``); [] when none."""
        body = self.call("flickr.photos.comments.getList", photo_id, photo_id=photo_id)
        return as_list(body.get("comments", {}).get("comment"))

    def photo_info(self, photo_id: str) -> dict[str, Any]:
        return self.call("flickr.photos.getInfo", photo_id, photo_id=photo_id).get("photo", {})

    def photo_sizes(self, photo_id: str) -> list[dict[str, Any]]:
        body = self.call("flickr.photos.getSizes", photo_id, photo_id=photo_id)
        return as_list(body.get("sizes", {}).get("size"))

    def group_info(self, group_id: str) -> dict[str, Any]:
        return self.call("flickr.groups.getInfo", group_id, group_id=group_id).get("group", {})

    def public_contacts(self, user_id: str, per_page: int = 1000) -> list[dict[str, Any]]:
        """Every page of a user's public contacts."""
        contacts: list[dict[str, Any]] = []
        page, pages = 1, 1
        while page <= pages:
            body = self.call(
                "flickr.contacts.getPublicList",
                user_id,
                user_id=user_id,
                page=str(page),
                per_page=str(per_page),
            ).get("contacts", {})
            contacts.extend(as_list(body.get("contact")))
            pages = int(body.get("pages") or 1)
            page += 1
        return contacts

    def public_groups(self, user_id: str) -> list[dict[str, Any]]:
        body = self.call("flickr.people.getPublicGroups", user_id, user_id=user_id)
        return as_list(body.get("groups", {}).get("group"))

    def download(self, url: str, item_id: str) -> bytes:
        """Fetch a static image (rate-limited and retried like the API calls)."""
        return self._with_retries("download", item_id, lambda attempt: self._get_bytes(url))

    # -- machinery ------------------------------------------------------------------------

    def call(self, method: str, item_id: str, **params: str) -> dict[str, Any]:
        """Call ``method``; return the parsed body of a ``stat: ok`` answer."""
        query = {
            "method": method,
            "api_key": self.settings.api_key,
            "format": "json",
            "nojsoncallback": "1",
            **params,
        }
        return self._with_retries(method, item_id, lambda attempt: self._request(query))

    def _with_retries(self, method: str, item_id: str, send: Callable[[int], Any]) -> Any:
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(FlickrTransient),
            before_sleep=self._count_retry,
            sleep=self._sleep,
            reraise=True,
        )
        for attempt in retrying:
            number = attempt.retry_state.attempt_number
            with attempt:
                try:
                    result = send(number)
                except FlickrError as error:
                    self._record(method, item_id, number, error)
                    raise
                self._record(method, item_id, number, None)
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _count_retry(self, state: RetryCallState) -> None:
        # Counted here, not in _wait: tenacity computes a wait before the stop check too.
        with self._lock:
            self.stats.retries += 1

    def _wait(self, state: RetryCallState) -> float:
        """Full-jitter exponential backoff, never shorter than the server's Retry-After."""
        ceiling = min(
            self.settings.backoff_max_s,
            self.settings.backoff_base_s * 2 ** (state.attempt_number - 1),
        )
        wait = self._rng.uniform(0, ceiling)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, FlickrTransient) and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait

    def _send(self, url: str, params: dict[str, str] | None = None) -> requests.Response:
        self.limiter.acquire()
        now = time.time()
        with self._lock:
            self.stats.requests += 1
            self.stats.first_request_at = self.stats.first_request_at or now
            self.stats.last_request_at = now
        try:
            return self.session.get(url, params=params, timeout=self.settings.timeout_s)
        # ``from None``: a requests exception's text holds the request URL, and so the key.
        except requests.Timeout:
            raise FlickrTransient(f"timed out after {self.settings.timeout_s}s") from None
        except requests.ConnectionError as error:
            raise FlickrTransient(f"connection failed: {type(error).__name__}") from None

    def _request(self, query: dict[str, str]) -> dict[str, Any]:
        response = self._send(self.settings.api_url, query)
        raise_for_http(response)
        body = parse_body(response.text)
        if body.get("stat") == "ok":
            return body
        code = int(body.get("code", -1))
        message = str(body.get("message", "no message"))
        if code == 1:
            raise FlickrGone(f"code 1: {message}", code=code)
        if code == 2:
            raise FlickrPrivate(f"code 2: {message}", code=code)
        if code == 105:
            raise FlickrTransient(f"code 105: {message}", code=code)
        if code in CONFIG_ERROR_CODES:
            raise FlickrBadKey(
                f"Flickr answered code {code} ({CONFIG_ERROR_CODES[code]}): {message}; "
                "check FLICKR_API_KEY and FLICKR_API_URL",
                code=code,
            )
        raise FlickrFailed(f"code {code}: {message}", code=code)

    def _get_bytes(self, url: str) -> bytes:
        response = self._send(url)
        if response.status_code == 404:
            raise FlickrGone("HTTP 404", http_status=404)
        raise_for_http(response)
        return response.content

    def _record(self, method: str, item_id: str, attempt: int, error: FlickrError | None) -> None:
        outcome = "ok" if error is None else _outcome_of(error)
        record = RequestRecord(
            method=method,
            item_id=item_id,
            attempt=attempt,
            outcome=outcome,
            http_status=None if error is None else error.http_status,
            flickr_code=None if error is None else error.code,
            message="" if error is None else str(error),
            at=time.time(),
        )
        with self._lock:
            self._records.setdefault(item_id, []).append(record)

    def take_records(self, item_id: str) -> list[RequestRecord]:
        """The request records of ``item_id`` since the last call, for the fetch log."""
        with self._lock:
            return self._records.pop(item_id, [])


def raise_for_http(response: requests.Response) -> None:
    """HTTP 429 and 5xx are transient (429 honours Retry-After); other 4xx are permanent."""
    status = response.status_code
    if status == 429 or status >= 500:
        raise FlickrTransient(
            f"HTTP {status}", retry_after=_retry_after(response), http_status=status
        )
    if status >= 400:
        raise FlickrFailed(f"HTTP {status}", http_status=status)


def parse_body(text: str) -> dict[str, Any]:
    """Parse a JSON or JSONP (``jsonFlickrApi(...)``) body; a broken body is transient."""
    match = _JSONP.match(text)
    payload = match.group(1) if match else text
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as error:
        raise FlickrTransient(f"body is not JSON ({error.msg} at char {error.pos})") from None
    if not isinstance(body, dict):
        raise FlickrTransient("body is JSON but not an object")
    return body


def as_list(value: Any) -> list[dict[str, Any]]:
    """Flickr drops empty lists and may send a lone element as an object."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def content(value: Any) -> str | None:
    """Text of a Flickr text node (``{"_content": ...}``) or a plain string."""
    if isinstance(value, dict):
        value = value.get("_content")
    return None if value is None else str(value)


def medium_rendition(sizes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The 'Medium' size if listed, else the largest rendition not wider than 640 px."""
    for size in sizes:
        if str(size.get("label", "")).lower() == "medium":
            return size
    fitting = [s for s in sizes if int(s.get("width") or 0) <= 640]
    return max(fitting, key=lambda s: int(s.get("width") or 0)) if fitting else None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _outcome_of(error: FlickrError) -> str:
    return {
        FlickrGone: "gone",
        FlickrPrivate: "private",
        FlickrTransient: "transient",
        FlickrBadKey: "bad_key",
    }.get(type(error), "failed")
