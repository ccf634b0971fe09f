"""Launch a job of this code location as the UI does, wait for the run, exit 1 unless it succeeds.

    python -m hmg_pipeline.launch JOB_NAME [--op-selection OP,OP...]

`make demo` and `make experiments` use this instead of `dagster job execute`, which runs the job
in-process with no code-location origin: the UI (`dagster dev` on the same DAGSTER_HOME) then
lists no runs on the job's page, shows none on the Overview timeline and warns on Re-execute.
Here the code location is loaded the way `dagster dev` loads it (pyproject.toml [tool.dagster]),
the run is created from it like `dagster job launch` creates it (the job's tags included), and
it is launched at once through the instance's run launcher, not queued for the daemon. The run
worker prints its events here; Ctrl-C terminates the run.
"""

from __future__ import annotations

import argparse
import sys
import time

from dagster import DagsterInstance, DagsterRunStatus
from dagster import __version__ as dagster_version
from dagster._cli.job import _create_run
from dagster._cli.workspace.cli_target import (
    WorkspaceOpts,
    get_code_location_from_workspace,
    get_remote_job_from_remote_repo,
    get_remote_repository_from_code_location,
    get_workspace_from_cli_opts,
)

POLL_SECONDS = 1.0


def _wait(instance: DagsterInstance, run_id: str):
    while True:
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return run
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", help="a job of the code location, e.g. hmg_main")
    parser.add_argument("-o", "--op-selection", help="comma-separated ops (steps) of the job")
    args = parser.parse_args(argv)

    with DagsterInstance.get() as instance:
        opts = WorkspaceOpts()
        with get_workspace_from_cli_opts(instance, dagster_version, opts) as workspace:
            location = get_code_location_from_workspace(workspace, None)
            repo = get_remote_repository_from_code_location(location, None)
            job = get_remote_job_from_remote_repo(repo, args.job)
            run = _create_run(
                instance=instance,
                code_location=location,
                remote_repo=repo,
                remote_job=job,
                run_config={},
                tags=None,
                op_selection=args.op_selection.split(",") if args.op_selection else None,
                run_id=None,
            )
            print(f"Launching run {run.run_id} of {job.name} in code location {location.name}")
            try:
                instance.launch_run(run.run_id, workspace)
                run = _wait(instance, run.run_id)
            except KeyboardInterrupt:
                print(f"Interrupted: terminating run {run.run_id}", file=sys.stderr)
                if not instance.run_launcher.terminate(run.run_id):
                    current = instance.get_run_by_id(run.run_id)
                    if current and not current.is_finished:
                        instance.report_run_canceled(current)
                _wait(instance, run.run_id)
                return 130
    status = run.status if run else None
    print(f"Run {run.run_id if run else '?'} of {args.job} finished: {status}")
    return 0 if status == DagsterRunStatus.SUCCESS else 1


if __name__ == "__main__":
    sys.exit(main())
