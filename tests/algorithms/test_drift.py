"""Drift and Pareto maths: exact hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from openpfi.algorithms.drift import (
    cosine_dispersion,
    disagreement_share,
    dominates,
    hypervolume,
    hypervolume_2d,
    lambda_spread,
    pareto_front,
)


def _s(*xs: float) -> dict[str, torch.Tensor]:
    return {"a": torch.tensor(xs[:2]), "b": torch.tensor(xs[2:])}


def test_cosine_dispersion_hand_cases() -> None:
    # Prepare: identical, orthogonal, opposed updates (3 parameters split over two tensors)
    same = [_s(1.0, 2.0, 3.0), _s(2.0, 4.0, 6.0)]
    ortho = [_s(1.0, 0.0, 0.0), _s(0.0, 1.0, 0.0)]
    opposed = [_s(1.0, 0.0, 0.0), _s(-1.0, 0.0, 0.0)]
    three = [_s(1.0, 0.0, 0.0), _s(0.0, 1.0, 0.0), _s(1.0, 1.0, 0.0)]
    # Execute / Assert: three -> cosines 0, 1/sqrt2, 1/sqrt2
    assert cosine_dispersion(same) == pytest.approx(0.0, abs=1e-12)
    assert cosine_dispersion(ortho) == pytest.approx(1.0)
    assert cosine_dispersion(opposed) == pytest.approx(2.0)
    assert cosine_dispersion(three) == pytest.approx(1 - (2 / math.sqrt(2)) / 3)
    assert math.isnan(cosine_dispersion([_s(1.0, 0.0, 0.0)]))
    assert math.isnan(cosine_dispersion([_s(1.0, 0.0, 0.0), _s(0.0, 0.0, 0.0)]))  # zero update skipped


def test_disagreement_share_hand_cases() -> None:
    # (1,0,0) and (0,1,0): mean (.5,.5,0); deviations .5 each -> .5 / 1
    assert disagreement_share([_s(1.0, 0.0, 0.0), _s(0.0, 1.0, 0.0)]) == pytest.approx(0.5)
    assert disagreement_share([_s(1.0, 2.0, 3.0), _s(1.0, 2.0, 3.0)]) == pytest.approx(0.0)
    assert disagreement_share([_s(1.0, 0.0, 0.0), _s(-1.0, 0.0, 0.0)]) == pytest.approx(1.0)
    # (2,0,0),(0,0,0): mean (1,0,0); dev^2 = 1,1 -> 1; energy (4+0)/2 = 2 -> 0.5
    assert disagreement_share([_s(2.0, 0.0, 0.0), _s(0.0, 0.0, 0.0)]) == pytest.approx(0.5)
    assert math.isnan(disagreement_share([_s(0.0, 0.0, 0.0), _s(0.0, 0.0, 0.0)]))


def test_lambda_spread() -> None:
    # objective 0: (0.2, 0.6) std 0.2; objective 1: (0.8, 0.4) std 0.2
    assert lambda_spread([[0.2, 0.8], [0.6, 0.4]]) == pytest.approx(0.2)
    assert lambda_spread([[0.5, 0.5], [0.5, 0.5]]) == 0.0
    assert math.isnan(lambda_spread([]))


def test_pareto_front_and_hypervolume() -> None:
    # Prepare
    pts = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0), (1.5, 1.5), (2.0, 2.0), (0.5, 0.5)]
    # Execute
    front = pareto_front(pts)
    hv = hypervolume_2d([pts[i] for i in front], (0.0, 0.0))
    # Assert: rectangles 3x1 + 2x1 + 1x1 = 6; the duplicate and dominated points are dropped
    assert front == [0, 1, 2]
    assert hv == pytest.approx(6.0)
    assert hypervolume_2d(pts, (0.0, 0.0)) == pytest.approx(6.0)  # dominated points add nothing
    assert hypervolume_2d([(1.0, 3.0)], (1.0, 0.0)) == 0.0  # not above the reference
    assert hypervolume_2d([(2.0, 3.0)], (1.0, 1.0)) == pytest.approx(2.0)


def test_hypervolume_any_dimension_hand_cases() -> None:
    # Prepare: 2-D staircase (0.6, 0.8), (0.8, 0.6) above (0.5, 0.5): 0.3*0.1 + 0.1*0.2 = 0.05
    two = [(0.6, 0.8), (0.8, 0.6), (0.55, 0.55)]  # the last one is dominated
    # 3-D: boxes [0,1]x[0,1]x[0,2] and [0,2]x[0,1]x[0,1] overlap in [0,1]^3: 2 + 2 - 1 = 3
    three = [(1.0, 1.0, 2.0), (2.0, 1.0, 1.0)]
    # Execute / Assert
    assert hypervolume(two, (0.5, 0.5)) == pytest.approx(0.05)
    assert hypervolume(two, (0.5, 0.5)) == pytest.approx(hypervolume_2d(two, (0.5, 0.5)))
    assert hypervolume(three, (0.0, 0.0, 0.0)) == pytest.approx(3.0)
    assert hypervolume([(0.4, 0.9, 1.0)], (0.5, 0.5, 0.5)) == 0.0  # not above the reference
    assert dominates((1, 2), (1, 1)) and not dominates((1, 1), (1, 1)) and not dominates((2, 0), (1, 1))
