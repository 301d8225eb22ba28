"""Tests for openpfi.algorithms.state."""

from __future__ import annotations

import pytest
import torch

from openpfi.algorithms.state import (
    add,
    check_same_keys,
    clone,
    dot,
    flatten,
    l2_norm,
    nbytes,
    scale,
    sub,
    zeros_like,
)
from openpfi.errors import UserError


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _client_1() -> dict[str, torch.Tensor]:
    return {"w": _t(3.0, 0.0), "b": _t(4.0), "c": torch.tensor([[0.0, -1.0]])}


def _client_2() -> dict[str, torch.Tensor]:
    return {"w": _t(1.0, 2.0), "b": _t(-1.0), "c": torch.tensor([[2.0, 5.0]])}


def test_add_sub_scale_exact() -> None:
    # Prepare
    a, b = _client_1(), _client_2()
    # Execute
    s, d, m = add(a, b), sub(a, b), scale(a, 0.5)
    # Assert
    assert torch.equal(s["w"], _t(4.0, 2.0)) and torch.equal(s["b"], _t(3.0))
    assert torch.equal(s["c"], torch.tensor([[2.0, 4.0]]))
    assert torch.equal(d["w"], _t(2.0, -2.0)) and torch.equal(d["b"], _t(5.0))
    assert torch.equal(d["c"], torch.tensor([[-2.0, -6.0]]))
    assert torch.equal(m["w"], _t(1.5, 0.0)) and torch.equal(m["b"], _t(2.0))
    assert torch.equal(m["c"], torch.tensor([[0.0, -0.5]]))


def test_sub_then_add_is_identity_and_inputs_untouched() -> None:
    # Prepare
    a, b = _client_1(), _client_2()
    # Execute
    back = add(b, sub(a, b))
    # Assert
    for k in a:
        assert torch.equal(back[k], a[k])
    assert torch.equal(a["w"], _t(3.0, 0.0)) and torch.equal(b["w"], _t(1.0, 2.0))


def test_norm_and_dot_exact() -> None:
    # Prepare
    a, b = _client_1(), _client_2()
    # Execute
    norm_a, inner = l2_norm(a), dot(a, b)
    # Assert: ||a||^2 = 9 + 16 + 1; <a, b> = 3 + 0 - 4 + 0 - 5
    assert norm_a == pytest.approx(26**0.5, abs=1e-12)
    assert inner == pytest.approx(-6.0, abs=1e-12)
    assert dot(a, a) == pytest.approx(norm_a**2, abs=1e-12)


def test_flatten_uses_sorted_keys() -> None:
    # Prepare
    a = _client_1()  # inserted as w, b, c
    # Execute
    flat = flatten(a)
    # Assert: b, c, w
    assert torch.equal(flat, _t(4.0, 0.0, -1.0, 3.0, 0.0))
    assert flatten({}).numel() == 0


def test_nbytes_counts_each_dtype() -> None:
    # Prepare
    a = {
        "w": torch.zeros(2),
        "b": torch.zeros(1, dtype=torch.float64),
        "c": torch.zeros(3, dtype=torch.float16),
    }
    # Execute
    n = nbytes(a)
    # Assert: 2*4 + 1*8 + 3*2
    assert n == 22


def test_clone_and_zeros_like_are_independent() -> None:
    # Prepare
    a = _client_1()
    a["b"] = a["b"].to(torch.float16)
    # Execute
    c, z = clone(a), zeros_like(a)
    c["w"][0] = 99.0
    # Assert
    assert a["w"][0] == 3.0
    assert z["b"].dtype == torch.float16 and z["c"].shape == (1, 2)
    assert all(float(t.abs().sum()) == 0.0 for t in z.values())


def test_check_same_keys_returns_keys_and_rejects_mismatch() -> None:
    # Prepare
    a, b = _client_1(), _client_2()
    missing = {"w": _t(1.0, 2.0), "b": _t(1.0)}
    bad_shape = {**b, "w": _t(1.0, 2.0, 3.0)}
    # Execute / Assert
    assert check_same_keys([a, b]) == ["w", "b", "c"]
    with pytest.raises(UserError, match="missing \\['c'\\]"):
        check_same_keys([a, missing])
    with pytest.raises(UserError, match="shape mismatch for 'w'"):
        add(a, bad_shape)
    assert check_same_keys([a, bad_shape], shapes=False) == ["w", "b", "c"]
    with pytest.raises(UserError, match="at least one"):
        check_same_keys([])
