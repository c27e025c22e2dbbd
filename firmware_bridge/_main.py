"""The ``edge-bridge`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edge import __version__
from edge.config import LOG_LEVEL_HELP, LOG_LEVELS
from edge.errors import ConfigError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The bridge's TOML file: [bridge], [[link]], [[device]] (also $EDGE_BRIDGE_CONFIG).",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="edged's run directory (agents.sock; the bridge's lock).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    metavar="LEVEL",
    help=LOG_LEVEL_HELP,
)
@click.version_option(__version__, prog_name="edge-bridge")
def main(config_file: Path | None, **flags: Any) -> None:
    """edge-bridge: MCUs over serial, CAN buses and Modbus devices as agents of edged.

    Exit codes: 0 stopped cleanly (SIGTERM/SIGINT), 1 cannot start, 2 bad configuration
    or profile, 3 already running.
    """
    from edge._log import configure as configure_logging

    from ._config import load_bridge_config

    try:
        cfg = load_bridge_config(flags, file=config_file)
    except ConfigError as exc:
        click.echo(f"edge-bridge: configuration error: {exc}", err=True)
        sys.exit(2)
    configure_logging(cfg.log_level)
    from ._service import serve

    sys.exit(serve(cfg))
