"""LoRA-aware aggregation on the server (``lora.aggregation``), over ``algorithms.lora``.

``naive`` is FedServer's default path (weighted mean of the A and B deltas,
then the server optimizer); it is NOT the average update (``mean(B) mean(A) !=
mean(B A)``) unless A is common to all clients (FFA-LoRA). The classes here
replace it when asked:

- :class:`ZeroPadAggregation` (HetLoRA baseline): pad every client's factors to
  rank r with zeros and average A and B separately;
- :class:`ProductAggregation`: the exact mean update ``mean_i (alpha/r) B_i A_i``,
  re-factored to rank r by truncated SVD; with ``keep_merged`` the truncation
  residual is kept as a dense merged delta, so nothing is lost;
- :class:`StackAggregation` (FLoRA): stack the clients' factors so that the
  product equals the weighted sum of their updates exactly, merge it into the
  global dense delta, and restart the LoRA factors from their init.

Heterogeneous ranks on one shared base model. The model carries ONE rank-r
adapter (r = ``lora.r``, scale alpha/r). A client of rank ``r_i <= r`` receives
the global factors sliced to its rank, trains them with the components beyond
``r_i`` held at exactly zero (``algorithms/lora_rank.py``), and uploads rank-``r_i``
deltas. Every client therefore uses the common scale alpha/r, i.e. an
effective ``lora_alpha_i = alpha * r_i / r`` at rank ``r_i``; the server passes
these alphas to ``product_average`` / ``stack_lora``, so client and server
agree on ``dW_i = (alpha/r) B_i A_i``. Merged deltas travel as
``<module>.merged_delta`` entries of the global state (``models/merged.py``).

Bytes down count what a real deployment sends: the factors sliced to the
client's rank (none for FLoRA, whose clients re-create the seeded init), plus,
for merged deltas, every increment the client missed since it last took part
(stacked factors for FLoRA, the residual at rank ``sum_i r_i`` for product),
capped at the dense delta.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from openpfi.algorithms.lora import lora_pairs, product_average, stack_lora, zero_pad_average
from openpfi.algorithms.lora_rank import slice_rank
from openpfi.algorithms.state import StateDict, nbytes
from openpfi.client.messages import ClientUpdate
from openpfi.errors import UserError
from openpfi.models.merged import is_merged_key, merged_key, split_merged


@dataclass(frozen=True)
class RankPlan:
    """LoRA ranks the server knows (a device's capability is not private)."""

    model_rank: int
    """r = ``lora.r``: the rank of the global adapter."""
    alpha: float
    ranks: Mapping[str, int] = field(default_factory=dict)
    """Client id -> rank (<= model_rank); missing clients use model_rank."""

    def rank(self, client_id: str) -> int:
        return int(self.ranks.get(client_id, self.model_rank))

    def effective_alpha(self, client_id: str) -> float:
        """The common scale alpha/r at rank r_i: ``alpha_i = alpha * r_i / r``."""
        return self.alpha * self.rank(client_id) / self.model_rank

    @property
    def heterogeneous(self) -> bool:
        return any(r != self.model_rank for r in self.ranks.values())


def assign_ranks(
    client_ids: Sequence[str], ranks: Sequence[int], by: str = "order", sizes: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Per-client ranks from a list, cycled over the clients.

    ``by = "order"``: client k (sorted ids) gets ``ranks[k % len(ranks)]`` (device tiers).
    ``by = "examples"``: the same multiset of ranks, smallest ranks to the clients with the
    fewest training examples (a compute budget that grows with the data a client holds).
    """
    if not ranks:
        return {}
    ids = sorted(client_ids)
    cycled = [int(ranks[k % len(ranks)]) for k in range(len(ids))]
    if by == "examples":
        if sizes is None:
            raise UserError('lora.client_ranks_by = "examples" needs the clients\' example counts')
        order = sorted(ids, key=lambda c: (sizes[c], c))
        return dict(zip(order, sorted(cycled), strict=True))
    return dict(zip(ids, cycled, strict=True))


def _factors(params: Mapping[str, torch.Tensor]) -> StateDict:
    return {k: v for k, v in params.items() if not is_merged_key(k)}


def client_states(params: StateDict, updates: Sequence[ClientUpdate], plan: RankPlan) -> list[StateDict]:
    """Each client's trained factors at its own rank: ``slice(global, r_i) + delta_i``."""
    factors = _factors(params)
    out = []
    for u in updates:
        base = slice_rank({k: factors[k] for k in u.delta}, plan.rank(u.client_id))
        for k, d in u.delta.items():
            if tuple(d.shape) != tuple(base[k].shape):
                raise UserError(
                    f"client {u.client_id} sent '{k}' with shape {tuple(d.shape)}, expected {tuple(base[k].shape)} "
                    f"(rank {plan.rank(u.client_id)})"
                )
        out.append({k: base[k] + u.delta[k] for k in u.delta})
    return out


class LoraAggregation(ABC):
    """Common part: reconstruct client states, count bytes, keep the catch-up ledger."""

    name = "base"
    merges = False
    """True: the global state carries dense merged deltas."""
    sends_factors = True
    """False: clients re-create the factors from the seeded init (FLoRA)."""

    def __init__(self, plan: RankPlan):
        self.plan = plan
        self.last_seen: dict[str, int] = {}
        self.increments: dict[int, int] = {}
        """Round -> bytes of the merged-delta increment that round produced."""

    # -- set-up ----------------------------------------------------------------------------------
    def init_params(self, shared_start: StateDict) -> StateDict:
        """The server's starting global state: the shared factors (+ zero merged deltas)."""
        params = dict(shared_start)
        if self.merges:
            for prefix, (a, b) in lora_pairs(shared_start).items():
                shape = (shared_start[b].shape[0], shared_start[a].shape[1])  # (out, in)
                params[merged_key(prefix)] = torch.zeros(shape, dtype=shared_start[a].dtype)
        return params

    @abstractmethod
    def aggregate(self, params: StateDict, updates: Sequence[ClientUpdate], round_num: int) -> StateDict:
        """The new global state from this round's client updates (each subclass's rule)."""

    # -- bytes -----------------------------------------------------------------------------------
    def download_bytes(self, params: StateDict, client_id: str, round_num: int) -> int:
        """Bytes sent to ``client_id`` at the start of ``round_num``; records that it is now in sync."""
        factors, merged = split_merged(params)
        total = nbytes(slice_rank(factors, self.plan.rank(client_id))) if self.sends_factors else 0
        if merged:
            since = self.last_seen.get(client_id, 1)
            catch_up = sum(b for r, b in self.increments.items() if since <= r < round_num)
            total += min(catch_up, nbytes(merged))
        self.last_seen[client_id] = round_num
        return total

    def meta(self) -> dict[str, Any]:
        return {"last_seen": dict(self.last_seen), "increments": {str(k): v for k, v in self.increments.items()}}

    def load_meta(self, meta: Mapping[str, Any] | None) -> None:
        meta = meta or {}
        self.last_seen = {str(k): int(v) for k, v in meta.get("last_seen", {}).items()}
        self.increments = {int(k): int(v) for k, v in meta.get("increments", {}).items()}

    def _weights(self, updates: Sequence[ClientUpdate]) -> list[float]:
        return [float(u.num_examples) for u in updates]


class ZeroPadAggregation(LoraAggregation):
    """HetLoRA baseline (Cho et al. 2024): zero-pad each client's factors to rank r, then
    average A and B separately. Like naive averaging, not the mean update; the zeros of
    low-rank clients shrink the high components. Works on any key subset (FedSA's A,
    FFA's B; with a common frozen A, averaging padded B IS the exact mean update)."""

    name = "zeropad"

    def aggregate(self, params: StateDict, updates: Sequence[ClientUpdate], round_num: int) -> StateDict:
        states = client_states(params, updates, self.plan)
        ranks = [self.plan.rank(u.client_id) for u in updates]
        return {**params, **zero_pad_average(states, self._weights(updates), ranks, self.plan.model_rank)}


class ProductAggregation(LoraAggregation):
    """Exact product averaging: ``dW = sum_i p_i (alpha_i/r_i) B_i A_i`` (``algorithms.lora.product_average``),
    re-factored by truncated SVD ``dW ~ U_r S_r V_r^T`` to rank r. With ``keep_merged`` the residual
    ``dW - (alpha/r) B' A'`` is added to the global merged delta (exact).

    Balance of the factors. Any ``A' = t V_r^T``, ``B' = U_r S_r / (c t)`` (``c = alpha/r``) has the same
    product; we keep A's rows orthonormal at the row norm ``t`` of the global A before the round
    (the init's scale, ~0.58 for peft's Kaiming init) and put the singular values into B. The
    symmetric split ``sqrt(S)`` on both sides shrinks A to the size of the update: the next round
    then starts near LoRA's saddle at A = B = 0 and learns much more slowly (B's gradient is
    proportional to A x). Components are ordered by singular value, so a client of rank r_i
    receives the best rank-r_i part."""

    name = "product"

    def __init__(self, plan: RankPlan, keep_merged: bool = False):
        super().__init__(plan)
        self.merges = keep_merged

    def aggregate(self, params: StateDict, updates: Sequence[ClientUpdate], round_num: int) -> StateDict:
        states = client_states(params, updates, self.plan)
        ranks = [self.plan.rank(u.client_id) for u in updates]
        alphas = [self.plan.effective_alpha(u.client_id) for u in updates]
        r, alpha = self.plan.model_rank, self.plan.alpha
        new, deltas = product_average(states, self._weights(updates), alphas, ranks, out_rank=r, out_alpha=alpha)
        out = {**params, **new}
        pairs = lora_pairs(new)
        inc = 0
        for prefix, dw in deltas.items():
            a_key, b_key = pairs[prefix]
            a_new, b_new = refactor(dw, r, alpha / r, row_norm(params[a_key]))
            out[a_key] = a_new.to(params[a_key].dtype)
            out[b_key] = b_new.to(params[b_key].dtype)
            if self.merges:
                kept = (alpha / r) * (b_new @ a_new)  # (out, in)
                key = merged_key(prefix)
                out[key] = (params[key].double() + dw.double() - kept).to(params[key].dtype)
                rows, cols = dw.shape
                inc += 4 * min(rows * cols, sum(ranks) * (rows + cols))
        if self.merges:
            self.increments[round_num] = inc
        return out


def row_norm(a: torch.Tensor) -> float:
    """Root-mean-square row norm of A (r, in); 1.0 for an all-zero A."""
    t = float(torch.sqrt((a.detach().double() ** 2).sum(dim=1).mean()))
    return t if t > 0 else 1.0


def refactor(dw: torch.Tensor, rank: int, scale: float, a_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` with ``scale * B @ A`` the best rank-``rank`` approximation of ``dw`` (out, in),
    A's rows orthonormal times ``a_norm`` and the singular values in B. float64."""
    u, sv, vh = torch.linalg.svd(dw.detach().double(), full_matrices=False)  # (out, k), (k,), (k, in)
    k = min(rank, sv.shape[0])
    a = torch.zeros(rank, dw.shape[1], dtype=torch.float64)
    b = torch.zeros(dw.shape[0], rank, dtype=torch.float64)
    a[:k] = a_norm * vh[:k]
    b[:, :k] = u[:, :k] * sv[:k] / (scale * a_norm)
    return a, b


class StackAggregation(LoraAggregation):
    """FLoRA (Wang et al. 2024): stack ``A = [p_i (alpha_i/r_i) A_i]``, ``B = [B_i]`` so that
    ``B A = sum_i p_i dW_i`` exactly (``algorithms.lora.stack_lora``), merge it into the
    global dense delta, and start every client's factors again from the seeded init."""

    name = "stack"
    merges = True
    sends_factors = False

    def aggregate(self, params: StateDict, updates: Sequence[ClientUpdate], round_num: int) -> StateDict:
        states = client_states(params, updates, self.plan)
        ranks = [self.plan.rank(u.client_id) for u in updates]
        alphas = [self.plan.effective_alpha(u.client_id) for u in updates]
        stacked = stack_lora(states, self._weights(updates), alphas, ranks, out_scale=1.0)
        out = dict(params)
        for prefix, (a_key, b_key) in lora_pairs(stacked).items():
            key = merged_key(prefix)
            dw = stacked[b_key].double() @ stacked[a_key].double()  # (out, in) = sum_i p_i dW_i
            out[key] = (params[key].double() + dw).to(params[key].dtype)
        self.increments[round_num] = nbytes({k: v.float() for k, v in stacked.items()})
        return out


AGGREGATIONS: dict[str, type[LoraAggregation] | None] = {
    "naive": None,  # FedServer's own path: weighted mean of deltas + server optimizer
    "zeropad": ZeroPadAggregation,
    "product": ProductAggregation,
    "stack": StackAggregation,
}


def make_aggregation(name: str, plan: RankPlan, keep_merged: bool = False) -> LoraAggregation | None:
    """The aggregation for ``lora.aggregation`` (None = FedServer's naive default)."""
    if name not in AGGREGATIONS:
        raise UserError(f"lora.aggregation {name!r} is unknown; choose one of {', '.join(AGGREGATIONS)}")
    if name == "product":
        return ProductAggregation(plan, keep_merged)
    cls = AGGREGATIONS[name]
    return None if cls is None else cls(plan)


def check_aggregation_config(name: str, rank: int, client_ranks: Sequence[int], keep_merged: bool,
                             strategy: str, server_lr: float) -> None:
    """What the LoRA aggregations allow: naive averaging needs one rank; only product keeps a merged
    residual; every other aggregation replaces the server optimizer (so FedAvg / FedProx at lr 1)."""
    if name not in AGGREGATIONS:
        raise UserError(f"lora.aggregation {name!r} is unknown; choose one of {', '.join(AGGREGATIONS)}")
    if AGGREGATIONS[name] is None and any(r != rank for r in client_ranks):
        raise UserError("lora.client_ranks differ from lora.r, but naive averaging needs one rank; "
                        'set lora.aggregation = "zeropad", "product" or "stack"')
    if keep_merged and name != "product":
        raise UserError('lora.keep_merged applies to lora.aggregation = "product" only')
    if AGGREGATIONS[name] is not None and (strategy not in ("fedavg", "fedprox") or server_lr != 1):
        raise UserError(f'lora.aggregation = "{name}" replaces the server optimizer; use federation.strategy = '
                        '"fedavg" or "fedprox" with server_lr = 1, or lora.aggregation = "naive"')


def check_pairs_shared(shared: Sequence[str], name: str) -> None:
    """Product and stacking need both factors of a module on the same side of the split."""
    keys = set(shared)
    for k in keys:
        for own, other in ((".lora_A.weight", ".lora_B.weight"), (".lora_B.weight", ".lora_A.weight")):
            if k.endswith(own) and k[: -len(own)] + other not in keys:
                raise UserError(
                    f"lora.aggregation = {name!r} needs both LoRA factors of a module shared, but "
                    f"'{k[: -len(own)] + other}' is personal; change personalization.personal_patterns"
                )
