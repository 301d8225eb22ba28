from __future__ import annotations

import gc
import types
from collections.abc import Iterable, Iterator

import pytest


@pytest.fixture(scope="session")
def embedder():
    """The retrieval embedder, loaded once for the whole test session (about 2.6 s)."""
    from openpfi.models.embedder import load_embedder

    return load_embedder()


def reachable(roots: Iterable[object]) -> Iterator[object]:
    """Every object reachable from ``roots`` (not descending into modules, classes or globals):
    the object-graph walk of the privacy-boundary tests."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, (types.ModuleType, type)):
            continue
        seen.add(id(o))
        yield o
        if isinstance(o, types.FunctionType):
            stack += [c.cell_contents for c in (o.__closure__ or ())] + list(o.__defaults__ or ())
        else:
            stack += gc.get_referents(o)


@pytest.fixture(scope="session")
def object_walk():
    """``reachable``, for tests that check what server-side objects can reach."""
    return reachable
