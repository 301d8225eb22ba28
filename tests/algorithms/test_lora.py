"""Tests for openpfi.algorithms.lora."""

from __future__ import annotations

import pytest
import torch

from openpfi.algorithms.lora import (
    lora_delta,
    lora_pairs,
    naive_average,
    product_average,
    stack_lora,
    zero_pad_average,
)
from openpfi.errors import UserError

A, B, HEAD = "m.lora_A.weight", "m.lora_B.weight", "head.weight"


def _adapter(a: list[list[float]], b: list[list[float]], head: list[float]) -> dict[str, torch.Tensor]:
    return {A: torch.tensor(a), B: torch.tensor(b), HEAD: torch.tensor(head)}


def _diag_clients() -> list[dict[str, torch.Tensor]]:
    """Rank 1 each: B1 A1 = diag(1, 0), B2 A2 = diag(0, 1)."""
    return [
        _adapter([[1.0, 0.0]], [[1.0], [0.0]], [1.0, 2.0, 3.0]),
        _adapter([[0.0, 1.0]], [[0.0], [1.0]], [5.0, 6.0, 7.0]),
    ]


def _random_clients(ranks: list[int], seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            A: torch.randn(r, 4, generator=gen, dtype=torch.float64),
            B: torch.randn(3, r, generator=gen, dtype=torch.float64),
            HEAD: torch.randn(2, generator=gen, dtype=torch.float64),
        }
        for r in ranks
    ]


def test_lora_pairs_and_validation() -> None:
    # Prepare
    state = _diag_clients()[0]
    # Execute
    pairs = lora_pairs(state)
    # Assert
    assert pairs == {"m": (A, B)}
    with pytest.raises(UserError, match="no matching"):
        lora_pairs({A: state[A], HEAD: state[HEAD]})
    with pytest.raises(UserError, match="A \\(r, in\\) and B \\(out, r\\)"):
        lora_pairs({A: torch.zeros(2, 4), B: torch.zeros(3, 1)})


def test_naive_average_is_not_the_average_update() -> None:
    # Prepare
    clients = _diag_clients()
    # Execute
    naive = naive_average(clients, [1.0, 1.0])
    product, deltas = product_average(clients, [1.0, 1.0], alphas=[1.0, 1.0], ranks=[1, 1], out_rank=2)
    # Assert: mean(B) mean(A) = 0.25 * ones, mean(B A) = 0.5 * I
    assert torch.equal(naive[A], torch.tensor([[0.5, 0.5]])) and torch.equal(naive[B], torch.tensor([[0.5], [0.5]]))
    assert torch.equal(naive[B] @ naive[A], torch.full((2, 2), 0.25))
    torch.testing.assert_close((1.0 / 2) * product[B] @ product[A], 0.5 * torch.eye(2))  # alpha / out_rank
    torch.testing.assert_close(deltas["m"], 0.5 * torch.eye(2))
    assert torch.equal(product[HEAD], torch.tensor([3.0, 4.0, 5.0]))


def test_product_average_truncates_and_absorbs_scaling() -> None:
    # Prepare: alpha 2, rank 1, weights 3:1 -> mean dW = (3 * 2 diag(1,0) + 2 diag(0,1)) / 4 = diag(1.5, .5)
    clients = _diag_clients()
    # Execute
    rank1, deltas = product_average(clients, [3.0, 1.0], alphas=[2.0, 2.0], ranks=[1, 1], out_rank=1)
    rank2, _ = product_average(clients, [3.0, 1.0], alphas=[2.0, 2.0], ranks=[1, 1], out_rank=2)
    # Assert: scale c = alpha/out_rank; c B A is the truncated mean; sqrt(S) split evenly
    torch.testing.assert_close(deltas["m"], torch.diag(torch.tensor([1.5, 0.5])))
    assert rank1[A].shape == (1, 2) and rank1[B].shape == (2, 1)
    torch.testing.assert_close(2.0 * rank1[B] @ rank1[A], torch.diag(torch.tensor([1.5, 0.0])))
    torch.testing.assert_close(rank1[A].abs(), torch.tensor([[0.75**0.5, 0.0]]))
    torch.testing.assert_close(rank1[B].abs(), torch.tensor([[0.75**0.5], [0.0]]))
    torch.testing.assert_close(1.0 * rank2[B] @ rank2[A], torch.diag(torch.tensor([1.5, 0.5])))
    torch.testing.assert_close(rank2[HEAD], torch.tensor([2.0, 3.0, 4.0]))


def test_product_average_heterogeneous_ranks_exact_then_eckart_young() -> None:
    # Prepare
    clients, ranks, alphas, weights = (
        _random_clients([1, 2]),
        [1, 2],
        [2.0, 8.0],
        [1.0, 3.0],
    )
    expected = (
        sum(w * lora_delta(c[A], c[B], al, r) for c, w, al, r in zip(clients, weights, alphas, ranks, strict=True))
        / 4.0
    )
    singular = torch.linalg.svdvals(expected)
    # Execute
    full, deltas = product_average(clients, weights, alphas, ranks, out_rank=3, out_alpha=6.0)
    cut, _ = product_average(clients, weights, alphas, ranks, out_rank=1, out_alpha=6.0)
    padded, _ = product_average(clients, weights, alphas, ranks, out_rank=5, out_alpha=6.0)
    # Assert: exact at out_rank >= sum of ranks; otherwise the error is the dropped singular values
    torch.testing.assert_close(deltas["m"], expected)
    torch.testing.assert_close((6.0 / 3) * full[B] @ full[A], expected)
    err = torch.linalg.matrix_norm(expected - 6.0 * cut[B] @ cut[A]) ** 2
    torch.testing.assert_close(err, (singular[1:] ** 2).sum())
    assert padded[A].shape == (5, 4) and float(padded[A][3:].abs().sum()) == 0.0
    torch.testing.assert_close((6.0 / 5) * padded[B] @ padded[A], expected)


def test_product_average_needs_out_alpha_for_mixed_alphas() -> None:
    # Prepare
    clients = _random_clients([1, 2])
    # Execute / Assert
    with pytest.raises(UserError, match="out_alpha"):
        product_average(clients, [1.0, 1.0], alphas=[2.0, 8.0], ranks=[1, 2], out_rank=2)
    with pytest.raises(UserError, match="rank 2, but ranks\\[1\\] = 3"):
        product_average(clients, [1.0, 1.0], alphas=[2.0, 2.0], ranks=[1, 3], out_rank=2)


def test_alpha_over_rank_round_trip() -> None:
    # Prepare: one client, peft scaling alpha/r = 16/8 = 2
    gen = torch.Generator().manual_seed(1)
    client = {
        A: torch.randn(8, 4, generator=gen, dtype=torch.float64),
        B: torch.randn(3, 8, generator=gen, dtype=torch.float64),
    }
    # Execute
    out, deltas = product_average([client], [1.0], alphas=[16.0], ranks=[8], out_rank=8)
    # Assert: the model sees the same update (16/8) B A before and after
    torch.testing.assert_close(deltas["m"], 2.0 * client[B] @ client[A])
    torch.testing.assert_close(2.0 * out[B] @ out[A], 2.0 * client[B] @ client[A])


def test_stack_lora_hand_example_and_exact_weighted_sum() -> None:
    # Prepare
    clients = _diag_clients()
    hetero, ranks, alphas, weights = (
        _random_clients([1, 2]),
        [1, 2],
        [2.0, 8.0],
        [1.0, 3.0],
    )
    expected = (
        sum(w * lora_delta(c[A], c[B], al, r) for c, w, al, r in zip(hetero, weights, alphas, ranks, strict=True)) / 4.0
    )
    # Execute
    stacked = stack_lora(clients, [3.0, 1.0], alphas=[2.0, 2.0], ranks=[1, 1])
    het = stack_lora(hetero, weights, alphas, ranks)
    het_scaled = stack_lora(hetero, weights, alphas, ranks, out_scale=4.0)
    # Assert: A rows scaled by p_i alpha_i / r_i, B columns concatenated
    assert torch.equal(stacked[A], torch.tensor([[1.5, 0.0], [0.0, 0.5]]))
    assert torch.equal(stacked[B], torch.eye(2))
    assert torch.equal(stacked[HEAD], torch.tensor([2.0, 3.0, 4.0]))
    assert het[A].shape == (3, 4) and het[B].shape == (3, 3)
    torch.testing.assert_close(het[B] @ het[A], expected)
    torch.testing.assert_close(4.0 * het_scaled[B] @ het_scaled[A], expected)


def test_zero_pad_average_pads_then_averages_a_and_b_apart() -> None:
    # Prepare: ranks 1 and 2
    small = _adapter([[1.0, 2.0]], [[1.0], [1.0]], [0.0])
    big = _adapter([[3.0, 4.0], [5.0, 6.0]], [[1.0, 2.0], [3.0, 4.0]], [2.0])
    # Execute
    avg = zero_pad_average([small, big], [1.0, 1.0], ranks=[1, 2], max_rank=2)
    # Assert: small's A gets a zero row, its B a zero column, then the plain means
    assert torch.equal(avg[A], torch.tensor([[2.0, 3.0], [2.5, 3.0]]))
    assert torch.equal(avg[B], torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    assert torch.equal(avg[HEAD], torch.tensor([1.0]))
    with pytest.raises(UserError, match="max_rank 1"):
        zero_pad_average([small, big], [1.0, 1.0], ranks=[1, 2], max_rank=1)
