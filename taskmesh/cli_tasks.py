"""Task commands: submit, list, show, runs, logs, cancel, delete."""

from __future__ import annotations

import json
import sys
from typing import Any, get_args

import click
from rich.text import Text

from proto.tasks import TaskStatus
from taskmesh import render
from taskmesh._http import Gateway
from taskmesh.cli_common import (
    EXIT_API_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_SUCCEEDED,
    EXIT_STILL_RUNNING,
    Output,
    api_command,
    complete_task_id,
)
from taskmesh.specs import build_spec

STATUSES = list(get_args(TaskStatus))
task_id_argument = click.argument("task_id", metavar="ID", shell_complete=complete_task_id)

SUBMIT_HELP = """Submit a code task or an API task, now, after a delay or on a cron schedule.

\b
SOURCE is optional:
  task.json / task.yaml   a whole task spec (the body of POST /api/tasks); '-' reads stdin
  job.py                  a Python file; --function NAME picks the function (default: its only one)
Flags add to the spec or override its fields; --set FIELD=VALUE reaches any other field.

\b
Examples:
  taskmesh submit --api-url http://127.0.0.1:8000/ping
  taskmesh submit job.py --function main --arg 3 --kwarg mode=fast --requirement pandas==2.2.3 --wait
  taskmesh submit --code 'def f(): return 1 + 2 * 3' --function f --wait --json
  taskmesh submit report.py --cron '0 7 * * mon-fri' --timezone Europe/Paris
  taskmesh submit spec.yaml --delay 60
  taskmesh submit --api-url https://partner.example/sync --concurrency-key partner --max-concurrency 2 --rate-limit 10/s

With --wait a spinner shows the status until the task ends, then the result is printed; the exit
code is 0 when it succeeded, 1 when it did not, 4 when --wait-timeout ran out first.
"""


@click.command(help=SUBMIT_HELP, short_help="Submit a code or API task: now, after a delay, or on a cron.")
@click.argument("source", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--name", help="Task name (default: the function name, or METHOD URL).")
@click.option("--code", metavar="SOURCE", help="Function code inline (a code task); use with --function.")
@click.option("--function", metavar="NAME", help="Function to call (code tasks).")
@click.option(
    "--arg",
    "args",
    multiple=True,
    metavar="VALUE",
    help="Positional argument; JSON if it parses, else a string. Repeatable.",
)
@click.option(
    "--kwarg", "kwargs", multiple=True, metavar="KEY=VALUE", help="Keyword argument; VALUE as for --arg. Repeatable."
)
@click.option(
    "--requirement",
    "-r",
    "requirements",
    multiple=True,
    metavar="REQ",
    help="pip requirement, e.g. pandas==2.2.3. Repeatable.",
)
@click.option("--api-url", metavar="URL", help="URL to call (an API task).")
@click.option("--method", metavar="METHOD", help="HTTP method of an API task (default GET).")
@click.option(
    "--header", "-H", "headers", multiple=True, metavar="NAME:VALUE", help="Request header of an API task. Repeatable."
)
@click.option("--data", metavar="BODY", help="Request body of an API task; JSON if it parses, else a string.")
@click.option(
    "--expect-status",
    type=int,
    multiple=True,
    metavar="CODE",
    help="Status that counts as success (default 2xx). Repeatable.",
)
@click.option("--delay", type=float, metavar="SECONDS", help="Run once after this many seconds (task_type delayed).")
@click.option("--cron", metavar="EXPR", help="Run on this cron schedule (task_type scheduled).")
@click.option("--timezone", metavar="ZONE", help="Time zone of --cron (default UTC).")
@click.option("--max-runs", type=int, metavar="N", help="Stop a schedule after this many runs.")
@click.option(
    "--overlap",
    type=click.Choice(["allow", "forbid", "replace"]),
    help="When a scheduled run is still going at the next fire.",
)
@click.option("--jitter", type=float, metavar="SECONDS", help="Delay each fire of --cron by a fixed offset below this.")
@click.option("--timeout", type=float, metavar="SECONDS", help="Kill a run after this long.")
@click.option("--retries", type=int, metavar="N", help="Retries after a failure or timeout (max_retries).")
@click.option("--retry-delay", type=float, metavar="SECONDS", help="First delay before a retry.")
@click.option("--isolated", is_flag=True, help="Run in a sandbox container (API tasks too).")
@click.option("--network", is_flag=True, help="Give the sandbox network access.")
@click.option("--memory-mb", type=int, metavar="MB", help="Sandbox memory limit.")
@click.option("--cpus", type=float, metavar="N", help="Sandbox CPU limit.")
@click.option(
    "--concurrency-key",
    "concurrency_keys",
    multiple=True,
    metavar="KEY",
    help="Runs sharing a key share its limits. Repeatable (a run then needs a permit of each).",
)
@click.option("--max-concurrency", type=int, metavar="N", help="At most N runs of the key at once.")
@click.option("--rate-limit", metavar="RATE", help="Starts per second/minute/hour on the key: 10/s, 100/m, 1000/h.")
@click.option("--priority", type=click.IntRange(1, 5), metavar="1-5", help="When runs wait, higher first (3).")
@click.option("--fairness-key", metavar="KEY", help="Waiting runs are served round-robin by this key (a tenant).")
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="HOST",
    help="Hosts the task may reach (within the operator's policy); *.example.com matches subdomains. Repeatable.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Any other spec field; VALUE as for --arg. Repeatable.",
)
@click.option("--idempotency-key", metavar="KEY", help="Submitting twice with one key creates one task.")
@click.option("--wait", "wait", is_flag=True, help="Wait for the outcome with a spinner; exit code tells success.")
@click.option("--wait-timeout", type=float, metavar="SECONDS", help="Give up waiting after this long (exit code 4).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the task id.")
@api_command
def submit(
    out: Output,
    gateway: Gateway,
    source: str | None,
    idempotency_key: str | None,
    wait: bool,
    wait_timeout: float | None,
    quiet: bool,
    **flags: Any,
) -> int:
    """Submit a task built from SOURCE and flags; with --wait, report its outcome in the exit code."""
    spec = build_spec(source, flags)
    task = gateway.submit(spec, idempotency_key)
    if not wait:
        if quiet and not out.as_json:
            print(task["id"])
        else:
            out.data(task, lambda: render.task_detail(task))
            out.note(f"follow its output: taskmesh logs -f {task['id']}")
        return 0
    task, done = wait_with_spinner(out, gateway, task, wait_timeout)
    if quiet and not out.as_json:
        print(task["id"])
    else:
        out.data(task, lambda: render.outcome(task) if done else render.task_detail(task))
    if not done:
        out.note(f"still {task['status']} after {wait_timeout:g} s; it goes on: taskmesh show {task['id']}")
        return EXIT_STILL_RUNNING
    status = task["status"]
    if task.get("task_type") == "scheduled":
        status = (task.get("last_run") or {}).get("status", status)
    return 0 if status in ("succeeded", "completed") else EXIT_NOT_SUCCEEDED


def wait_with_spinner(
    out: Output, gateway: Gateway, task: dict[str, Any], timeout: float | None
) -> tuple[dict[str, Any], bool]:
    """Wait for the task, showing its status on a spinner when stderr is a terminal."""
    try:
        if out.as_json or not out.err.is_terminal:
            return gateway.wait(task["id"], timeout)
        label = f"{task['name']} ({task['id']})"
        with out.err.status(f"{task['status']}  {label}", spinner="dots") as spinner:
            return gateway.wait(task["id"], timeout, lambda current: spinner.update(f"{current['status']}  {label}"))
    except KeyboardInterrupt:
        # Ctrl-C stops the waiting, not the task: say so once the spinner is gone
        out.note(f"stopped waiting; the task goes on: taskmesh show {task['id']}")
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


@click.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only tasks in this state.")
@click.option("--kind", type=click.Choice(["code", "api"]), help="Only code or only API tasks.")
@click.option("--task-type", type=click.Choice(["immediate", "delayed", "scheduled"]), help="Only this trigger.")
@click.option("--name", help="Only names starting with this.")
@click.option("--created-after", metavar="ISO-TIME", help="Only tasks created after this (e.g. 2026-01-31T08:00:00Z).")
@click.option("--created-before", metavar="ISO-TIME", help="Only tasks created before this.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True, help="Page size.")
@click.option("--cursor", metavar="CURSOR", help="Next page: the cursor printed under the previous one.")
@api_command
def list_tasks(out: Output, gateway: Gateway, **filters: Any) -> None:
    """List tasks, newest first."""
    page = gateway.get("/api/tasks", **filters)
    out.data(page, lambda: render.task_table(page["tasks"]))
    if page.get("next_cursor"):
        out.note(f"more: taskmesh list --cursor {page['next_cursor']}")
    elif not page["tasks"]:
        out.note("no tasks")


@click.command()
@task_id_argument
@api_command
def show(out: Output, gateway: Gateway, task_id: str) -> None:
    """Show one task: status, timings, result or error."""
    task = gateway.get(f"/api/tasks/{task_id}")
    out.data(task, lambda: render.task_detail(task))


@click.command()
@task_id_argument
@click.argument("run_id", required=False)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True, help="Page size.")
@click.option("--cursor", metavar="CURSOR", help="Next page: the cursor printed under the previous one.")
@api_command
def runs(out: Output, gateway: Gateway, task_id: str, run_id: str | None, limit: int, cursor: str | None) -> None:
    """List the runs of a task, or show one run.

    Runs are listed newest first; with RUN_ID, that run is shown with its attempts and result.
    """
    if run_id is not None:
        run = gateway.get(f"/api/tasks/{task_id}/runs/{run_id}")
        out.data(run, lambda: render.run_detail(run))
        return
    page = gateway.get(f"/api/tasks/{task_id}/runs", limit=limit, cursor=cursor)
    out.data(page, lambda: render.runs_table(page["runs"]))
    if page.get("next_cursor"):
        out.note(f"more: taskmesh runs {task_id} --cursor {page['next_cursor']}")
    elif not page["runs"]:
        out.note("no runs yet")


def _write_chunk(chunk: dict[str, Any]) -> None:
    # the task's stdout to our stdout and its stderr to our stderr, unchanged, as the task wrote them
    stream = sys.stderr if chunk.get("stream") == "stderr" else sys.stdout
    stream.write(chunk["data"])
    stream.flush()


@click.command()
@task_id_argument
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the run ends.")
@click.option("--run", "run_id", metavar="RUN_ID", help="A given run (default: the latest).")
@click.option("--attempt", type=int, metavar="N", help="A given attempt of the run (default: the latest).")
@api_command
def logs(out: Output, gateway: Gateway, task_id: str, follow: bool, run_id: str | None, attempt: int | None) -> int:
    """Print a task's output.

    The task's stdout goes to stdout and its stderr to stderr, as it wrote them. With --follow,
    stored output and then live output until the run ends; with --follow --json, one JSON line
    per event ({"event": "log"|"end", ...}). Exit code 3 if the stream breaks before the end.
    """
    if not follow:
        reply = gateway.logs(task_id, run_id, attempt)
        if out.as_json:
            out.data(reply)
            return 0
        for chunk in reply["chunks"]:
            _write_chunk(chunk)
        if not reply["finished"]:
            out.note("(the run is still going: add -f to follow it)")
        return 0
    for event in gateway.follow_logs(task_id, run_id):
        if out.as_json:
            print(json.dumps({"event": event.event, **event.data}, ensure_ascii=False), flush=True)
        elif event.event == "log":
            _write_chunk(event.data)
        if event.event == "end":
            out.note(f"-- run {event.data.get('run_id')} ended: {event.data.get('status')}")
            return 0
    out.err.print(
        "error: the log stream closed before the run's end was reported; run the command again",
        style="red",
        markup=False,
        soft_wrap=True,
    )
    return EXIT_API_ERROR


@click.command()
@task_id_argument
@click.option("--reason", metavar="TEXT", help="Why; kept on the task.")
@api_command
def cancel(out: Output, gateway: Gateway, task_id: str, reason: str | None) -> None:
    """Cancel a task.

    A pending task never runs; a running one is killed. Cancelling twice is harmless.
    """
    task = gateway.post(f"/api/tasks/{task_id}/cancel", reason=reason)
    out.data(task, lambda: Text.assemble(f"{task['id']} {task['name']}: ", render.status_text(task["status"])))


@click.command()
@task_id_argument
@click.option("--keep-running", is_flag=True, help="Let a run in progress finish instead of killing it.")
@api_command
def delete(out: Output, gateway: Gateway, task_id: str, keep_running: bool) -> None:
    """Delete a task with its runs and logs.

    A run in progress is cancelled first, unless --keep-running.
    """
    reply = gateway.delete(f"/api/tasks/{task_id}", cancel_running=not keep_running)
    out.data(reply, f"deleted {reply['id']} ({reply.get('runs_removed', 0)} runs removed)")


COMMANDS = (submit, list_tasks, show, runs, logs, cancel, delete)
