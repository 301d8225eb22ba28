"""Wire a personalization method and a LoRA aggregation into a federated run.

Checks that need the model (tensor names and layer shapes) run here, in
``prepare``, before anything is written: a pattern that matches nothing, a
rank larger than a layer allows, a product/stack aggregation over a module
whose factors are split between shared and personal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from openpfi.algorithms.lora import lora_pairs
from openpfi.algorithms.state import StateDict
from openpfi.assembly.compatibility import check_combinations
from openpfi.client.federated import FederatedClient, SharedModel
from openpfi.client.personal import KeySplit, PersonalPolicy, check_split, make_policy
from openpfi.config import Config
from openpfi.errors import UserError
from openpfi.strategies.lora_aggregation import (
    LoraAggregation,
    RankPlan,
    assign_ranks,
    check_pairs_shared,
    make_aggregation,
)


@dataclass
class PersonalSetup:
    policy: PersonalPolicy
    split: KeySplit
    plan: RankPlan
    aggregation: str
    keep_merged: bool

    def make_aggregation(self) -> LoraAggregation | None:
        return make_aggregation(self.aggregation, self.plan, self.keep_merged)

    def server_start(self, start: StateDict) -> StateDict:
        """The server's first global state: the shared part of the starting adapter (+ zero merged deltas)."""
        shared = {k: start[k] for k in sorted(self.split.shared)}
        agg = self.make_aggregation()
        return agg.init_params(shared) if agg is not None else shared


def check_ranks(params: StateDict, ranks: Sequence[int]) -> None:
    """Every rank must fit every adapted layer: r <= min(in, out)."""
    for prefix, (a, b) in lora_pairs(params).items():
        limit = min(params[a].shape[1], params[b].shape[0])
        big = sorted({r for r in ranks if r > limit})
        if big:
            raise UserError(
                f"LoRA rank {big[0]} is larger than layer {prefix} allows (min(in, out) = {limit}); "
                "lower lora.r / lora.client_ranks"
            )


def server_setup(
    cfg: Config, start: StateDict, client_ids: Sequence[str], sizes: Mapping[str, int] | None = None
) -> PersonalSetup:
    """The policy, key split and rank plan from the config and the starting adapter alone (what a
    server needs: e.g. Flower's ServerApp, which has no model). Bad input refused with one line."""
    check_combinations(cfg)
    p, lo = cfg.personalization, cfg.lora
    policy = make_policy(p.method, p)
    split = check_split(policy, sorted(start))
    check_ranks(start, [lo.r, *lo.client_ranks])
    if lo.aggregation in ("product", "stack") and policy.federated:
        check_pairs_shared(sorted(split.shared), lo.aggregation)
    if lo.client_ranks_by == "examples" and sizes is None:
        sizes = dict.fromkeys(client_ids, 0)
    ranks = assign_ranks(list(client_ids), lo.client_ranks, lo.client_ranks_by, sizes)
    plan = RankPlan(model_rank=lo.r, alpha=lo.alpha, ranks=ranks)
    return PersonalSetup(policy, split, plan, lo.aggregation, lo.keep_merged)


def setup_personalization(
    cfg: Config, shared: SharedModel, start: StateDict, clients: Sequence[FederatedClient]
) -> PersonalSetup:
    """Build the policy and rank plan, validate them against the model, and give each client its part."""
    sizes = {c.client_id: len(c.train) for c in clients}
    setup = server_setup(cfg, {k: v.detach() for k, v in shared.params.items()}, list(sizes), sizes)
    for c in clients:
        c.policy = setup.policy
        c.split = setup.split
        c.initial = start
        c.rank = setup.plan.rank(c.client_id)
        c.model_rank = cfg.lora.r
    return setup
