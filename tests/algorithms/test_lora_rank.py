"""Tests for openpfi.algorithms.lora_rank (key-wise rank slicing and padding)."""

from __future__ import annotations

import pytest
import torch

from openpfi.algorithms.lora_rank import factor_rank, mask_rank, pad_rank, slice_rank
from openpfi.errors import UserError

A, B, OTHER = "m.lora_A.weight", "m.lora_B.weight", "m.merged_delta"


def _state() -> dict[str, torch.Tensor]:
    return {
        A: torch.arange(6.0).reshape(3, 2),  # (r=3, in=2)
        B: torch.arange(12.0).reshape(4, 3),  # (out=4, r=3)
        OTHER: torch.ones(4, 2),
    }


def test_factor_rank() -> None:
    s = _state()
    assert factor_rank(A, s[A]) == 3
    assert factor_rank(B, s[B]) == 3
    assert factor_rank(OTHER, s[OTHER]) is None


def test_slice_keeps_first_rows_of_a_and_columns_of_b() -> None:
    # Execute
    out = slice_rank(_state(), 2)
    # Assert
    assert torch.equal(out[A], torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    assert torch.equal(out[B], torch.tensor([[0.0, 1.0], [3.0, 4.0], [6.0, 7.0], [9.0, 10.0]]))
    assert torch.equal(out[OTHER], torch.ones(4, 2))


def test_slice_works_on_one_factor_only() -> None:
    # FedSA shares only A; FFA only B: lora_pairs would refuse these
    assert slice_rank({A: _state()[A]}, 1)[A].shape == (1, 2)
    assert slice_rank({B: _state()[B]}, 1)[B].shape == (4, 1)


def test_pad_is_the_inverse_of_slice_with_zeros() -> None:
    out = pad_rank(slice_rank(_state(), 1), 3)
    assert torch.equal(out[A], torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
    assert torch.equal(out[B][:, 0], torch.tensor([0.0, 3.0, 6.0, 9.0]))
    assert torch.equal(out[B][:, 1:], torch.zeros(4, 2))


def test_mask_keeps_shapes_and_the_product_of_the_first_components() -> None:
    s = _state()
    out = mask_rank(s, 2)
    assert out[A].shape == s[A].shape and out[B].shape == s[B].shape
    # B_mask A_mask = B[:, :2] A[:2]
    assert torch.equal(out[B] @ out[A], s[B][:, :2] @ s[A][:2])
    assert torch.equal(mask_rank(s, 3)[B], s[B])


def test_bad_ranks_are_refused() -> None:
    with pytest.raises(UserError, match="need 1 <= rank <= 3"):
        slice_rank(_state(), 4)
    with pytest.raises(UserError, match="need 1 <= rank <= 3"):
        slice_rank(_state(), 0)
    with pytest.raises(UserError, match="smaller rank"):
        pad_rank(_state(), 2)
