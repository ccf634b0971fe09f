"""Time the sample generator at both scales (median of N runs) and print a markdown row each.

python bench/sample_generation.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from hmg_pipeline.core import sample


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| scale | median s | min s | max s | size MB |")
    print("|---|---|---|---|---|")
    for scale in ("small", "iesn"):
        times, size = [], 0
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                sample.generate(Path(tmp), seed=0, scale=scale)
                times.append(time.perf_counter() - started)
                size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
        print(
            f"| {scale} | {statistics.median(times):.2f} | {min(times):.2f} | "
            f"{max(times):.2f} | {size / 2**20:.1f} |"
        )


if __name__ == "__main__":
    main()
