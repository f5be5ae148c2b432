"""The ``taskmesh`` command line."""

from __future__ import annotations

from pathlib import Path

import click

from taskmesh.local import run_local


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="taskmesh")
def cli() -> None:
    """Taskmesh: run Python functions in sandboxes and HTTP requests, now, later or on a cron schedule."""


@cli.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path(".taskmesh"), show_default=True,
              envvar="TASKMESH_DATA_DIR", help="Where NATS data and the dependency cache live.")
@click.option("--port", type=int, default=5001, show_default=True, help="HTTP port of the API (127.0.0.1).")
@click.option("--nats-port", type=int, default=4222, show_default=True, help="NATS port (127.0.0.1).")
def up(data_dir: Path, port: int, nats_port: int) -> None:
    """Run nats-server and the four services locally until Ctrl-C."""
    raise SystemExit(run_local(data_dir, http_port=port, nats_port=nats_port))


def main() -> None:
    cli()
