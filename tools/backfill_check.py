"""Backfill the LLaVA shards as the UI does, and check that each shard ran as a run of its own.

Starts ``dagster dev`` (webserver and daemon) on a free port, launches an asset backfill of
``llava_comments`` and ``llava_comment_embeddings`` over every shard through the webserver's
GraphQL API (the mutation the UI's "Materialize" -> "Launch backfill" sends), and waits for it.
Exits 0 when the backfill completed with one successful run per shard. The store must already
hold the shards' upstream (e.g. after ``make demo``).

Usage (from the repository root)::

    HMG_LLAVA_MODEL=tiny-random HMG_EXECUTOR=in_process \\
        .venv/bin/python -m tools.backfill_check --store data/store [--runs-at-once 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from tools.ui_check import (
    CheckError,
    free_port,
    graphql,
    running_dagster_dev,
    wait_for_location,
)

SHARDED = ("llava_comments", "llava_comment_embeddings")
LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status } }
  }
}"""
DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.backfill_check", description=__doc__)
    parser.add_argument("--store", default="data/store", help="HMG_STORE_DIR (with upstream)")
    parser.add_argument("--raw", default="data/sample", help="HMG_RAW_DIR")
    parser.add_argument("--dagster-home", default=None, help="default: <store>/backfill_home")
    parser.add_argument("--runs-at-once", type=int, default=2, help="the instance's run limit")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for the backfill")
    return parser.parse_args(argv)


def write_instance(home: Path, runs_at_once: int) -> None:
    """A dagster.yaml that queues runs, ``runs_at_once`` at a time, one step per pool."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(
        f"concurrency:\n  runs:\n    max_concurrent_runs: {runs_at_once}\n"
        "  pools:\n    default_limit: 1\n"
    )


def shard_keys() -> list[str]:
    from hmg_pipeline.core.llava import shard_keys as keys

    return keys()


def launch_backfill(port: int) -> str:
    params = {
        "assetSelection": [{"path": [name]} for name in SHARDED],
        "partitionNames": shard_keys(),
    }
    reply = graphql(port, LAUNCH, {"params": params})["launchPartitionBackfill"]
    if reply["__typename"] != "LaunchBackfillSuccess":
        raise CheckError(f"backfill not launched: {reply}")
    return reply["backfillId"]


def wait_for_backfill(port: int, backfill: str, timeout: float) -> tuple[str, Counter]:
    """(backfill status, run statuses) once the backfill is done; progress printed meanwhile."""
    started = time.monotonic()
    while True:
        data = graphql(port, STATUS, {"id": backfill})
        status = data["partitionBackfillOrError"]["status"]
        runs = Counter(run["status"] for run in data["runsOrError"]["results"])
        print(f"{time.monotonic() - started:6.0f} s  backfill {status}, runs {dict(runs)}")
        if status in DONE or time.monotonic() - started > timeout:
            return status, runs
        time.sleep(15)


def main(argv: list[str] | None = None) -> int:
    from types import SimpleNamespace

    args = parse_args(argv)
    store = Path(args.store).resolve()
    home = Path(args.dagster_home or store / "backfill_home").resolve()
    write_instance(home, args.runs_at_once)
    settings = SimpleNamespace(dagster_home=home, store=store, raw=Path(args.raw).resolve())
    port, log = free_port(), home / "backfill_check_dagster_dev.log"
    with running_dagster_dev(settings, port, log) as process:  # type: ignore[arg-type]
        wait_for_location(port, process, log, 300)
        backfill = launch_backfill(port)
        print(f"backfill {backfill}: {', '.join(SHARDED)} x {len(shard_keys())} shards")
        status, runs = wait_for_backfill(port, backfill, args.timeout)
    wanted = len(shard_keys())
    ok = status == "COMPLETED_SUCCESS" and runs == Counter({"SUCCESS": wanted})
    print(f"{'OK' if ok else 'FAILED'}: backfill {status}, {sum(runs.values())} runs {dict(runs)}")
    print(f"(dagster dev's log: {log})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
