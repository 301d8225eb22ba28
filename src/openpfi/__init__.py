"""openpfi: federated personalization and alignment of open-weight LLMs, with a silent-failure monitor."""

from __future__ import annotations

__version__ = "0.1.0"
