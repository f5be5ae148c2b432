"""Operations commands: schedules (list, pause, resume, trigger), stats, health."""

from __future__ import annotations

import click
from rich.text import Text

from taskmesh import render
from taskmesh._http import Gateway
from taskmesh.cli_common import EXIT_NOT_SUCCEEDED, Output, api_command, complete_schedule_id

schedule_id_argument = click.argument("task_id", metavar="ID", shell_complete=complete_schedule_id)


@click.group(invoke_without_command=True)
@click.pass_context
def schedules(ctx: click.Context) -> None:
    """Scheduled (cron) tasks: list, pause, resume, trigger.

    Without a subcommand, lists them.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_schedules)


@schedules.command("list")
@api_command
def list_schedules(out: Output, gateway: Gateway) -> None:
    """List scheduled tasks with next run, last run and counters."""
    reply = gateway.get("/api/scheduled-tasks")
    out.data(reply, lambda: render.schedules_table(reply["schedules"]))
    if not reply["schedules"]:
        out.note("no scheduled tasks")


def _changed(task: dict) -> Text:
    return Text.assemble(f"{task['id']} {task['name']}: ", render.status_text(task["status"]))


@schedules.command()
@schedule_id_argument
@api_command
def pause(out: Output, gateway: Gateway, task_id: str) -> None:
    """Pause future fires of a schedule.

    A run in progress goes on. Pausing twice is harmless.
    """
    task = gateway.post(f"/api/scheduled-tasks/{task_id}/pause")
    out.data(task, lambda: _changed(task))


@schedules.command()
@schedule_id_argument
@api_command
def resume(out: Output, gateway: Gateway, task_id: str) -> None:
    """Resume a paused schedule from its next fire time."""
    task = gateway.post(f"/api/scheduled-tasks/{task_id}/resume")
    out.data(task, lambda: _changed(task))


@schedules.command()
@schedule_id_argument
@api_command
def trigger(out: Output, gateway: Gateway, task_id: str) -> None:
    """Run a scheduled task once now, besides its schedule.

    Prints the id of the new run.
    """
    reply = gateway.post(f"/api/scheduled-tasks/{task_id}/trigger")
    out.data(reply, f"triggered {reply['task']['id']} {reply['task']['name']}: run {reply['run_id']}")
    out.note(f"follow it: taskmesh logs -f {reply['task']['id']} --run {reply['run_id']}")


@click.command()
@api_command
def stats(out: Output, gateway: Gateway) -> None:
    """Show statistics: counts, success rate, durations, queue.

    Also the runners and the runs per minute of the last hour.
    """
    reply = gateway.get("/api/stats")
    out.data(reply, lambda: render.stats_view(reply))


@click.command()
@api_command
def health(out: Output, gateway: Gateway) -> int:
    """Show the health of the gateway and each dependency.

    Exit code 0 when ok or degraded, 1 when down.
    """
    reply = gateway.request("GET", "/api/health", accept=(503,)).json()  # 503 still carries the checks
    out.data(reply, lambda: render.health_view(reply, gateway.url))
    return EXIT_NOT_SUCCEEDED if reply.get("status") == "down" else 0


COMMANDS = (schedules, stats, health)
