"""``taskmesh limits``: every flow-control key with its running and waiting runs; set an operator's limit."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click
from rich.table import Table

from taskmesh._http import Gateway
from taskmesh.cli_common import Output, api_command


def limits_table(limits: list[dict[str, Any]]) -> Table:
    """Flow keys, one a row."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("KEY", "MAX", "RATE", "SET BY", "RUNNING", "WAITING", "ADMITTED"):
        table.add_column(column, overflow="fold", no_wrap=column != "KEY")
    for item in limits:
        table.add_row(
            item["key"],
            "-" if item["max_concurrency"] is None else str(item["max_concurrency"]),
            item["rate_limit"] or "-",
            item["source"],
            str(item["running"]),
            str(item["waiting"]),
            str(item["admitted_total"]),
        )
    return table


@click.group(invoke_without_command=True)
@click.pass_context
def limits(ctx: click.Context) -> None:
    """Flow control: keys with their limits, running and waiting runs.

    Without a subcommand, lists them.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_limits)


@limits.command("list")
@api_command
def list_limits(out: Output, gateway: Gateway) -> None:
    """List every key the scheduler knows, with running and waiting counts."""
    reply = gateway.get("/api/limits")
    out.data(reply, lambda: limits_table(reply["limits"]))
    if not reply["limits"]:
        out.note("no task has set a concurrency_key or a rate_limit yet")


@limits.command("set")
@click.argument("key")
@click.option("--max-concurrency", type=int, help="At most this many runs of the key at once.")
@click.option("--rate", "rate_limit", help="At most this rate of starts: 10/s, 100/m, 1000/h.")
@api_command
def set_limit(out: Output, gateway: Gateway, key: str, max_concurrency: int | None, rate_limit: str | None) -> None:
    """Set an operator's limit on KEY (overrides the tasks' own).

    Without --max-concurrency and --rate, clears it: the tasks' own limits apply again.
    """
    body = {"max_concurrency": max_concurrency, "rate_limit": rate_limit}
    reply = gateway.request("PUT", f"/api/limits/{quote(key, safe='')}", body=body).json()
    out.data(reply, lambda: limits_table([reply]))


COMMANDS = (limits,)
