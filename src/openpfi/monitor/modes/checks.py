"""Checks the modes share when a client encodes its report."""

from __future__ import annotations

from openpfi.errors import UserError


def check_known(found: set[str], known: set[str], what: str) -> None:
    """UserError when the probe results hold a category the report schema has no slot for."""
    extra = sorted(found - known)
    if extra:
        raise UserError(f"probe results hold a {what} ({extra[0]}) the report schema has no slot "
                        f"for; build the schema from the full suites the samples were drawn from")
