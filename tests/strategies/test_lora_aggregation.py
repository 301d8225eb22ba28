"""Exact maths of the LoRA-aware server aggregations on small matrices."""

from __future__ import annotations

import pytest
import torch

from openpfi.algorithms.lora_rank import pad_rank
from openpfi.client.messages import ClientUpdate
from openpfi.errors import UserError
from openpfi.strategies.lora_aggregation import (
    ProductAggregation,
    RankPlan,
    StackAggregation,
    ZeroPadAggregation,
    assign_ranks,
    check_pairs_shared,
    make_aggregation,
)

A, B, M = "m.lora_A.weight", "m.lora_B.weight", "m.merged_delta"
D = torch.float64


def _global(r: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {A: torch.randn(r, 4, generator=gen, dtype=D), B: torch.randn(3, r, generator=gen, dtype=D)}


def _update(cid: str, n: int, rank: int, seed: int) -> ClientUpdate:
    gen = torch.Generator().manual_seed(seed)
    delta = {A: torch.randn(rank, 4, generator=gen, dtype=D), B: torch.randn(3, rank, generator=gen, dtype=D)}
    return ClientUpdate(cid, n, delta)


def _trained(params: dict[str, torch.Tensor], u: ClientUpdate, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The client's own factors at its rank: slice(global) + delta."""
    return params[A][:rank] + u.delta[A], params[B][:, :rank] + u.delta[B]


def test_product_average_is_the_mean_update_when_the_rank_suffices() -> None:
    # Prepare: two rank-1 clients on a rank-2 global adapter; alpha = 4 so scale alpha/r = 2
    plan = RankPlan(model_rank=2, alpha=4.0, ranks={"a": 1, "b": 1})
    params = _global()
    ups = [_update("a", 1, 1, 10), _update("b", 3, 1, 11)]
    expected = torch.zeros(3, 4, dtype=D)
    for u, p in zip(ups, (0.25, 0.75), strict=True):
        a, b = _trained(params, u, 1)
        expected += p * 2.0 * (b @ a)  # common scale alpha/r = 2 for every client
    # Execute
    out = ProductAggregation(plan).aggregate(params, ups, 1)
    # Assert: rank(mean) <= 2 = r, so the re-factored update is exact
    assert torch.allclose(2.0 * out[B] @ out[A], expected, atol=1e-12)
    assert M not in out


def test_product_average_error_is_the_svd_tail() -> None:
    plan = RankPlan(model_rank=2, alpha=2.0)
    params = _global()
    ups = [_update("a", 2, 2, 20), _update("b", 2, 2, 21)]
    mean = sum(0.5 * (b @ a) for a, b in (_trained(params, u, 2) for u in ups))
    out = ProductAggregation(plan).aggregate(params, ups, 1)
    err = torch.linalg.matrix_norm(mean - out[B] @ out[A])
    tail = torch.linalg.svdvals(mean)[2:]
    assert float(err) == pytest.approx(float(torch.sqrt((tail**2).sum())), abs=1e-10)
    assert float(tail[0]) > 1e-3  # the test really truncates


def test_keep_merged_keeps_the_exact_mean_update() -> None:
    plan = RankPlan(model_rank=2, alpha=2.0)
    agg = ProductAggregation(plan, keep_merged=True)
    params = agg.init_params(_global())
    params[M] = torch.full((3, 4), 0.5, dtype=D)  # an earlier residual
    ups = [_update("a", 1, 2, 30), _update("b", 1, 2, 31)]
    mean = sum(0.5 * (b @ a) for a, b in (_trained(params, u, 2) for u in ups))
    out = agg.aggregate(params, ups, 1)
    # global model after = D' + (alpha/r) B'A' = D + mean of the clients' models
    assert torch.allclose(out[M] + out[B] @ out[A], params[M] + mean, atol=1e-12)
    # the residual increment travels at rank sum(r_i) = 4: 4 bytes * min(3*4, 4*(3+4))
    assert agg.increments == {1: 4 * 12}


def test_stacking_equals_the_weighted_sum_with_heterogeneous_ranks() -> None:
    # Prepare: ranks 1 and 3 on a rank-3 adapter, alpha = 6 (scale alpha/r = 2 for every client)
    plan = RankPlan(model_rank=3, alpha=6.0, ranks={"a": 1, "b": 3})
    agg = StackAggregation(plan)
    params = agg.init_params(_global(3))
    ups = [_update("a", 2, 1, 40), _update("b", 6, 3, 41)]
    expected = sum(
        p * 2.0 * (b @ a)
        for p, (a, b) in zip(
            (0.25, 0.75), (_trained(params, u, r) for u, r in zip(ups, (1, 3), strict=True)), strict=True
        )
    )
    # Execute
    out = agg.aggregate(params, ups, 1)
    # Assert: merged exactly; the factors restart from the init
    assert torch.allclose(out[M], expected, atol=1e-12)
    assert torch.equal(out[A], params[A]) and torch.equal(out[B], params[B])
    # stacked factors sent next round: A (1+3, 4) and B (3, 1+3) in float32
    assert agg.increments == {1: 4 * (4 * 4 + 3 * 4)}


def test_alpha_over_r_is_consistent_between_client_and_server() -> None:
    # A rank-1 client trains the first component of the rank-2 adapter (scale alpha/r); the
    # server must see exactly the model's update (alpha/r) B_pad A_pad.
    plan = RankPlan(model_rank=2, alpha=8.0, ranks={"a": 1})
    params = _global()
    u = _update("a", 1, 1, 50)
    a, b = _trained(params, u, 1)
    padded = pad_rank({A: a, B: b}, 2)
    model_update = (8.0 / 2) * padded[B] @ padded[A]
    out = ProductAggregation(plan).aggregate(params, [u], 1)
    assert torch.allclose((8.0 / 2) * out[B] @ out[A], model_update, atol=1e-12)
    assert plan.effective_alpha("a") == 4.0


def test_zeropad_pads_low_ranks_and_equals_naive_for_equal_ranks() -> None:
    plan = RankPlan(model_rank=2, alpha=2.0, ranks={"a": 1, "b": 2})
    params = _global()
    ups = [_update("a", 1, 1, 60), _update("b", 3, 2, 61)]
    states = [dict(zip((A, B), _trained(params, u, r), strict=True)) for u, r in zip(ups, (1, 2), strict=True)]
    out = ZeroPadAggregation(plan).aggregate(params, ups, 1)
    # by hand: client a's rank-1 factors padded with a zero row of A and a zero column of B, weights 1 : 3
    a_pad = torch.cat([states[0][A], torch.zeros(1, states[0][A].shape[1], dtype=states[0][A].dtype)])
    b_pad = torch.cat([states[0][B], torch.zeros(states[0][B].shape[0], 1, dtype=states[0][B].dtype)], dim=1)
    assert torch.allclose(out[A], (a_pad + 3 * states[1][A]) / 4) and torch.allclose(out[B], (b_pad + 3 * states[1][B]) / 4)
    # equal ranks: the mean of the states = global + mean delta (naive FedAvg)
    same = [_update("a", 1, 2, 62), _update("b", 1, 2, 63)]
    out = ZeroPadAggregation(RankPlan(2, 2.0)).aggregate(params, same, 1)
    assert torch.allclose(out[A], params[A] + 0.5 * (same[0].delta[A] + same[1].delta[A]))


def test_zeropad_works_on_a_single_factor() -> None:
    # FFA-LoRA shares only B; with a common A, the mean of the padded B is the exact mean update
    plan = RankPlan(model_rank=2, alpha=2.0, ranks={"a": 1, "b": 2})
    a_common = _global()[A]
    params = {B: _global()[B]}
    ups = [ClientUpdate("a", 1, {B: torch.ones(3, 1, dtype=D)}), ClientUpdate("b", 1, {B: torch.ones(3, 2, dtype=D)})]
    out = ZeroPadAggregation(plan).aggregate(params, ups, 1)
    b_a = params[B][:, :1] + 1
    b_b = params[B] + 1
    mean = 0.5 * (b_a @ a_common[:1]) + 0.5 * (b_b @ a_common)
    assert torch.allclose(out[B] @ a_common, mean, atol=1e-12)


def test_catch_up_bytes_for_merged_deltas() -> None:
    agg = StackAggregation(RankPlan(2, 2.0))
    params = agg.init_params({A: torch.zeros(2, 4), B: torch.zeros(3, 2)})  # dense delta: 3*4*4 = 48 bytes
    agg.increments = {1: 10, 2: 20}
    assert agg.download_bytes(params, "x", 1) == 0  # factors re-created from the seed, nothing merged yet
    assert agg.download_bytes(params, "x", 2) == 10  # the increment of round 1
    assert agg.download_bytes(params, "y", 3) == 30  # new client: rounds 1 and 2
    agg.increments[3] = 40
    assert agg.download_bytes(params, "y", 4) == 40
    assert agg.download_bytes(params, "x", 4) == 48  # missed rounds 2 and 3: capped at the dense delta
    # the ledger survives a checkpoint
    other = StackAggregation(RankPlan(2, 2.0))
    other.load_meta(agg.meta())
    assert other.last_seen == agg.last_seen and other.increments == agg.increments


def test_wrong_shapes_and_split_pairs_are_refused() -> None:
    plan = RankPlan(model_rank=2, alpha=2.0, ranks={"a": 1})
    with pytest.raises(UserError, match="expected"):
        ZeroPadAggregation(plan).aggregate(_global(), [_update("a", 1, 2, 70)], 1)
    with pytest.raises(UserError, match="personal"):
        check_pairs_shared([A], "product")
    with pytest.raises(UserError, match="unknown"):
        make_aggregation("mean", plan)
    assert make_aggregation("naive", plan) is None


def test_assign_ranks_cycles_and_follows_examples() -> None:
    ids = ["c", "a", "b"]
    assert assign_ranks(ids, [2, 8]) == {"a": 2, "b": 8, "c": 2}
    assert assign_ranks(ids, [2, 8], "examples", {"a": 30, "b": 10, "c": 20}) == {"b": 2, "c": 2, "a": 8}
    assert assign_ranks(ids, []) == {}


def test_product_refactoring_keeps_a_at_the_scale_of_the_global_a() -> None:
    # The singular values go into B; A keeps orthonormal rows at the global A's row norm, so the
    # next round does not start near LoRA's A = B = 0 saddle.
    plan = RankPlan(model_rank=2, alpha=2.0)
    params = _global()
    t = float(torch.sqrt((params[A] ** 2).sum(dim=1).mean()))
    ups = [ClientUpdate("a", 1, {A: torch.zeros(2, 4, dtype=D), B: 1e-3 * torch.ones(3, 2, dtype=D)})]
    out = ProductAggregation(plan).aggregate(params, ups, 1)
    assert torch.allclose(out[A] @ out[A].T, t**2 * torch.eye(2, dtype=D), atol=1e-12)
    a, b = _trained(params, ups[0], 2)
    assert torch.allclose(out[B] @ out[A], b @ a, atol=1e-12)
