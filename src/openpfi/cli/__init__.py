"""The openpfi command line: one module per group of commands, all on one typer app."""

from openpfi.cli import bench, deploy, monitor, runs, use  # noqa: F401  (each registers its commands on the app)
from openpfi.cli.common import app


def main() -> None:
    app()


__all__ = ["app", "main"]
