"""The Flickr client against a local server speaking Flickr's JSON, and the rate limiter."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest

from hmg_pipeline.core.flickr import (
    FlickrBadKey,
    FlickrClient,
    FlickrFailed,
    FlickrGone,
    FlickrPrivate,
    FlickrSettings,
    FlickrTransient,
    RateLimiter,
    medium_rendition,
)
from hmg_pipeline.core.refetch import UndecodableImage, classify
from hmg_pipeline.testing.flickr_server import (
    BAD_KEY,
    GONE,
    TRANSIENT,
    FakeFlickr,
    Outage,
    Reply,
    comment,
    serve,
)

KEY = "test-key-5f1b2c"


@pytest.fixture
def flickr() -> Iterator[FakeFlickr]:
    state = FakeFlickr(api_key=KEY, comments={"100": [comment("c-1", "Very nice shot!")]})
    with serve(state) as running:
        yield running


def make_client(flickr: FakeFlickr, **overrides) -> tuple[FlickrClient, list[float]]:
    sleeps: list[float] = []
    settings = FlickrSettings(
        api_key=KEY,
        api_url=flickr.base_url,
        max_qps=1000.0,
        max_attempts=4,
        timeout_s=2.0,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
    )
    for name, value in overrides.items():
        setattr(settings, name, value)
    return FlickrClient(settings, sleep=sleeps.append), sleeps


def test_comments_ok_and_photo_without_comments(flickr: FakeFlickr) -> None:
    client, _ = make_client(flickr)
    comments = client.photo_comments("100")
    assert [(c["id"], c["_content"]) for c in comments] == [("c-1", "Very nice shot!")]
    assert client.photo_comments("200") == []  # body has no "comment" key at all


def test_code_1_is_gone_and_not_retried(flickr: FakeFlickr) -> None:
    flickr.gone.add("100")
    client, sleeps = make_client(flickr)
    with pytest.raises(FlickrGone):
        client.photo_comments("100")
    assert len(flickr.requests) == 1 and sleeps == []
    assert [r.outcome for r in client.take_records("100")] == ["gone"]


def test_code_2_is_private(flickr: FakeFlickr) -> None:
    flickr.private.add("g1")
    client, _ = make_client(flickr)
    with pytest.raises(FlickrPrivate):
        client.group_info("g1")


def test_code_105_then_ok(flickr: FakeFlickr) -> None:
    flickr.script[("flickr.photos.comments.getList", "100")] = [TRANSIENT]
    client, sleeps = make_client(flickr)
    assert len(client.photo_comments("100")) == 1
    assert len(flickr.requests) == 2 and len(sleeps) == 1
    assert client.stats.retries == 1
    assert [r.outcome for r in client.take_records("100")] == ["transient", "ok"]


def test_http_429_honours_retry_after(flickr: FakeFlickr) -> None:
    flickr.script[("flickr.photos.comments.getList", "100")] = [
        Reply(status=429, text="slow down", headers={"Retry-After": "7"})
    ]
    client, sleeps = make_client(flickr)
    assert len(client.photo_comments("100")) == 1
    assert sleeps == [7.0]  # jittered backoff (<= 0.05 s) is raised to the server's wish


def test_http_500_twice_then_ok(flickr: FakeFlickr) -> None:
    flickr.script[("flickr.photos.comments.getList", "100")] = [
        Reply(status=500, text="oops"),
        Reply(status=503, text="later"),
    ]
    client, sleeps = make_client(flickr)
    assert len(client.photo_comments("100")) == 1
    assert len(flickr.requests) == 3 and len(sleeps) == 2
    assert all(0 <= s <= 0.05 for s in sleeps)


def test_truncated_body_is_retried(flickr: FakeFlickr) -> None:
    flickr.script[("flickr.photos.comments.getList", "100")] = [
        Reply(text='{"comments": {"photo_id": "100", "comm')
    ]
    client, _ = make_client(flickr)
    assert len(client.photo_comments("100")) == 1
    records = client.take_records("100")
    assert records[0].outcome == "transient" and "not JSON" in records[0].message


def test_jsonp_body_is_accepted(flickr: FakeFlickr) -> None:
    flickr.jsonp = True
    client, _ = make_client(flickr)
    assert client.photo_comments("100")[0]["id"] == "c-1"


def test_response_slower_than_timeout_is_retried(flickr: FakeFlickr) -> None:
    flickr.script[("flickr.photos.comments.getList", "100")] = [
        Reply(json_body={"stat": "ok", "comments": {}}, delay_s=1.0)
    ]
    client, _ = make_client(flickr, timeout_s=0.2)
    assert len(client.photo_comments("100")) == 1
    assert [r.outcome for r in client.take_records("100")] == ["transient", "ok"]


def test_bad_key_stops_with_a_clear_error_without_the_key(flickr: FakeFlickr) -> None:
    client, _ = make_client(flickr, api_key="wrong-key-123")
    with pytest.raises(FlickrBadKey, match=r"code 100 .*FLICKR_API_KEY") as excinfo:
        client.photo_comments("100")
    assert "wrong-key-123" not in str(excinfo.value)
    assert len(flickr.requests) == 1


def test_transient_failures_give_up_after_max_attempts(flickr: FakeFlickr) -> None:
    flickr.script[("flickr.photos.comments.getList", "100")] = [TRANSIENT] * 10
    client, _ = make_client(flickr, max_attempts=3)
    with pytest.raises(FlickrTransient):
        client.photo_comments("100")
    assert len(flickr.requests) == 3
    assert client.stats.retries == 2  # the give-up after the 3rd attempt is no retry


def test_connection_refused_is_transient_and_hides_the_url() -> None:
    settings = FlickrSettings(
        api_key=KEY, api_url="http://127.0.0.1:9/", max_qps=1000, max_attempts=2, backoff_base_s=0.0
    )
    client = FlickrClient(settings, sleep=lambda s: None)
    with pytest.raises(FlickrTransient) as excinfo:
        client.photo_comments("100")
    chain, error = [], excinfo.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    assert KEY not in " ".join(chain)


def test_other_methods_follow_flickrs_shapes(flickr: FakeFlickr) -> None:
    flickr.groups["g1"] = ("Night skies", "Stars and the Milky Way")
    client, _ = make_client(flickr)
    assert client.group_info("g1")["description"] == {"_content": "Stars and the Milky Way"}
    sizes = client.photo_sizes("100")
    assert medium_rendition(sizes)["width"] == 500
    assert client.photo_info("100")["id"] == "100"
    contacts = client.public_contacts("u1", per_page=1)
    assert [c["nsid"] for c in contacts] == ["12037949629@N01", "12037949631@N01"]  # 2 pages
    assert client.public_groups("u1")[0]["nsid"] == "34427469792@N01"


def test_an_outage_drops_connections_then_answers_503_then_recovers(flickr: FakeFlickr) -> None:
    flickr.outage = Outage(after=0, length=2)
    client, sleeps = make_client(flickr)
    assert len(client.photo_comments("100")) == 1
    records = client.take_records("100")
    assert [r.outcome for r in records] == ["transient", "transient", "ok"]
    assert records[0].message.startswith("connection failed") and records[1].http_status == 503
    assert len(sleeps) == 2


def test_an_unknown_code_is_failed_and_not_retried(flickr: FakeFlickr) -> None:
    flickr.script[("flickr.photos.comments.getList", "100")] = [
        Reply(json_body={"stat": "fail", "code": 99, "message": "Insufficient permissions"})
    ]
    client, sleeps = make_client(flickr)
    with pytest.raises(FlickrFailed, match="code 99"):
        client.photo_comments("100")
    assert len(flickr.requests) == 1 and sleeps == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (FlickrTransient("HTTP 503"), "error"),
        (UndecodableImage("does not decode"), "error"),
        (FlickrFailed("code 99"), "failed"),
        (FlickrGone("code 1"), "gone"),
        (FlickrPrivate("code 2"), "private"),
    ],
)
def test_classify_maps_errors_to_item_statuses(error: Exception, status: str) -> None:
    def fetch(item_id: str) -> None:
        raise error

    assert classify(fetch, "1") == (status, None, str(error))
    assert classify(lambda item_id: {"x": 1}, "1") == ("ok", {"x": 1}, "")


def test_unknown_bad_key_reply_for_one_item_is_fatal(flickr: FakeFlickr) -> None:
    flickr.script[("flickr.photos.comments.getList", "100")] = [BAD_KEY]
    client, _ = make_client(flickr)
    with pytest.raises(FlickrBadKey):
        client.photo_comments("100")
    flickr.script[("flickr.photos.comments.getList", "300")] = [GONE]
    with pytest.raises(FlickrGone):
        client.photo_comments("300")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def test_limiter_spaces_requests_across_threads() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_qps=2.0, headroom=0.0, clock=clock, sleep=clock.sleep)
    slots: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            slot = limiter.acquire()
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slots.sort()
    assert len(slots) == 200
    assert all(b - a == pytest.approx(0.5) for a, b in itertools.pairwise(slots))
    worst = max(sum(1 for s in slots if start <= s < start + 10) for start in slots)
    assert worst <= 10 * 2.0
    assert sorted(clock.sleeps)[-1] == pytest.approx(199 * 0.5)


def test_limiter_grants_no_burst_after_idle() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_qps=1.0, headroom=0.0, clock=clock, sleep=clock.sleep)
    assert limiter.acquire() == 0.0
    clock.now = 100.0  # a long pause earns no credit
    assert [limiter.acquire() for _ in range(3)] == [100.0, 101.0, 102.0]


def test_limiter_keeps_headroom_below_the_ceiling() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_qps=5.0, clock=clock, sleep=clock.sleep)
    slots = [limiter.acquire() for _ in range(101)]
    # 2% headroom: 50 requests span more than 10 s, so jitter cannot fit a 51st in a window.
    assert slots[50] - slots[0] > 10.0 + 0.1
    assert max(sum(1 for s in slots if t <= s < t + 10) for t in slots) == 50


def test_limiter_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(1.0, headroom=1.0)
