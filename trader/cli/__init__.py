"""The `trader` command line (typer), one module per group of commands.

The package owns argument parsing, loading the settings once, configuring logging once, calling
one function per command, and mapping failures to exit codes: 0 success, 2 usage or
configuration error (one line on stderr), 1 any other fatal error. It must not hold logic of
its own. Its modules:

- `common`: what every command shares (settings, the failure contract, the database, options);
- `replay`: `trader replay`;
- `run`: `trader record` and `trader run`, the long-lived commands on the live stream;
- `control`: `trader kill`, `resume` and `status`;
- `report`: `trader report`;
- `model`: `trader train` and `evaluate`;
- `db` and `data`: the `trader db` and `trader data` groups;
- `entry`: the root app (the commands in `--help` order) and `main`, the console script.

Commands import heavy modules (the engine, SQLAlchemy, Alembic, torch) only when they run, so
that `trader kill` starts fast.
"""

from trader.cli.common import parse_time_ms
from trader.cli.entry import app, main

__all__ = ["app", "main", "parse_time_ms"]
