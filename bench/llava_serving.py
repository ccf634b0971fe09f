"""LLaVA generations per second through the OpenAI-compatible backend, by requests in flight.

A local server (hmg_pipeline/testing/openai_server.py) answers every chat completion after a
fixed latency, as a loaded GPU server does; the client is the pipeline's own path:
``generate_with_cache`` (DuckDB cache writes included) over ``OpenAILlava`` with the bundled
sample's JPEGs base64-encoded into each request.

    python -m bench.llava_serving --latency-ms 200 --concurrency 1 8 32 --seconds 5 --repeats 3
    python -m bench.llava_serving --photos   # 500x375 JPEGs (~100 KB) instead of the sample's

Reports per concurrency the median generations/s over --repeats runs, the speed-up over the
first concurrency (same run), the ideal (concurrency / latency) and the most requests the
server saw in flight.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from hmg_pipeline.core.llava import GenerationCache, OpenAILlava, generate_with_cache
from hmg_pipeline.testing.openai_server import SERVED_MODEL, OpenAIState, openai_server

SAMPLE_IMAGES = Path(__file__).resolve().parents[1] / "data" / "sample" / "images"


def sample_images(count: int, photos: bool) -> dict[str, bytes]:
    """Up to ``count`` JPEGs by name: the bundled sample's (small), or with ``photos``
    photo-sized 500x375 ones (~100 KB, like Flickr's medium size)."""
    if photos:
        from bench.embeddings import write_jpegs

        with tempfile.TemporaryDirectory() as tmp:
            files = write_jpegs(Path(tmp), count)
            return {path.name: path.read_bytes() for path in files}
    files = sorted(SAMPLE_IMAGES.glob("*.jpg"))[:count]
    if not files:
        raise SystemExit(f"no JPEGs in {SAMPLE_IMAGES}")
    return {path.name: path.read_bytes() for path in files}


def one_run(url: str, concurrency: int, requests: int, images: dict[str, bytes], cache: Path):
    """(generations/s, most in flight) for ``requests`` distinct (prompt, image) keys."""
    names = list(images)
    run = time.time_ns()  # fresh prompts: nothing comes from the cache
    keys = [(f"prompt {run} {i}", names[i % len(names)]) for i in range(requests)]
    with GenerationCache(cache) as store:
        result = generate_with_cache(  # it closes the client when done
            ("openai", f"{SERVED_MODEL}|bench"),
            lambda: OpenAILlava(url, SERVED_MODEL, concurrency=concurrency),
            store,
            keys,
            images.__getitem__,
            batch_size=max(64, concurrency),
        )
    assert result.generated == requests, result
    return result.generated / result.seconds_generating


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=5.0, help="ideal length of one run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--photos", action="store_true", help="500x375 JPEGs, not the sample's")
    args = parser.parse_args(argv)

    images = sample_images(args.images, args.photos)
    latency = args.latency_ms / 1000
    size = statistics.median(len(data) for data in images.values())
    print(
        f"fake server: {args.latency_ms:g} ms per request; {len(images)} JPEGs "
        f"(median {size / 1024:.0f} KiB); median of {args.repeats} runs"
    )
    print("| concurrency | requests | generations/s | speed-up | ideal | max in flight |")
    print("|---|---|---|---|---|---|")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        state = OpenAIState(latency_s=latency)
        with openai_server(state) as (url, state):
            for concurrency in args.concurrency:
                requests = max(1, round(args.seconds / latency * concurrency))
                state.max_in_flight = 0
                rates = [
                    one_run(url, concurrency, requests, images, Path(tmp) / "cache.duckdb")
                    for _ in range(args.repeats)
                ]
                rate = statistics.median(rates)
                base = base or rate
                print(
                    f"| {concurrency} | {requests} | {rate:.1f} | {rate / base:.1f}x | "
                    f"{concurrency / latency:.0f} | {state.max_in_flight} |"
                )


if __name__ == "__main__":
    main()
