"""Tests for openpfi.algorithms.proximal."""

from __future__ import annotations

import pytest
import torch

from openpfi.algorithms.proximal import proximal_term
from openpfi.errors import UserError


def _params() -> dict[str, torch.Tensor]:
    return {
        "w": torch.tensor([1.0, 2.0], requires_grad=True),
        "b": torch.tensor([0.0], requires_grad=True),
        "c": torch.tensor([[3.0]], requires_grad=True),
    }


def _anchor() -> dict[str, torch.Tensor]:
    return {
        "w": torch.tensor([0.0, 0.0], requires_grad=True),
        "b": torch.tensor([1.0], requires_grad=True),
        "c": torch.tensor([[1.0]], requires_grad=True),
    }


def test_value_uses_squared_norm() -> None:
    # Prepare: ||w - a||^2 = 1 + 4 + 1 + 4 = 10
    params, anchor = _params(), _anchor()
    # Execute
    value = proximal_term(params, anchor, mu=0.5)
    # Assert: mu/2 * 10; an unsquared norm would give 0.25 * (sqrt(5) + 1 + 2)
    assert value.dim() == 0
    assert value.item() == pytest.approx(2.5, abs=1e-6)


def test_gradient_is_mu_times_difference_and_anchor_detached() -> None:
    # Prepare
    params, anchor = _params(), _anchor()
    # Execute
    proximal_term(params, anchor, mu=0.5).backward()
    # Assert: d/dw = mu (w - a)
    assert torch.equal(params["w"].grad, torch.tensor([0.5, 1.0]))
    assert torch.equal(params["b"].grad, torch.tensor([-0.5]))
    assert torch.equal(params["c"].grad, torch.tensor([[1.0]]))
    assert all(a.grad is None for a in anchor.values())


def test_zero_at_anchor_and_zero_mu() -> None:
    # Prepare
    params = _params()
    # Execute
    at_anchor = proximal_term(params, {k: t.detach().clone() for k, t in params.items()}, mu=3.0)
    no_mu = proximal_term(params, _anchor(), mu=0.0)
    # Assert
    assert at_anchor.item() == 0.0 and no_mu.item() == 0.0


def test_anchor_extra_keys_ignored_missing_key_rejected() -> None:
    # Prepare
    params, anchor = _params(), _anchor()
    anchor["frozen"] = torch.ones(4)
    partial = {"w": anchor["w"], "b": anchor["b"]}
    # Execute / Assert
    assert proximal_term(params, anchor, mu=0.5).item() == pytest.approx(2.5, abs=1e-6)
    with pytest.raises(UserError, match="'c'"):
        proximal_term(params, partial, mu=0.5)
    with pytest.raises(UserError, match="non-negative"):
        proximal_term(params, anchor, mu=-1.0)
    with pytest.raises(UserError, match="shape"):
        proximal_term(params, {**anchor, "w": torch.zeros(3)}, mu=0.5)
