"""Check the Dagster UI of this project in a real browser.

Starts ``dagster dev`` on a free port, waits for the ``hmg_pipeline`` code location, takes
headless-Chromium screenshots of the global asset lineage (groups collapsed, then expanded) and of
the ``evaluation_metrics`` asset page, launches one materialisation through Dagster's GraphQL
client, waits for it to succeed and screenshots the materialised asset's page. Exits 0 only when
every step succeeded.

Usage (from the repository root)::

    .venv/bin/python -m tools.ui_check [--store DIR] [--raw DIR] [--out docs]
                                       [--launch raw_images] [--timeout 300]

writes ``<out>/ui_asset_groups.png``, ``ui_asset_graph.png``, ``ui_evaluation_metrics.png`` and
``ui_<launched asset>.png``; dagster dev's log goes to ``$DAGSTER_HOME/ui_check_dagster_dev.log``.
Needs ``/usr/bin/chromium`` (Debian: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import requests
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCATION_NAME = "hmg_pipeline"
METRICS_ASSET = "evaluation_metrics"
ASSET_JOB_NAME = "__ASSET_JOB"
REPOSITORY_NAME = "__repository__"
HOST = "127.0.0.1"
DAGSTER_YAML = "concurrency:\n  pools:\n    default_limit: 1\n"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # the colours of dagster dev's log lines

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
WINDOW_WIDTH = 1600
GROUPS_HEIGHT = 1000
# With every group expanded the lineage graph is fitted to the width and is tall.
GRAPH_HEIGHT = 2400
# Asset pages are long: a taller window shows the metadata table below the columns.
ASSET_PAGE_HEIGHT = 1800
# The blank check looks at the page's content, right of the navigation sidebar (which renders
# before any data arrives) and below the top bar. Rendered content has antialiased text, icons
# and status colours (1000+ colours, 2-25% non-background pixels here); a blank page or a bare
# spinner has a few hundred colours on well under 1% of the area.
CONTENT_LEFT_PX = 260
CONTENT_TOP_PX = 60
MIN_DISTINCT_COLOURS = 400
MIN_NON_BACKGROUND_SHARE = 0.01

LOCATION_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
FINISHED_RUN_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})

# What the "Join the Dagster community" dialog's Skip button does: it writes
# $DAGSTER_HOME/.nux/nux.yaml, so that the dialog no longer covers the screenshots.
SET_NUX_SEEN_MUTATION = "mutation { setNuxSeen }"

ASSET_NODES_QUERY = "query { assetNodes { assetKey { path } groupName } }"

RUN_ERRORS_QUERY = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message }
        ... on ErrorEvent { error { message cause { message } } }
      }
    }
  }
}
"""


class CheckError(RuntimeError):
    """A UI check step failed; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """Resolved command-line options and environment for one check."""

    store: Path
    raw: Path
    dagster_home: Path
    out: Path
    launch: str
    timeout: float
    render_ms: int
    chromium: str


@dataclass
class Summary:
    """What the check found, printed at the end."""

    port: int | None = None
    location_status: str = "not checked"
    screenshots: list[tuple[Path, str]] = field(default_factory=list)
    run_id: str | None = None
    run_status: str = "not launched"
    errors: list[str] = field(default_factory=list)


# --- options -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: data directories, output directory, asset to launch, timeouts."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.ui_check",
        description="Start dagster dev, screenshot the UI and launch one materialisation.",
    )
    parser.add_argument(
        "--store",
        default=None,
        help="HMG_STORE_DIR (default: $HMG_STORE_DIR or data/store)",
    )
    parser.add_argument(
        "--raw", default=None, help="HMG_RAW_DIR (default: $HMG_RAW_DIR or data/sample)"
    )
    parser.add_argument(
        "--dagster-home",
        default=None,
        help="DAGSTER_HOME (default: $DAGSTER_HOME or <store>/dagster_home)",
    )
    parser.add_argument("--out", default=None, help="directory for the PNGs (default: docs)")
    parser.add_argument(
        "--launch", default="raw_images", help="asset to materialise (default: raw_images)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the code location and for the run (default: 300)",
    )
    parser.add_argument(
        "--render-ms",
        type=int,
        default=20000,
        help="Chromium virtual time budget per screenshot, in ms (default: 20000)",
    )
    parser.add_argument(
        "--chromium", default="/usr/bin/chromium", help="Chromium binary (default: %(default)s)"
    )
    return parser.parse_args(argv)


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Options first, then the environment, then the defaults; every path made absolute.

    Given paths are relative to the current directory, the defaults to the repository root.
    """
    store = Path(args.store or os.environ.get("HMG_STORE_DIR") or REPO_ROOT / "data/store")
    raw = Path(args.raw or os.environ.get("HMG_RAW_DIR") or REPO_ROOT / "data/sample")
    home = args.dagster_home or os.environ.get("DAGSTER_HOME") or store / "dagster_home"
    return Settings(
        store=store.resolve(),
        raw=raw.resolve(),
        dagster_home=Path(home).resolve(),
        out=Path(args.out or REPO_ROOT / "docs").resolve(),
        launch=args.launch,
        timeout=args.timeout,
        render_ms=args.render_ms,
        chromium=args.chromium,
    )


def ensure_dagster_home(home: Path) -> None:
    """Create DAGSTER_HOME with a dagster.yaml (one run at a time per pool) if it has none."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)


def free_port() -> int:
    """A TCP port that is free right now (the OS picks it for a socket bound to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --- dagster dev ---------------------------------------------------------------------------------


def dagster_env(settings: Settings) -> dict[str, str]:
    """The environment of ``dagster dev``: ours plus the project's data directories."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(settings.dagster_home),
        "HMG_STORE_DIR": str(settings.store),
        "HMG_RAW_DIR": str(settings.raw),
        "PYTHONUNBUFFERED": "1",
    }


def start_dagster_dev(settings: Settings, port: int, log_path: Path) -> subprocess.Popen:
    """Start ``dagster dev`` on the repo's workspace.yaml, in its own process group.

    Its own session lets us kill the webserver, the daemon, the code server and run workers
    together; its output goes to ``log_path``.
    """
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(REPO_ROOT / "workspace.yaml"),
        "-h",
        HOST,
        "-p",
        str(port),
    ]
    log = log_path.open("wb")
    try:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=dagster_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()  # the child holds its own copy of the descriptor


def stop_process_group(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the whole process group (dagster dev shuts down cleanly), then SIGKILL it."""
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    # Stragglers (run workers, code servers) may outlive the leader: kill what is left.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


@contextlib.contextmanager
def running_dagster_dev(
    settings: Settings, port: int, log_path: Path
) -> Iterator[subprocess.Popen]:
    """``dagster dev`` for the duration of the block; its process group is always killed."""
    process = start_dagster_dev(settings, port, log_path)
    try:
        yield process
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave dagster dev running.
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in INTERRUPTS}
        try:
            stop_process_group(process)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def log_tail(log_path: Path, lines: int = 40) -> str:
    """The last lines of the dagster dev log, to explain a failure."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError as error:
        return f"(cannot read {log_path}: {error})"
    return "\n".join(ANSI_ESCAPE.sub("", line) for line in text.splitlines()[-lines:])


# --- GraphQL -------------------------------------------------------------------------------------


def graphql(port: int, query: str, variables: dict | None = None, timeout: float = 10.0) -> dict:
    """POST one GraphQL query to the webserver and return its ``data`` (errors raise)."""
    response = requests.post(
        f"http://{HOST}:{port}/graphql",
        json={"query": query, "variables": variables or {}},
        timeout=timeout,
    )
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise CheckError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def location_status(port: int, name: str) -> tuple[str, str | None]:
    """``(loadStatus, load error message or None)`` of one code location; raises if absent."""
    workspace = graphql(port, LOCATION_QUERY)["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        return "ERROR", workspace.get("message")
    for entry in workspace["locationEntries"]:
        if entry["name"] == name:
            located = entry["locationOrLoadError"] or {}
            error = located.get("message") if located.get("__typename") == "PythonError" else None
            return entry["loadStatus"], error
    raise CheckError(f"code location {name!r} is not in the workspace")


def wait_for_location(port: int, process: subprocess.Popen, log_path: Path, timeout: float) -> str:
    """Poll until the code location is LOADED without a load error.

    The webserver needs a few seconds to answer and the code server longer to import the
    definitions; a dead ``dagster dev``, a load error or the timeout fails with the log's tail.
    """
    deadline = time.monotonic() + timeout
    last = "webserver not answering"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CheckError(
                f"dagster dev exited with code {process.returncode}; log tail:\n"
                + log_tail(log_path)
            )
        try:
            status, error = location_status(port, LOCATION_NAME)
        except requests.RequestException as problem:
            last = f"webserver not answering: {type(problem).__name__}"
        except (CheckError, ValueError) as problem:
            last = str(problem)
        else:
            if error:
                raise CheckError(f"code location {LOCATION_NAME!r} failed to load:\n{error}")
            if status == "LOADED":
                return status
            last = f"loadStatus={status}"
        time.sleep(1.0)
    raise CheckError(
        f"code location {LOCATION_NAME!r} not loaded after {timeout:.0f}s ({last}); "
        f"dagster dev log tail ({log_path}):\n{log_tail(log_path)}"
    )


# --- screenshots ---------------------------------------------------------------------------------


def asset_graph_path(port: int) -> str:
    """The global asset lineage page with every group expanded.

    By default the page collapses each group into one box; its ``expanded`` query parameter
    lists the groups to open, as ``global@global:<group>`` (the id the 1.13 UI gives a group
    when groups are not split per code location).
    """
    nodes = graphql(port, ASSET_NODES_QUERY)["assetNodes"]
    groups = sorted({node["groupName"] for node in nodes if node.get("groupName")})
    expanded = ",".join(f"global@global:{group}" for group in groups)
    return "/asset-groups?" + urlencode({"expanded": expanded})


def dismiss_community_dialog(port: int) -> None:
    """Mark the first-visit community dialog as seen, as its Skip button would."""
    graphql(port, SET_NUX_SEEN_MUTATION)


def chromium_screenshot(settings: Settings, url: str, png: Path, height: int) -> None:
    """Render ``url`` in headless Chromium and write a PNG.

    The UI is a JS app that loads data over GraphQL, so virtual time is advanced by
    ``render_ms`` before the capture; a fresh profile keeps runs independent.
    """
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="ui_check_chromium_") as profile:
        command = [
            settings.chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW_WIDTH},{height}",
            f"--virtual-time-budget={settings.render_ms}",
            f"--screenshot={png}",
            url,
        ]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=settings.render_ms / 1000 + 120,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise CheckError(f"chromium timed out on {url}") from error
    if not png.exists():
        raise CheckError(
            f"chromium wrote no screenshot for {url} (exit {result.returncode}):\n"
            + result.stderr[-2000:]
        )


def describe_png(png: Path) -> tuple[int, int, int, float]:
    """``(width, height, colours, non-background share)``, the last two of the content area."""
    with Image.open(png) as image:
        width, height = image.size
        content = image.convert("RGB").crop((CONTENT_LEFT_PX, CONTENT_TOP_PX, width, height))
    pixels = content.size[0] * content.size[1]
    colours = content.getcolors(maxcolors=pixels) or [(pixels, (0, 0, 0))]
    background = max(count for count, _ in colours)
    return width, height, len(colours), 1 - background / pixels


def check_not_blank(png: Path) -> str:
    """Fail on a blank page or a bare spinner; return a short description of the PNG."""
    width, height, colours, share = describe_png(png)
    description = (
        f"{width}x{height}, {png.stat().st_size // 1024} KiB; content: {colours} colours, "
        f"{share:.1%} non-background"
    )
    if colours < MIN_DISTINCT_COLOURS or share < MIN_NON_BACKGROUND_SHARE:
        raise CheckError(f"{png} looks blank or still loading ({description})")
    return description


def screenshot(
    settings: Settings, port: int, path: str, name: str, height: int, summary: Summary
) -> None:
    """Screenshot one UI page into ``<out>/<name>``, check it and record it in the summary."""
    png = settings.out / name
    chromium_screenshot(settings, f"http://{HOST}:{port}{path}", png, height)
    summary.screenshots.append((png, check_not_blank(png)))


# --- run -----------------------------------------------------------------------------------------


def check_asset_exists(port: int, asset: str) -> None:
    """Fail early, with the known keys, on an asset the code location does not define.

    (The GraphQL client's own error for an unknown asset is an opaque ``KeyError``.)
    """
    nodes = graphql(port, ASSET_NODES_QUERY)["assetNodes"]
    keys = sorted("/".join(node["assetKey"]["path"]) for node in nodes)
    if asset not in keys:
        raise CheckError(f"no asset {asset!r} in {LOCATION_NAME}; known: {', '.join(keys)}")


def launch_materialisation(port: int, asset: str) -> str:
    """Submit a run of the implicit asset job that materialises ``asset``; return its id."""
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    client = DagsterGraphQLClient(HOST, port_number=port)
    try:
        return client.submit_job_execution(
            ASSET_JOB_NAME,
            repository_location_name=LOCATION_NAME,
            repository_name=REPOSITORY_NAME,
            asset_selection=[asset],
            tags={"hmg/launched_by": "tools.ui_check"},
        )
    except DagsterGraphQLClientError as error:
        raise CheckError(f"launching {asset} failed: {error}") from error


def run_errors(port: int, run_id: str) -> str:
    """The error messages of a failed run's events (step and run failures)."""
    try:
        logs = graphql(port, RUN_ERRORS_QUERY, {"runId": run_id})["logsForRun"]
    except (requests.RequestException, CheckError) as problem:
        return f"(cannot read the run's events: {problem})"
    messages = []
    for event in logs.get("events", []):
        if event["__typename"] in {"ExecutionStepFailureEvent", "RunFailureEvent"}:
            error = event.get("error") or {}
            cause = (error.get("cause") or {}).get("message", "")
            parts = (event.get("message", ""), error.get("message", ""), cause)
            messages.append("\n    ".join(part.strip() for part in parts if part.strip()))
    return "\n".join(messages) or "(no failure events)"


def wait_for_run(port: int, run_id: str, timeout: float) -> str:
    """Poll the run's status until it ends (or the timeout); return the last status seen.

    The run goes QUEUED -> STARTING -> STARTED under dagster dev's queued run coordinator and
    DefaultRunLauncher, and ends SUCCESS, FAILURE or CANCELED.
    """
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient(HOST, port_number=port)
    deadline = time.monotonic() + timeout
    status = client.get_run_status(run_id).value
    while status not in FINISHED_RUN_STATUSES and time.monotonic() < deadline:
        time.sleep(1.0)
        status = client.get_run_status(run_id).value
    return status


def check_run_succeeded(port: int, run_id: str, status: str, timeout: float) -> None:
    """Fail unless the run ended SUCCESS, with the run's errors or the timeout."""
    if status == "SUCCESS":
        return
    if status in FINISHED_RUN_STATUSES:
        raise CheckError(f"run {run_id} ended {status}:\n{run_errors(port, run_id)}")
    raise CheckError(f"run {run_id} still {status} after {timeout:.0f}s")


# --- main ----------------------------------------------------------------------------------------


def print_summary(summary: Summary, log_path: Path) -> None:
    """The short report: port, code location, screenshots, run and any errors."""
    print("\nDagster UI check")
    print(f"  port:           {summary.port}")
    print(f"  code location:  {LOCATION_NAME} {summary.location_status}")
    for png, description in summary.screenshots:
        print(f"  screenshot:     {png} ({description})")
    print(f"  run:            {summary.run_id or '-'} {summary.run_status}")
    print(f"  dagster log:    {log_path}")
    for error in summary.errors:
        print(f"  ERROR: {error}")
    print("  result:         " + ("FAILED" if summary.errors else "OK"))


def check_ui(settings: Settings, summary: Summary, log_path: Path) -> None:
    """Every step in order: start, wait for the location, screenshots, run, run screenshot."""
    if not Path(settings.chromium).exists() and not shutil.which(settings.chromium):
        raise CheckError(f"no Chromium at {settings.chromium} (apt-get install -y chromium)")
    ensure_dagster_home(settings.dagster_home)
    settings.store.mkdir(parents=True, exist_ok=True)
    port = summary.port = free_port()
    print(f"starting dagster dev on http://{HOST}:{port} (log: {log_path})", flush=True)
    with running_dagster_dev(settings, port, log_path) as process:
        summary.location_status = wait_for_location(port, process, log_path, settings.timeout)
        print(f"code location {LOCATION_NAME} {summary.location_status}", flush=True)
        check_asset_exists(port, settings.launch)
        dismiss_community_dialog(port)

        screenshot(settings, port, "/asset-groups", "ui_asset_groups.png", GROUPS_HEIGHT, summary)
        graph = asset_graph_path(port)
        screenshot(settings, port, graph, "ui_asset_graph.png", GRAPH_HEIGHT, summary)
        screenshot(
            settings,
            port,
            f"/assets/{METRICS_ASSET}",
            f"ui_{METRICS_ASSET}.png",
            ASSET_PAGE_HEIGHT,
            summary,
        )

        summary.run_id = launch_materialisation(port, settings.launch)
        summary.run_status = "submitted"
        print(f"launched run {summary.run_id} for {settings.launch}", flush=True)
        summary.run_status = wait_for_run(port, summary.run_id, settings.timeout)
        check_run_succeeded(port, summary.run_id, summary.run_status, settings.timeout)

        screenshot(
            settings,
            port,
            f"/assets/{settings.launch}",
            f"ui_{settings.launch}.png",
            ASSET_PAGE_HEIGHT,
            summary,
        )


def raise_on_sigterm(signum: int, _frame: object) -> None:
    """Turn SIGTERM into an exception so the ``finally`` blocks kill dagster dev."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 when every step succeeded, 1 otherwise (130 when interrupted)."""
    settings = resolve_settings(parse_args(argv))
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    summary = Summary()
    log_path = settings.dagster_home / "ui_check_dagster_dev.log"
    code = 0
    try:
        check_ui(settings, summary, log_path)
    except KeyboardInterrupt as interrupt:
        summary.errors.append(f"interrupted {interrupt}".strip())
        code = 130
    except Exception as error:
        summary.errors.append(f"{type(error).__name__}: {error}")
        code = 1
    print_summary(summary, log_path)
    return code


if __name__ == "__main__":
    sys.exit(main())
