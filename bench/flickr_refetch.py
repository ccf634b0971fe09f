"""Refetch comments of N photos from a local fake Flickr with a share of transient failures.

python -m bench.flickr_refetch [--photos 2000] [--failure-rate 0.2] [--max-qps 50] [--workers 8]
    [--outage-requests 0]

Reports wall time, requests, retries, and the highest request count in any 10-second window
(measured on the server's clock); checks that the rate never exceeds the ceiling and that the
request count is photos + retries, within photos x max_attempts. ``--outage-requests N``
takes Flickr down for N requests a third into the run. Photos left in ``error`` are then
fetched by a second, plain run (what the next materialisation does automatically), which must
leave none in error.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import tempfile
import time
from pathlib import Path

from hmg_pipeline.core.flickr import FlickrClient, FlickrSettings
from hmg_pipeline.core.flickr_store import FlickrStore
from hmg_pipeline.core.progress import Progress
from hmg_pipeline.core.refetch import refetch_comments
from hmg_pipeline.testing.flickr_server import FakeFlickr, Outage, comment, serve

KEY = "bench-key"


def busiest_window(times: list[float], window: float) -> int:
    """Most requests in any half-open window [t, t + window) starting at a request."""
    times = sorted(times)
    return max(bisect.bisect_left(times, t + window) - i for i, t in enumerate(times))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--failure-rate", type=float, default=0.2)
    parser.add_argument("--max-qps", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--max-attempts", type=int, default=6)
    parser.add_argument("--outage-requests", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    photos = [str(10_000 + i) for i in range(args.photos)]
    state = FakeFlickr(
        api_key=KEY,
        comments={p: [comment(f"{p}-c", f"comment on {p}")] for p in photos},
        transient_rate=args.failure_rate,
        outage=Outage(after=args.photos // 3, length=args.outage_requests)
        if args.outage_requests
        else None,
    )
    with serve(state), tempfile.TemporaryDirectory() as tmp:
        settings = FlickrSettings(
            api_key=KEY,
            api_url=state.base_url,
            max_qps=args.max_qps,
            max_attempts=args.max_attempts,
            timeout_s=5.0,
            backoff_base_s=0.5,
            backoff_max_s=8.0,
        )
        client = FlickrClient(settings)
        started = time.perf_counter()
        wanted = {p: [f"{p}-c"] for p in photos}
        with FlickrStore(Path(tmp) / "flickr.duckdb") as store:
            progress = Progress(len(photos), "bench photos", logging.info)
            summary = refetch_comments(client, store, wanted, args.workers, progress)
            wall = time.perf_counter() - started
            # The next run: no re-check, yet the photos left in error are due again.
            due = store.due("comments", [c for ids in wanted.values() for c in ids], False, 30)
            again = {p: ids for p, ids in wanted.items() if due.intersection(ids)}
            state.transient_rate = 0.0
            rerun = refetch_comments(
                FlickrClient(settings),
                store,
                again,
                args.workers,
                Progress(len(again), "bench rerun", logging.info),
            )
            left_in_error = store.errors("comments", list(due)).height

    times = [t for method, _, t in state.requests if method]
    busiest = busiest_window(times, 10.0)
    requests, retries = client.stats.requests, client.stats.retries
    print(
        f"photos={args.photos} failure_rate={args.failure_rate} max_qps={args.max_qps} "
        f"workers={args.workers}"
    )
    print(
        f"wall_s={wall:.1f} requests={requests} retries={retries} statuses={dict(summary.statuses)}"
    )
    print(
        f"busiest_10s_window={busiest} requests -> {busiest / 10:.2f} req/s "
        f"(ceiling {args.max_qps}); mean rate {requests / wall:.2f} req/s"
    )
    assert busiest / 10 <= args.max_qps, f"rate ceiling exceeded: {busiest} in 10 s"
    # Every photo costs one request plus one per retry, whether or not it ended in error.
    exhausted = summary.statuses.get("error", 0)
    assert requests == args.photos + retries, "unaccounted requests"
    assert requests <= args.photos * args.max_attempts
    print(f"rerun: {len(again)} photo(s) due again, statuses={dict(rerun.statuses)}")
    assert len(again) == exhausted, "every photo left in error is due on the next run"
    assert left_in_error == 0, f"{left_in_error} item(s) still in error after the rerun"
    print(
        "checks: rate within ceiling; requests == photos + retries <= photos x max_attempts; "
        f"the rerun fetched every photo left in error ({exhausted})"
    )


if __name__ == "__main__":
    main()
