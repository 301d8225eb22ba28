"""Per-client preference data with different objective mixes, and the public held-out sets.

Clients disagree by construction: client i holds a share ``mix_i[m]`` of its pairs from
objective m. Mixes (``alignment.mix``):

1. ``spread`` (default): for M = 2, client i of n gets
   ``t_i = (1 - s)/2 + s * i/(n-1)`` of objective 0 and ``1 - t_i`` of objective 1
   (s = ``mix_spread``: 0 = every client the same, 1 = from all-objective-1 to
   all-objective-0); for M > 2, ``(1 - s)/M + s * onehot(i mod M)``;
2. ``uniform``: 1/M each;
3. ``dirichlet``: Dir(alpha) per client, seeded;
4. explicit ``client_mix`` rows (one per client, each on the simplex).

Counts are ``pairs_per_client * mix`` rounded by largest remainder. Each objective's
training pool (pairs not held out) is shuffled with the seed and dealt to clients in
order; when a pool runs out it wraps around and the reuse is counted. A share of 0
leaves a client without that objective: it trains on the others and reports it.
The held-out sets (``eval_sets``) are public, seed-independent, and never dealt.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from openpfi.data.preference import PreferencePair, PreferenceSet, effective_objective
from openpfi.errors import UserError


@dataclass
class ClientPreferences:
    """One client's private preference data."""

    client_id: str
    mix: tuple[float, ...]
    train: dict[str, list[PreferencePair]]
    """Per objective (every configured objective is a key; the list may be empty)."""
    heldout: list[PreferencePair] = field(default_factory=list)
    """The client's own held-out pairs (all objectives), for its evaluation."""
    reused: int = 0
    """Pairs this client got from a wrapped-around pool (also held by another client)."""

    def missing(self) -> list[str]:
        return [m for m, ps in self.train.items() if not ps]


@dataclass(frozen=True)
class EvalSets:
    """Public held-out data for server-side evaluation of the global adapter."""

    pairs: dict[str, list[PreferencePair]]
    harmful_prompts: list[str]
    benign_prompts: list[str]


def client_mixes(
    num_clients: int,
    num_objectives: int,
    mode: str,
    spread: float,
    alpha: float,
    explicit: Sequence[Sequence[float]],
    seed: int,
) -> list[tuple[float, ...]]:
    """The objective share vector of every client (see the module docstring)."""
    n, m = num_clients, num_objectives
    if explicit:
        if len(explicit) != n:
            raise UserError(f"alignment.client_mix has {len(explicit)} rows but data.num_clients = {n}; "
                            f"give one share vector per client")
        rows = [tuple(float(x) for x in r) for r in explicit]
        for i, r in enumerate(rows):
            if len(r) != m or min(r) < 0 or abs(sum(r) - 1.0) > 1e-6:
                raise UserError(f"alignment.client_mix row {i} = {list(r)} must have {m} non-negative "
                                f"shares summing to 1 (one per objective)")
        return rows
    if mode == "uniform":
        return [tuple([1.0 / m] * m) for _ in range(n)]
    if mode == "dirichlet":
        rng = np.random.default_rng([seed, 0xA11])
        return [tuple(float(x) for x in rng.dirichlet([alpha] * m)) for _ in range(n)]
    if m == 2:
        out: list[tuple[float, ...]] = []
        for i in range(n):
            t = 0.5 if n == 1 else (1 - spread) / 2 + spread * i / (n - 1)
            out.append((t, 1.0 - t))
        return out
    return [tuple((1 - spread) / m + (spread if k == i % m else 0.0) for k in range(m)) for i in range(n)]


def largest_remainder(total: int, shares: Sequence[float]) -> list[int]:
    """Integer counts summing to ``total``, proportional to ``shares`` (Hamilton's method)."""
    raw = [total * s for s in shares]
    counts = [math.floor(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda k: (counts[k] - raw[k], k))
    for k in order[: total - sum(counts)]:
        counts[k] += 1
    return counts


def _order_key(tag: str, pair_id: str) -> bytes:
    return hashlib.sha256(f"{tag}:{pair_id}".encode()).digest()


def _shuffled(pairs: Sequence[PreferencePair], seed: int) -> list[PreferencePair]:
    return sorted(pairs, key=lambda p: _order_key(f"deal-{seed}", p.id))


def split_clients(
    pset: PreferenceSet,
    objectives: Sequence[str],
    num_clients: int,
    pairs_per_client: int,
    mixes: Sequence[Sequence[float]],
    seed: int,
    heldout_fraction: float,
) -> list[ClientPreferences]:
    """Deal the training pools to clients by their mixes; a slice of each is the client's held-out."""
    pools: dict[str, list[PreferencePair]] = {m: [] for m in objectives}
    for p in pset.pairs:
        obj = effective_objective(p, objectives)
        if not p.heldout and obj in pools:
            pools[obj].append(p)
    for m, pool in pools.items():
        if not pool:
            raise UserError(f"alignment objective {m!r} has no preference pairs; "
                            f"remove it from alignment.objectives")
    pools = {m: _shuffled(pool, seed) for m, pool in pools.items()}
    cursor = dict.fromkeys(objectives, 0)
    clients = []
    for i in range(num_clients):
        counts = largest_remainder(pairs_per_client, mixes[i])
        train: dict[str, list[PreferencePair]] = {}
        held: list[PreferencePair] = []
        reused = 0
        for m, count in zip(objectives, counts, strict=True):
            pool = pools[m]
            taken = [pool[(cursor[m] + k) % len(pool)] for k in range(count)]
            reused += sum(1 for k in range(count) if cursor[m] + k >= len(pool))
            cursor[m] += count
            n_held = math.floor(heldout_fraction * count) if count >= 2 else 0
            held += taken[:n_held]
            train[m] = taken[n_held:]
        clients.append(ClientPreferences(f"client-{i:03d}", tuple(mixes[i]), train, held, reused))
    for c in clients:
        if not any(c.train.values()):
            raise UserError(f"{c.client_id} got no training pairs; raise alignment.pairs_per_client")
    return clients


def _round_robin(pairs: Sequence[PreferencePair], tag: str) -> list[PreferencePair]:
    """Seed-independent order: by hash within each source, sources taken in turn."""
    by_source: dict[str, list[PreferencePair]] = {}
    for p in sorted(pairs, key=lambda p: _order_key(tag, p.id)):
        by_source.setdefault(p.source, []).append(p)
    queues = [by_source[s] for s in sorted(by_source)]
    out: list[PreferencePair] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        out += [q[depth] for q in queues if depth < len(q)]
    return out


def eval_sets(pset: PreferenceSet, objectives: Sequence[str], eval_pairs: int, eval_prompts: int) -> EvalSets:
    """Held-out pairs per objective and held-out harmful / benign request prompts."""
    pairs: dict[str, list[PreferencePair]] = {m: [] for m in objectives}
    for p in pset.pairs:
        obj = effective_objective(p, objectives)
        if p.heldout and obj in pairs:
            pairs[obj].append(p)
    chosen = {m: _round_robin(ps, "eval-pairs")[:eval_pairs] for m, ps in pairs.items()}
    held = [p for p in pset.pairs if p.heldout and p.kind == "request"]
    harmful = _round_robin([p for p in held if p.objective == "harmless"], "eval-prompts")
    benign = _round_robin([p for p in held if p.objective == "helpful"], "eval-prompts")
    return EvalSets(chosen, [p.prompt for p in harmful[:eval_prompts]], [p.prompt for p in benign[:eval_prompts]])
