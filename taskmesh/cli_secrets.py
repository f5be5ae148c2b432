"""Secrets commands: set (from --value or stdin), list (names and times), delete."""

from __future__ import annotations

import sys
from urllib.parse import quote

import click
from rich.table import Table

from taskmesh._http import Gateway
from taskmesh.cli_common import Output, api_command


@click.group(invoke_without_command=True)
@click.pass_context
def secrets(ctx: click.Context) -> None:
    """Secrets tasks use: {{ secrets.NAME }} in an API task, "secrets": ["NAME"] in a code task.

    Without a subcommand, lists them. Values are never shown again.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_secrets)


@secrets.command("set")
@click.argument("name")
@click.option(
    "--value", metavar="VALUE", help="The value (default: read from stdin, which keeps it out of shell history)."
)
@api_command
def set_secret(out: Output, gateway: Gateway, name: str, value: str | None) -> None:
    """Set (or replace) the secret NAME."""
    if value is None:
        value = sys.stdin.read().removesuffix("\n")  # `echo v | taskmesh secrets set N` means "v"
    reply = gateway.request("PUT", f"/api/secrets/{quote(name, safe='')}", body={"value": value}).json()
    out.data(reply, f"secret {reply['name']} set")


@secrets.command("list")
@api_command
def list_secrets(out: Output, gateway: Gateway) -> None:
    """List secrets: names and when they were set."""
    reply = gateway.get("/api/secrets")

    def table() -> Table:
        view = Table("name", "created", "updated", box=None)
        for secret in reply["secrets"]:
            view.add_row(secret["name"], secret["created_at"], secret["updated_at"])
        return view

    out.data(reply, table)
    if not reply["secrets"]:
        out.note("no secrets")


@secrets.command("delete")
@click.argument("name")
@api_command
def delete_secret(out: Output, gateway: Gateway, name: str) -> None:
    """Delete the secret NAME (runs that use it fail from then on)."""
    reply = gateway.delete(f"/api/secrets/{quote(name, safe='')}")
    out.data(reply, f"secret {reply['name']} deleted")


COMMANDS = (secrets,)
