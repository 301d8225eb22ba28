from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedder():
    """The retrieval embedder, loaded once for the whole test session (about 2.6 s)."""
    from openpfi.models.embedder import load_embedder

    return load_embedder()
