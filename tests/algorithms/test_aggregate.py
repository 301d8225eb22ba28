"""Tests for openpfi.algorithms.aggregate."""

from __future__ import annotations

import pytest
import torch

from openpfi.algorithms.aggregate import (
    coordinate_median,
    krum,
    krum_scores,
    trimmed_mean,
    weighted_mean,
)
from openpfi.errors import UserError


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _state(w: tuple[float, float], b: float, c: float) -> dict[str, torch.Tensor]:
    return {"w": _t(*w), "b": _t(b), "c": torch.tensor([[c]])}


def _scalar_clients(*xs: float) -> list[dict[str, torch.Tensor]]:
    """Clients that differ only in 'w' (the other two parameters are zero)."""
    return [{"w": _t(x), "b": _t(0.0), "c": _t(0.0)} for x in xs]


def test_weighted_mean_two_clients_exact() -> None:
    # Prepare
    s1, s2 = _state((1.0, 2.0), 0.0, 4.0), _state((3.0, 6.0), 3.0, -4.0)
    # Execute
    out = weighted_mean([s1, s2], [1.0, 3.0])
    # Assert: (1*x1 + 3*x2) / 4
    assert torch.equal(out["w"], _t(2.5, 5.0))
    assert torch.equal(out["b"], _t(2.25))
    assert torch.equal(out["c"], torch.tensor([[-2.0]]))
    assert list(out) == ["w", "b", "c"]


def test_weighted_mean_invariants() -> None:
    # Prepare
    s1, s2 = _state((1.0, 2.0), 0.0, 4.0), _state((3.0, 6.0), 3.0, -4.0)
    # Execute
    scaled = weighted_mean([s1, s2], [10.0, 30.0])
    same = weighted_mean([s1, s1], [2.0, 7.0])
    one_sided = weighted_mean([s1, s2], [0.0, 5.0])
    # Assert: weights are scale-free, a mean of equal states is that state, inputs untouched
    assert torch.equal(scaled["w"], _t(2.5, 5.0))
    assert all(torch.equal(same[k], s1[k]) for k in s1)
    assert all(torch.equal(one_sided[k], s2[k]) for k in s2)
    assert torch.equal(s1["w"], _t(1.0, 2.0))


def test_weighted_mean_keeps_dtype_and_rounds_integers() -> None:
    # Prepare
    s1 = {
        "w": torch.tensor([1.0], dtype=torch.float16),
        "b": _t(0.0),
        "n": torch.tensor([1]),
    }
    s2 = {
        "w": torch.tensor([2.0], dtype=torch.float16),
        "b": _t(1.0),
        "n": torch.tensor([6]),
    }
    # Execute
    out = weighted_mean([s1, s2], [1.0, 1.0])
    # Assert: 1.5 stays fp16; (1 + 6) / 2 = 3.5 rounds to 4, not truncated to 3
    assert out["w"].dtype == torch.float16 and float(out["w"]) == 1.5
    assert out["n"].dtype == torch.int64 and int(out["n"]) == 4


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([0.0, 0.0], "total weight must be positive"),
        ([1.0, -1.0], "non-negative"),
        ([1.0], "one weight per state"),
    ],
)
def test_weighted_mean_rejects_bad_weights(weights: list[float], message: str) -> None:
    # Prepare
    states = [_state((1.0, 2.0), 0.0, 4.0), _state((3.0, 6.0), 3.0, -4.0)]
    # Execute / Assert
    with pytest.raises(UserError, match=message):
        weighted_mean(states, weights)


def test_weighted_mean_rejects_mismatched_keys() -> None:
    # Prepare
    s1, s2 = _state((1.0, 2.0), 0.0, 4.0), {"w": _t(1.0, 2.0), "b": _t(0.0)}
    # Execute / Assert
    with pytest.raises(UserError, match="different keys"):
        weighted_mean([s1, s2], [1.0, 1.0])


def test_coordinate_median_odd_and_even() -> None:
    # Prepare
    s1, s2, s3 = (
        _state((1.0, 9.0), 0.0, 4.0),
        _state((10.0, 6.0), 3.0, -4.0),
        _state((2.0, 0.0), 1.0, 100.0),
    )
    # Execute
    med3 = coordinate_median([s1, s2, s3])
    med2 = coordinate_median([s1, s2])
    # Assert: per coordinate, not per client
    assert torch.equal(med3["w"], _t(2.0, 6.0)) and torch.equal(med3["b"], _t(1.0))
    assert torch.equal(med3["c"], torch.tensor([[4.0]]))
    assert torch.equal(med2["w"], _t(5.5, 7.5)) and torch.equal(med2["c"], torch.tensor([[0.0]]))


def test_trimmed_mean_drops_extremes_per_coordinate() -> None:
    # Prepare: five clients, trim 20% -> drop one smallest and one largest
    states = _scalar_clients(0.0, 1.0, 2.0, 6.0, 1000.0)
    states[0]["b"] = _t(-50.0)
    # Execute
    out = trimmed_mean(states, 0.2)
    untrimmed = trimmed_mean(states[:2], 0.0)
    # Assert
    assert torch.equal(out["w"], _t(3.0))
    assert torch.equal(out["b"], _t(0.0))
    assert torch.equal(untrimmed["w"], _t(0.5)) and torch.equal(untrimmed["b"], _t(-25.0))
    with pytest.raises(UserError, match="trim_fraction"):
        trimmed_mean(states, 0.5)


def test_krum_scores_and_selection_exact() -> None:
    # Prepare: n = 5, f = 1 -> each score sums the 2 smallest squared distances
    states = _scalar_clients(0.0, 1.0, 2.0, 3.0, 100.0)
    # Execute
    scores = krum_scores(states, num_byzantine=1)
    chosen = krum(states, num_byzantine=1)
    multi3 = krum(states, num_byzantine=1, multi=3)
    multi4 = krum(states, num_byzantine=1, multi=4)
    # Assert: 97^2 + 98^2 = 19013; ties broken by the lower index
    assert scores == [5.0, 2.0, 2.0, 5.0, 19013.0]
    assert torch.equal(chosen["w"], _t(1.0))
    assert torch.equal(multi3["w"], _t(1.0))  # clients 1, 2, 0
    assert torch.equal(multi4["w"], _t(1.5))  # the outlier is excluded


def test_krum_needs_enough_clients() -> None:
    # Prepare
    states = _scalar_clients(0.0, 1.0, 2.0, 3.0)
    # Execute / Assert
    with pytest.raises(UserError, match="more than 2\\*num_byzantine"):
        krum(states, num_byzantine=1)
    with pytest.raises(UserError, match="multi"):
        krum(states, num_byzantine=0, multi=5)
