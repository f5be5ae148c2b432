"""The ``taskmesh`` command line."""

from __future__ import annotations

from pathlib import Path

import click

from taskmesh import cli_limits, cli_ops, cli_secrets, cli_tasks
from taskmesh._http import DEFAULT_URL
from taskmesh.cli_common import Connection
from taskmesh.local import run_local

EPILOG = """\b
Environment: TASKMESH_URL and TASKMESH_TOKEN stand for --url and --token.
\b
Exit codes: 0 ok; 1 the task did not succeed (or health is down); 2 bad command line;
3 the gateway refused the request or is not reachable; 4 --wait-timeout ran out; 130 Ctrl-C.
\b
Shell completion (commands, options, task ids):
  bash: eval "$(_TASKMESH_COMPLETE=bash_source taskmesh)"   in ~/.bashrc
  zsh:  eval "$(_TASKMESH_COMPLETE=zsh_source taskmesh)"    in ~/.zshrc
  fish: _TASKMESH_COMPLETE=fish_source taskmesh | source
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}, epilog=EPILOG)
@click.version_option(package_name="taskmesh")
@click.option(
    "--url", envvar="TASKMESH_URL", default=DEFAULT_URL, show_default=True, metavar="URL", help="Gateway base URL."
)
@click.option(
    "--token", envvar="TASKMESH_TOKEN", metavar="TOKEN", help="API token, sent as 'Authorization: Bearer TOKEN'."
)
@click.pass_context
def cli(ctx: click.Context, url: str, token: str | None) -> None:
    """Taskmesh: run Python functions in sandboxes and HTTP requests, now, later or on a cron schedule."""
    ctx.obj = Connection(url=url, token=token or None)


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path(".taskmesh"),
    show_default=True,
    envvar="TASKMESH_DATA_DIR",
    help="Where NATS data and the dependency cache live.",
)
@click.option("--port", type=int, default=5001, show_default=True, help="HTTP port of the API (127.0.0.1).")
@click.option("--nats-port", type=int, default=4222, show_default=True, help="NATS port (127.0.0.1).")
def up(data_dir: Path, port: int, nats_port: int) -> None:
    """Run nats-server and the four services locally until Ctrl-C."""
    raise SystemExit(run_local(data_dir, http_port=port, nats_port=nats_port))


for _command in (*cli_tasks.COMMANDS, *cli_ops.COMMANDS, *cli_secrets.COMMANDS, *cli_limits.COMMANDS):
    cli.add_command(_command)


def main() -> None:
    # a fixed name, so `python -m taskmesh` and the installed script complete alike (_TASKMESH_COMPLETE)
    cli(prog_name="taskmesh", complete_var="_TASKMESH_COMPLETE")
