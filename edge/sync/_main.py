"""The ``edge-sync`` command: same config file, environment and precedence as edged."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .. import __version__
from .._log import configure as configure_logging
from ..config import LOG_LEVEL_HELP, LOG_LEVELS, load_config
from ..errors import ConfigError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML config file (also $EDGE_CONFIG); the same file as edged's.",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="edged's run directory (lock, sync-status.json).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="edged's data directory (the LMDB outbox).",
)
@click.option("--device-id", help="This board's id (default: hostname).")
@click.option("--upstream-url", help="NATS server URL(s), comma-separated.")
@click.option(
    "--upstream-creds", type=click.Path(dir_okay=False, path_type=Path), help="Creds file."
)
@click.option(
    "--upstream-nkey", type=click.Path(dir_okay=False, path_type=Path), help="NKey seed file."
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    metavar="LEVEL",
    help=LOG_LEVEL_HELP,
)
@click.version_option(__version__, prog_name="edge-sync")
def main(config_file: Path | None, **flags: Any) -> None:
    """edge-sync: aggregates up and rule tables down over NATS JetStream.

    Exit codes: 0 stopped cleanly (SIGTERM/SIGINT), 1 cannot start, 2 bad configuration,
    3 already running.
    """
    try:
        cfg = load_config(flags, file=config_file)
    except ConfigError as exc:
        click.echo(f"edge-sync: configuration error: {exc}", err=True)
        sys.exit(2)
    if not cfg.upstream_url.strip():
        click.echo(
            "edge-sync: configuration error: no upstream configured: set upstream_url "
            '(upstream_url = "nats://HOST:4222" in the config file edged reads too, '
            "EDGE_UPSTREAM_URL, or --upstream-url)",
            err=True,
        )
        sys.exit(2)
    configure_logging(cfg.log_level)
    from ._service import serve

    sys.exit(serve(cfg))
