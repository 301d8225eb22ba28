"""Data: corpora as :class:`Example` lists (``sources``), clients (``partition``).

Tokenization and collation live in ``tokenize`` (imported on demand).
"""

from __future__ import annotations

from openpfi.data.partition import PARTITIONS, make_clients
from openpfi.data.sources import SOURCES, groups_are_public, load_examples
from openpfi.data.types import ClientData, Example, LoadResult

__all__ = [
    "PARTITIONS",
    "SOURCES",
    "ClientData",
    "Example",
    "LoadResult",
    "groups_are_public",
    "load_examples",
    "make_clients",
]
