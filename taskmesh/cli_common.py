"""What every API command shares: the gateway from --url/--token, --json, errors as one line, exit codes."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console, RenderableType
from rich.table import Table

from taskmesh._http import DEFAULT_URL, Gateway
from taskmesh.errors import ApiError, GatewayError
from taskmesh.render import minimum_width

EXIT_OK = 0
EXIT_NOT_SUCCEEDED = 1
"""The task ended but did not succeed (or the stack is down, for ``health``)."""
EXIT_USAGE = 2
"""click's own code for a bad command line."""
EXIT_API_ERROR = 3
"""The gateway refused the request, or could not be reached."""
EXIT_STILL_RUNNING = 4
"""``--wait-timeout`` ran out before the task finished."""
EXIT_INTERRUPTED = 130

HINTS = {
    "not_found": "list tasks with `taskmesh list`",
    "unauthorized": "pass --token or set TASKMESH_TOKEN",
    "forbidden": "use a token with that scope",
    "unavailable": "check `taskmesh health`",
    "timeout": "check `taskmesh health`",
    "conflict": "see its state with `taskmesh show ID`",
}
"""What to do next, by error code: the third part of the one-line error message."""


@dataclass
class Connection:
    """Where the gateway is, from the group's options; the client is made on first use."""

    url: str
    token: str | None
    gateway: Gateway | None = None

    def open(self, ctx: click.Context) -> Gateway:
        """The gateway client, closed when the command ends."""
        if self.gateway is None:
            self.gateway = ctx.with_resource(Gateway(self.url, self.token))
        return self.gateway


def _stdout_console() -> Console:
    # a pipe gets wide, colourless lines so `grep` and `awk` see whole rows
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console(highlight=False)
    return Console(width=200, highlight=False)


class Output:
    """Human output through rich, or JSON for scripts; errors always go to stderr as one line."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = _stdout_console()
        self.err = Console(stderr=True, highlight=False)

    def data(self, value: Any, human: RenderableType | Callable[[], RenderableType] | None = None) -> None:
        """``value`` as JSON with --json, else the human rendering."""
        if self.as_json:
            print(json.dumps(value, indent=2, ensure_ascii=False))
        elif human is not None:
            self.show(human() if callable(human) else human)

    def show(self, renderable: RenderableType) -> None:
        """Print for people; a table never narrower than its ids and states (the terminal wraps instead)."""
        if isinstance(renderable, Table):
            needed = minimum_width(self.console, renderable)
            if needed > self.console.width:
                # rich never prints wider than its console: a wider one on the same stream, same colours
                Console(
                    file=self.console.file,
                    width=needed,
                    color_system=self.console.color_system,  # type: ignore[arg-type]  # rich reports the system it was given
                    force_terminal=self.console.is_terminal,
                    highlight=False,
                ).print(renderable)
                return
        self.console.print(renderable)

    def note(self, message: str) -> None:
        """A remark for people, on stderr so stdout stays parseable."""
        if not self.as_json:
            self.err.print(message, style="dim", markup=False, soft_wrap=True)

    def error(self, exc: GatewayError) -> None:
        """One line on stderr (what, why, what to do); with --json the error body on stdout too."""
        if isinstance(exc, ApiError):
            where = f", field {exc.field}" if exc.field else ""
            hint = HINTS.get(exc.code)
            line = f"error: {exc.message} ({exc.code}{where})" + (f"; {hint}" if hint else "")
        else:
            line = f"error: {exc}"
        self.err.print(line, style="red", markup=False, soft_wrap=True)
        if self.as_json:
            print(json.dumps(exc.body(), ensure_ascii=False))


def api_command(func: Callable[..., int | None]) -> Callable[..., None]:
    """Give the command ``--json``, an Output and the Gateway; turn GatewayError into one line and exit 3."""

    @functools.wraps(func)
    def run(ctx: click.Context, *args: Any, as_json: bool = False, **kwargs: Any) -> None:
        out = Output(as_json)
        try:
            connection = ctx.find_object(Connection)
            assert connection is not None, "the group callback always sets the connection"
            code = func(out, connection.open(ctx), *args, **kwargs)
        except GatewayError as exc:
            out.error(exc)
            ctx.exit(EXIT_API_ERROR)
        except KeyboardInterrupt:
            out.note("interrupted")
            ctx.exit(EXIT_INTERRUPTED)
        ctx.exit(code or EXIT_OK)

    run = click.option(
        "--json", "as_json", is_flag=True, help="Print the API's JSON on stdout instead of tables (errors too)."
    )(run)
    return click.pass_context(run)


def _completion_gateway(ctx: click.Context) -> Gateway:
    root = ctx.find_root().params
    return Gateway(
        root.get("url") or os.environ.get("TASKMESH_URL") or DEFAULT_URL,
        root.get("token") or os.environ.get("TASKMESH_TOKEN"),
    )


def complete_task_id(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """Ids of recent tasks for shell completion, each with its name; nothing when the gateway is away."""
    from click.shell_completion import CompletionItem

    try:
        with _completion_gateway(ctx) as gateway:
            tasks = gateway.get("/api/tasks", limit=200)["tasks"]
    except (GatewayError, KeyError, ValueError):
        return []
    return [CompletionItem(t["id"], help=t["name"]) for t in tasks if t["id"].startswith(incomplete)]


def complete_schedule_id(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """Ids of scheduled tasks for shell completion."""
    from click.shell_completion import CompletionItem

    try:
        with _completion_gateway(ctx) as gateway:
            schedules = gateway.get("/api/scheduled-tasks")["schedules"]
    except (GatewayError, KeyError, ValueError):
        return []
    return [CompletionItem(s["id"], help=s["name"]) for s in schedules if s["id"].startswith(incomplete)]
