from __future__ import annotations

import gc
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def embedder():
    """The retrieval embedder, loaded once for the whole test session (about 2.6 s)."""
    from openpfi.models.embedder import load_embedder

    return load_embedder()


def reachable(roots: Iterable[Any]) -> Iterator[Any]:
    """Every object reachable from ``roots`` (not descending into modules, classes or a function's
    globals: a function contributes its closure and defaults)."""
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


_CLIENT_PARTS = ("train", "heldout", "union", "pairs", "heldout_pairs", "store", "ref", "_ref", "personal", "retrieval",
                 "_secret")
"""Attributes of a client object that hold its data, storage, personal state, documents index or secret."""


def _client_owned(clients: Iterable[Any]) -> dict[int, str]:
    """id -> what it is, for each client, its data (every example), its store, its reference cache
    and its personal state."""
    from openpfi.data.lazy import LazyEncoded

    owned: dict[int, str] = {}
    for c in clients:
        owned[id(c)] = f"client {c.client_id}"
        for name in _CLIENT_PARTS:
            part = getattr(c, name, None)
            if part is None:
                continue
            owned[id(part)] = f"{c.client_id}.{name}"
            items = list(part.values()) if isinstance(part, dict) else part if isinstance(part, list) else []
            if isinstance(part, LazyEncoded):  # its raw examples and the encodings it holds now
                items = [*part.items, *part.held]
            for x in items:
                owned[id(x)] = f"{c.client_id}.{name} item"
                for y in x if isinstance(x, list) else ():
                    owned[id(y)] = f"{c.client_id}.{name} item"
    return owned


def server_side_leaks(roots: Iterable[Any], clients: Iterable[Any]) -> list[str]:
    """What of the ``clients`` (the objects, their data, stores, reference caches, personal state)
    or any client object, client dataset or client store is reachable from the server-side ``roots``."""
    from openpfi.client.federated import FederatedClient
    from openpfi.client.store import ClientStore
    from openpfi.data.preference_split import ClientPreferences
    from openpfi.data.types import ClientData

    owned = _client_owned(clients)
    kinds = (FederatedClient, ClientStore, ClientData, ClientPreferences)
    found = []
    for o in reachable(roots):
        if id(o) in owned:
            found.append(owned[id(o)])
        elif isinstance(o, kinds):
            found.append(type(o).__name__)
    return sorted(set(found))


@pytest.fixture
def leaks() -> Callable[[Iterable[Any], Iterable[Any]], list[str]]:
    """``leaks(server_roots, clients)``: what of a client the server side can reach (see server_side_leaks)."""
    return server_side_leaks


@pytest.fixture(scope="session")
def object_walk():
    """``reachable``, for tests that check what server-side objects can reach."""
    return reachable
