"""Split a pool of examples into federated clients, each with train / held-out data.

Methods (``method=``):

- ``natural``: one client per natural group (``Example.group``); ``num_clients``
  groups are sampled among those with at least ``min_examples`` examples
  (``min_examples = 1`` and ``num_clients`` = the number of groups takes every group).
- ``iid``: a shuffled pool of at most ``num_clients * max_examples`` examples
  dealt in equal shares.
- ``dirichlet``: label skew (Hsu et al. 2019, "Measuring the effects of
  non-identical data distribution", arXiv:1909.06335). For each label
  (``Example.label``, or ``group`` when empty) draw ``p ~ Dir(alpha * 1_K)`` and
  give client ``k`` a share ``p_k`` of that label's examples. Small ``alpha``
  gives each client few labels; large ``alpha`` tends to IID.
- ``quantity``: quantity skew. Sizes ``w_k ~ LogNormal(0, quantity_sigma)``
  scaled so the largest client gets ``max_examples`` (scaling by the largest
  rather than the sum keeps the skew visible under the per-client cap),
  at least 2 each, dealt from a shuffled pool.

Then every client is capped to ``max_examples`` (a seeded sample) and split
into held-out (``max(1, round(n * heldout_fraction))``, at most ``n - 1``) and
train (the rest). A natural client with a single example (``min_examples = 1``)
trains on it and holds nothing out. Everything draws from ``numpy.random.Generator`` streams
spawned from ``seed``: the same inputs and seed give identical clients.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from openpfi.data.types import ClientData, Example
from openpfi.errors import UserError

PARTITIONS = ("natural", "iid", "dirichlet", "quantity")
MIN_CLIENT_EXAMPLES = 2
"""One train and one held-out example."""
_DIRICHLET_DRAWS = 20
_SLUG_MAX = 60


def make_clients(
    examples: Sequence[Example],
    *,
    method: str,
    num_clients: int,
    seed: int,
    heldout_fraction: float = 0.2,
    min_examples: int = 10,
    max_examples: int = 200,
    alpha: float = 0.5,
    quantity_sigma: float = 1.0,
) -> list[ClientData]:
    """Partition ``examples`` into ``num_clients`` clients (see the module docstring)."""
    _validate(
        examples,
        method,
        num_clients,
        heldout_fraction,
        min_examples,
        max_examples,
        alpha,
        quantity_sigma,
    )
    part_seq, *client_seqs = np.random.SeedSequence(seed % 2**64).spawn(1 + num_clients)
    rng = np.random.default_rng(part_seq)
    if method == "natural":
        shards = _natural(examples, num_clients, min_examples, rng)
    else:
        pool = _pool(examples, num_clients * max_examples, rng)
        if method == "iid":
            parts = [list(p) for p in np.array_split(np.arange(len(pool)), num_clients)]
        elif method == "dirichlet":
            parts = _dirichlet(pool, num_clients, alpha, rng)
        else:
            parts = _quantity(len(pool), num_clients, max_examples, quantity_sigma, rng)
        names = client_names(num_clients)
        shards = [(names[k], [pool[i] for i in part]) for k, part in enumerate(parts)]
    return [
        _split(cid, items, heldout_fraction, max_examples, np.random.default_rng(seq))
        for (cid, items), seq in zip(shards, client_seqs, strict=True)
    ]


def client_names(num_clients: int) -> list[str]:
    """``client-000``, ``client-001``, ... (zero-padded so they sort)."""
    width = max(3, len(str(num_clients - 1)))
    return [f"client-{k:0{width}d}" for k in range(num_clients)]


def slug(group: str) -> str:
    """A folder-safe id for a natural group: ``[a-z0-9._-]``, at most 69 characters.

    Lossy names (truncated, or reduced to nothing) get a hash suffix.
    """
    base = re.sub(r"[^a-z0-9._-]+", "-", group.lower()).strip("-._")
    digest = hashlib.sha1(group.encode("utf-8")).hexdigest()[:8]
    if not base:
        return f"group-{digest}"
    if len(base) > _SLUG_MAX:
        return f"{base[:_SLUG_MAX].rstrip('-._')}-{digest}"
    return base


def _validate(
    examples: Sequence[Example],
    method: str,
    num_clients: int,
    heldout_fraction: float,
    min_examples: int,
    max_examples: int,
    alpha: float,
    quantity_sigma: float,
) -> None:
    if method not in PARTITIONS:
        raise UserError(
            f"unknown partition {method!r}; choose one of: {', '.join(PARTITIONS)}"
        )
    checks = [
        (num_clients >= 1, f"data.num_clients must be >= 1, got {num_clients}"),
        (
            0 < heldout_fraction < 1,
            f"data.heldout_fraction must be in (0, 1), got {heldout_fraction}",
        ),
        (min_examples >= 1, f"data.min_examples must be >= 1, got {min_examples}"),
        (
            max_examples >= MIN_CLIENT_EXAMPLES,
            f"data.max_examples must be >= {MIN_CLIENT_EXAMPLES} (1 train + 1 held-out), got {max_examples}",
        ),
        (alpha > 0, f"data.alpha must be > 0, got {alpha}"),
        (
            quantity_sigma >= 0,
            f"data.quantity_sigma must be >= 0, got {quantity_sigma}",
        ),
        (len(examples) > 0, "no examples to partition: the data source is empty"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    if method != "natural" and len(examples) < MIN_CLIENT_EXAMPLES * num_clients:
        raise UserError(
            f"{len(examples)} examples cannot give {num_clients} clients at least "
            f"{MIN_CLIENT_EXAMPLES} each; lower data.num_clients or use more data"
        )


def _natural(
    examples: Sequence[Example],
    num_clients: int,
    min_examples: int,
    rng: np.random.Generator,
) -> list[tuple[str, list[Example]]]:
    groups: dict[str, list[Example]] = {}
    for e in examples:
        groups.setdefault(e.group, []).append(e)
    need = min_examples
    eligible = sorted(g for g, items in groups.items() if len(items) >= need)
    if len(eligible) < num_clients:
        raise UserError(
            f"natural partition: only {len(eligible)} of {len(groups)} groups have at least {need} "
            f"examples, but data.num_clients = {num_clients}; lower data.num_clients or data.min_examples"
        )
    chosen = sorted(
        eligible[i] for i in rng.choice(len(eligible), size=num_clients, replace=False)
    )
    ids: dict[str, str] = {}
    for g in chosen:
        cid = slug(g)
        if cid in ids.values():
            cid = f"{cid}-{hashlib.sha1(g.encode('utf-8')).hexdigest()[:8]}"
        ids[g] = cid
    return [(ids[g], groups[g]) for g in chosen]


def _pool(
    examples: Sequence[Example], size: int, rng: np.random.Generator
) -> list[Example]:
    """A seeded random sample of at most ``size`` examples, in random order."""
    return [examples[i] for i in rng.permutation(len(examples))[:size]]


def _dirichlet(
    pool: Sequence[Example], num_clients: int, alpha: float, rng: np.random.Generator
) -> list[list[int]]:
    by_label: dict[str, list[int]] = {}
    for i, e in enumerate(pool):
        by_label.setdefault(e.label or e.group, []).append(i)
    for _ in range(_DIRICHLET_DRAWS):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for label in sorted(by_label):
            idx = by_label[label]
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(np.asarray(idx), cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= MIN_CLIENT_EXAMPLES:
            return parts
    smallest = client_names(num_clients)[
        min(range(num_clients), key=lambda k: len(parts[k]))
    ]
    raise UserError(
        f"dirichlet partition: client {smallest} got fewer than {MIN_CLIENT_EXAMPLES} examples in "
        f"{_DIRICHLET_DRAWS} draws; raise data.alpha, lower data.num_clients or use more data"
    )


def _quantity(
    pool_size: int,
    num_clients: int,
    max_examples: int,
    sigma: float,
    rng: np.random.Generator,
) -> list[list[int]]:
    w = rng.lognormal(0.0, sigma, size=num_clients)
    target = w / w.max() * max_examples
    if target.sum() > pool_size:
        target *= pool_size / target.sum()
    counts = np.maximum(MIN_CLIENT_EXAMPLES, np.floor(target)).astype(int)
    if counts.sum() > pool_size:  # only when the floor of 2 overshoots a tiny pool
        raise UserError(
            f"quantity partition: {pool_size} examples are too few for {num_clients} clients; "
            "lower data.num_clients or data.quantity_sigma, or use more data"
        )
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return [list(range(s, s + c)) for s, c in zip(starts.tolist(), counts.tolist(), strict=True)]


def _split(
    client_id: str,
    items: list[Example],
    heldout_fraction: float,
    max_examples: int,
    rng: np.random.Generator,
) -> ClientData:
    """Cap ``items`` to ``max_examples`` (seeded) and split off the held-out part (none of one example)."""
    if not items:
        raise UserError(f"client {client_id} has no examples; lower data.num_clients or use more data")
    order = rng.permutation(len(items))[:max_examples]
    n = len(order)
    n_heldout = min(n - 1, max(1, int(n * heldout_fraction + 0.5)))
    return ClientData(
        client_id=client_id,
        train=[items[i] for i in order[n_heldout:]],
        heldout=[items[i] for i in order[:n_heldout]],
    )
