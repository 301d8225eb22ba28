"""User-facing errors: one clear line, exit code 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (config, data file, client update, CLI argument).

    The message is one line that names what is wrong and how to fix it.
    The CLI prints it as ``error: <message>`` and exits with code 2.
    """
