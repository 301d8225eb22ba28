"""Tests for openpfi.algorithms.mgda."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from openpfi.algorithms.mgda import (
    ENUMERATION_MAX,
    gram_matrix,
    mgda_weights,
    projected_gradient_residual,
    regularized_simplex_weights,
    scaled_beta,
    simplex_projection,
    solve_simplex_qp,
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


def _kkt_enumeration(gram: np.ndarray, p: np.ndarray, beta: float) -> float:
    """Reference optimum: the full KKT system [H_S 1; 1^T 0] on every support S, least squares."""
    m = len(p)
    h, c = gram + beta * np.eye(m), -beta * p
    best = math.inf
    for k in range(1, m + 1):
        for face in itertools.combinations(range(m), k):
            s = list(face)
            kkt = np.block([[h[np.ix_(s, s)], np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
            sol = np.linalg.lstsq(kkt, np.concatenate([-c[s], [1.0]]), rcond=None)[0]
            x = np.zeros(m)
            x[s] = sol[:k]
            if x.min() >= -1e-12:
                x = np.clip(x, 0, None) / np.clip(x, 0, None).sum()
                best = min(best, _objective(gram, p, beta, x))
    return best


@pytest.mark.parametrize("m", [3, 4])
def test_exact_against_kkt_enumeration_on_random_and_ill_conditioned_grams(m: int) -> None:
    # Prepare: 150 problems per M; every third has nearly parallel gradients (condition ~1e8 or worse)
    rng = np.random.default_rng(m)
    worst = 0.0
    for trial in range(150):
        a = rng.normal(size=(m, int(rng.integers(1, 30))))
        if trial % 3 == 0:
            a = a[0] + 10.0 ** -rng.integers(3, 7) * a
        gram, p = a @ a.T, rng.dirichlet(np.ones(m))
        beta = [0.0, 1e-4, 1e-2, 1.0][trial % 4] * np.trace(gram) / m
        # Execute
        sol = solve_simplex_qp(gram, p, beta)
        # Assert
        assert sol.method == "enumeration" and sol.converged
        assert sol.weights.min() >= 0 and abs(sol.weights.sum() - 1) < 1e-12
        optimum = _kkt_enumeration(gram, p, beta)
        worst = max(worst, (sol.objective - optimum) / (abs(optimum) + 1e-4 * np.trace(gram)))
    assert worst <= 1e-10  # relative, or 1e-14 of the Gram's trace where the optimum is 0 (0 in the hull)


def test_vertex_optimum_reached_exactly() -> None:
    # Prepare: g3 = 0.1 e3 is much shorter than g1 = e1, g2 = e2: MGDA's point is the vertex e3
    gram = np.diag([1.0, 1.0, 0.01]) + 0.0
    gram[0, 2] = gram[2, 0] = gram[1, 2] = gram[2, 1] = 0.05  # <g_i, g3> = 0.05 > ||g3||^2 = 0.01
    # Execute
    sol = solve_simplex_qp(gram, np.full(3, 1 / 3), 0.0)
    # Assert: grad at e3 = (0.05, 0.05, 0.01): e3 is optimal (KKT), residual 0
    np.testing.assert_array_equal(sol.weights, [0.0, 0.0, 1.0])
    assert sol.residual == 0.0 and sol.objective == pytest.approx(0.005)


def test_residual_is_zero_only_at_the_optimum() -> None:
    # Prepare: G = I, p uniform, beta 0: optimum uniform. At e1: grad e1, L = 1, P(e1 - e1) = uniform
    gram, p = np.eye(3), np.full(3, 1 / 3)
    # Execute
    at_vertex = projected_gradient_residual(gram, p, 0.0, np.array([1.0, 0.0, 0.0]))
    at_optimum = projected_gradient_residual(gram, p, 0.0, p)
    # Assert
    assert at_vertex == pytest.approx(2 / 3) and at_optimum == pytest.approx(0.0, abs=1e-15)


def test_many_objectives_use_projected_gradient_and_report_the_cap() -> None:
    # Prepare: M above the enumeration limit, nearly parallel gradients
    m = ENUMERATION_MAX + 2
    a = np.random.default_rng(0).normal(size=(m, 6))
    a = a[0] + 1e-3 * a
    gram, p = a @ a.T, np.full(m, 1.0 / m)
    # Execute
    full = solve_simplex_qp(gram, p, 0.0)
    capped = solve_simplex_qp(gram, p, 0.0, max_iterations=3)
    # Assert: converged to the residual tolerance; the capped run says so
    assert full.method == "projected-gradient" and full.converged and full.residual <= 1e-12
    assert capped.iterations == 3 and not capped.converged and capped.objective > full.objective
    assert full.objective <= min(_objective(gram, p, 0.0, np.eye(m)[i]) for i in range(m))


def test_scaled_beta_makes_the_weights_scale_free() -> None:
    # Prepare: G = diag(4, 1), tr / M = 2.5
    gram, p = np.diag([4.0, 1.0]), np.array([0.9, 0.1])
    # Execute
    beta = scaled_beta(gram, 2.0)
    lam = regularized_simplex_weights(gram, p, beta)
    lam_big = regularized_simplex_weights(1e6 * gram, p, scaled_beta(1e6 * gram, 2.0))
    # Assert: beta = 5; t = (1 + 2*5*0.9) / (5 + 2*5) = 10 / 15
    assert beta == pytest.approx(5.0)
    np.testing.assert_allclose(lam, [2 / 3, 1 / 3], atol=1e-12)
    np.testing.assert_allclose(lam_big, lam, atol=1e-12)
    with pytest.raises(UserError, match="beta"):
        scaled_beta(gram, -1.0)
