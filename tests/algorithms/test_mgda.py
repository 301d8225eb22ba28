"""Tests for openpfi.algorithms.mgda."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from openpfi.algorithms.mgda import (
    gram_matrix,
    mgda_weights,
    regularized_simplex_weights,
    simplex_projection,
)
from openpfi.errors import UserError


def _objective(g: np.ndarray, p: np.ndarray, beta: float, lam: np.ndarray) -> float:
    return float(0.5 * lam @ g @ lam + 0.5 * beta * np.sum((lam - p) ** 2))


def _random_gram(seed: int, m: int, d: int = 5) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    return gram_matrix([torch.randn(d, generator=gen) for _ in range(m)])


@pytest.mark.parametrize(
    ("v", "expected"),
    [
        ([0.5, 0.5], [0.5, 0.5]),
        ([2.0, 0.0], [1.0, 0.0]),
        ([1.0, 1.0, 1.0], [1 / 3, 1 / 3, 1 / 3]),
        ([0.5, 0.3, -0.5], [0.6, 0.4, 0.0]),  # theta = -0.1
    ],
)
def test_simplex_projection_hand_cases(v: list[float], expected: list[float]) -> None:
    # Execute
    x = simplex_projection(np.array(v))
    # Assert
    np.testing.assert_allclose(x, expected, atol=1e-12)


@pytest.mark.parametrize(
    ("gram", "expected"),
    [
        ([[1.0, 0.0], [0.0, 1.0]], [0.5, 0.5]),  # orthogonal unit gradients
        ([[4.0, 0.0], [0.0, 1.0]], [0.2, 0.8]),  # g1 = 2 e1, g2 = e2: t = 1/5
        ([[1.0, -1.0], [-1.0, 1.0]], [0.5, 0.5]),  # g1 = -g2: zero-norm combination
        (
            [[1.0, 2.0], [2.0, 5.0]],
            [1.0, 0.0],
        ),  # g1 = e1, g2 = (2, 1): t = 3/2 clipped to 1
        (
            [[1.0, 1.0], [1.0, 1.0]],
            [0.5, 0.5],
        ),  # g1 = g2: every lambda optimal, uniform returned
    ],
)
def test_mgda_two_objectives_hand_cases(gram: list[list[float]], expected: list[float]) -> None:
    # Execute
    lam = mgda_weights(np.array(gram))
    # Assert
    np.testing.assert_allclose(lam, expected, atol=1e-12)


def test_regularized_two_objectives_closed_form() -> None:
    # Prepare: G = I, p = (1, 0), beta = 1: f'(t) = 4t - 3 -> t = 3/4
    gram, p = np.eye(2), np.array([1.0, 0.0])
    # Execute
    lam = regularized_simplex_weights(gram, p, beta=1.0)
    tied = regularized_simplex_weights(np.ones((2, 2)), np.array([0.3, 0.7]), beta=0.0)
    # Assert
    np.testing.assert_allclose(lam, [0.75, 0.25], atol=1e-12)
    np.testing.assert_allclose(tied, [0.3, 0.7], atol=1e-12)  # degenerate: keep the preference


def test_large_beta_returns_preference() -> None:
    # Prepare
    p2, p3 = np.array([0.3, 0.7]), np.array([0.2, 0.3, 0.5])
    # Execute
    lam2 = regularized_simplex_weights(_random_gram(0, 2), p2, beta=1e8)
    lam3 = regularized_simplex_weights(_random_gram(1, 3), p3, beta=1e8)
    # Assert
    np.testing.assert_allclose(lam2, p2, atol=1e-6)
    np.testing.assert_allclose(lam3, p3, atol=1e-6)


def test_three_objectives_hand_cases() -> None:
    # Prepare: orthogonal gradients with squared norms 1, 2, 4 -> lambda_i proportional to 1 / ||g_i||^2
    gram = np.diag([1.0, 2.0, 4.0])
    # Execute
    lam = mgda_weights(gram)
    uniform = mgda_weights(np.eye(3))
    # Assert
    np.testing.assert_allclose(lam, [4 / 7, 2 / 7, 1 / 7], atol=1e-8)
    np.testing.assert_allclose(uniform, [1 / 3, 1 / 3, 1 / 3], atol=1e-8)


@pytest.mark.parametrize(("seed", "beta"), [(2, 0.0), (3, 0.1), (4, 2.0)])
def test_three_objectives_match_scipy_and_grid(seed: int, beta: float) -> None:
    # Prepare
    gram, p = _random_gram(seed, 3), np.array([0.2, 0.3, 0.5])
    reference = minimize(
        lambda x: _objective(gram, p, beta, x),
        p,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * 3,
        constraints=[{"type": "eq", "fun": lambda x: np.sum(x) - 1.0}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    grid = [np.array([i, j, 100 - i - j]) / 100 for i in range(101) for j in range(101 - i)]
    grid_best = min(_objective(gram, p, beta, x) for x in grid)
    # Execute
    lam = regularized_simplex_weights(gram, p, beta)
    # Assert
    assert _objective(gram, p, beta, lam) <= grid_best + 1e-12
    assert _objective(gram, p, beta, lam) <= reference.fun + 1e-10
    if beta > 0:  # strongly convex: unique minimiser
        np.testing.assert_allclose(lam, reference.x, atol=1e-5)


def test_result_on_simplex_and_optimal_kkt() -> None:
    for seed in range(5):
        for m in (2, 3, 5):
            # Prepare
            gram, p, beta = _random_gram(seed, m, d=3), np.full(m, 1.0 / m), 0.05 * seed
            # Execute
            lam = regularized_simplex_weights(gram, p, beta)
            # Assert: on the simplex; KKT: the gradient is minimal and equal on the support
            assert np.all(lam >= 0) and abs(lam.sum() - 1.0) < 1e-12
            grad = gram @ lam + beta * (lam - p)
            support = lam > 1e-9
            assert np.ptp(grad[support]) < 1e-6
            assert np.all(grad >= grad[support].min() - 1e-6)


def test_gram_matrix_exact() -> None:
    # Prepare
    grads = [torch.tensor([1.0, 0.0, 2.0]), torch.tensor([[0.0, 1.0, 1.0]])]
    # Execute
    gram = gram_matrix(grads)
    # Assert
    assert gram.dtype == np.float64
    np.testing.assert_array_equal(gram, [[5.0, 2.0], [2.0, 2.0]])
    with pytest.raises(UserError, match="different sizes"):
        gram_matrix([torch.zeros(3), torch.zeros(2)])


@pytest.mark.parametrize(
    ("preference", "beta", "message"),
    [
        ([0.5, 0.6], 0.0, "sum to 1"),
        ([1.5, -0.5], 0.0, "non-negative"),
        ([0.5, 0.5], -1.0, "beta"),
        ([1.0], 0.0, "one weight per objective"),
    ],
)
def test_validation(preference: list[float], beta: float, message: str) -> None:
    # Execute / Assert
    with pytest.raises(UserError, match=message):
        regularized_simplex_weights(np.eye(2), np.array(preference), beta)
    with pytest.raises(UserError, match="square"):
        mgda_weights(np.ones((2, 3)))


@pytest.mark.parametrize("preference", [[0.5, 0.5], [0.9, 0.1], [0.0, 1.0]])
def test_beta_zero_is_mgda_whatever_the_preference(preference: list[float]) -> None:
    # Prepare: g1 = 2 e1, g2 = e2 -> MGDA t = 1/5; a random non-degenerate 3-objective problem
    gram2 = np.array([[4.0, 0.0], [0.0, 1.0]])
    gram3 = _random_gram(7, 3)
    p3 = np.array([preference[0], 0.0, preference[1]])
    # Execute
    lam2 = regularized_simplex_weights(gram2, np.array(preference), beta=0.0)
    lam3 = regularized_simplex_weights(gram3, p3, beta=0.0)
    # Assert
    np.testing.assert_allclose(lam2, [0.2, 0.8], atol=1e-12)
    assert _objective(gram3, p3, 0.0, lam3) == pytest.approx(_objective(gram3, p3, 0.0, mgda_weights(gram3)), abs=1e-10)


def test_beta_path_moves_monotonically_from_mgda_to_p() -> None:
    # Prepare: G = diag(4, 1), p = (0.9, 0.1): t(beta) = (1 + 1.8 beta) / (5 + 2 beta)
    gram, p = np.array([[4.0, 0.0], [0.0, 1.0]]), np.array([0.9, 0.1])
    betas = [0.0, 0.5, 2.0, 10.0, 1e3, 1e9]
    # Execute
    ts = [regularized_simplex_weights(gram, p, b)[0] for b in betas]
    # Assert
    np.testing.assert_allclose(ts, [(1 + 1.8 * b) / (5 + 2 * b) for b in betas], atol=1e-12)
    assert all(a < b for a, b in zip(ts, ts[1:], strict=False))
    assert ts[-1] == pytest.approx(0.9, abs=1e-8)
