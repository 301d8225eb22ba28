"""Objective weights on the simplex: MGDA and its regularized form (FIRM).

Given per-objective gradients ``g_1..g_M`` with Gram matrix
``G_ij = <g_i, g_j>`` and a preference ``p`` on the simplex, FIRM solves::

    lambda* = argmin_{lambda in simplex} 1/2 lambda^T G lambda + beta/2 ||lambda - p||^2

and steps along ``sum_m lambda*_m g_m``. ``beta = 0`` is MGDA's min-norm point
(Désidéri 2012, "Multiple-gradient descent algorithm"; Sener & Koltun 2018,
"Multi-Task Learning as Multi-Objective Optimization"), also solved by the
server in FMGDA. A large ``beta`` pulls ``lambda`` to ``p`` (linear
scalarization).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from openpfi.errors import UserError


def simplex_projection(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto ``{x : x >= 0, sum x = 1}`` (Duchi et al. 2008).

    Sort ``u`` descending, ``rho = max{j : u_j - (sum_{i<=j} u_i - 1) / j > 0}``,
    ``theta = (sum_{i<=rho} u_i - 1) / rho``, ``x = max(v - theta, 0)``.
    """
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)):
        raise UserError(f"simplex projection needs a non-empty finite 1-D vector, got shape {v.shape}")
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    j = np.arange(1, v.size + 1)
    rho = int(np.nonzero(u - css / j > 0)[0][-1]) + 1
    theta = css[rho - 1] / rho
    x: np.ndarray = np.maximum(v - theta, 0.0)
    return x


def _check_problem(gram: np.ndarray, preference: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(gram, dtype=np.float64)
    p = np.asarray(preference, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1] or g.shape[0] == 0:
        raise UserError(f"Gram matrix must be square and non-empty, got shape {g.shape}")
    if not np.all(np.isfinite(g)):
        raise UserError("Gram matrix has non-finite entries (NaN or inf gradients?)")
    if not np.allclose(g, g.T, rtol=1e-6, atol=1e-12 * max(1.0, float(np.abs(g).max()))):
        raise UserError("Gram matrix must be symmetric")
    if p.shape != (g.shape[0],):
        raise UserError(f"preference has shape {p.shape}, expected ({g.shape[0]},): one weight per objective")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or abs(float(p.sum()) - 1.0) > 1e-6:
        raise UserError(f"preference must be non-negative and sum to 1, got {p.tolist()}")
    if not (math.isfinite(beta) and beta >= 0):
        raise UserError(f"regularization beta must be >= 0, got {beta}")
    return 0.5 * (g + g.T), p


def _objective(g: np.ndarray, p: np.ndarray, beta: float, lam: np.ndarray) -> float:
    return float(0.5 * lam @ g @ lam + 0.5 * beta * np.sum((lam - p) ** 2))


def _solve_two(g: np.ndarray, p: np.ndarray, beta: float) -> np.ndarray:
    """Closed form for M = 2 with ``lambda = (t, 1 - t)``.

    ``f(t) = 1/2 [t^2 G11 + 2t(1-t) G12 + (1-t)^2 G22] + beta (t - p1)^2`` has
    curvature ``c = G11 - 2 G12 + G22 + 2 beta = ||g1 - g2||^2 + 2 beta`` and
    minimiser ``t = (G22 - G12 + 2 beta p1) / c``, clipped to [0, 1]. If
    ``c = 0`` (g1 = g2 and beta = 0) every t is optimal: return ``p``.
    """
    c = g[0, 0] - 2.0 * g[0, 1] + g[1, 1] + 2.0 * beta
    if c <= 1e-12 * max(g[0, 0] + g[1, 1] + 2.0 * beta, 0.0) or c <= 0.0:
        return p.copy()
    t = float(np.clip((g[1, 1] - g[0, 1] + 2.0 * beta * p[0]) / c, 0.0, 1.0))
    return np.array([t, 1.0 - t])


def _solve_projected_gradient(g: np.ndarray, p: np.ndarray, beta: float, iters: int, tol: float) -> np.ndarray:
    """Accelerated projected gradient (FISTA, Beck & Teboulle 2009) with restart.

    Gradient ``G lambda + beta (lambda - p)``, step ``1/L`` with
    ``L = lambda_max(G) + beta``; momentum restarts when the objective rises
    (O'Donoghue & Candès 2015). Starts at ``p``; stops when an iterate moves
    less than ``tol`` (max-norm).
    """
    lipschitz = float(np.linalg.eigvalsh(g)[-1]) + beta
    if lipschitz <= 1e-300:
        return p.copy()  # G = 0 and beta = 0: the objective is constant
    lam = p.copy()
    y = lam.copy()
    t = 1.0
    f_old = _objective(g, p, beta, lam)
    for _ in range(iters):
        grad = g @ y + beta * (y - p)
        new = simplex_projection(y - grad / lipschitz)
        f_new = _objective(g, p, beta, new)
        if f_new > f_old and t > 1.0:  # restart momentum from the last iterate
            t, y = 1.0, lam.copy()
            continue
        t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        y = new + ((t - 1.0) / t_next) * (new - lam)
        step = float(np.max(np.abs(new - lam)))
        lam, t, f_old = new, t_next, f_new
        if step < tol:
            break
    return lam


def regularized_simplex_weights(
    gram: np.ndarray,
    preference: np.ndarray,
    beta: float,
    iters: int = 500,
    tol: float = 1e-10,
) -> np.ndarray:
    """``argmin_{lambda in simplex} 1/2 lambda^T G lambda + beta/2 ||lambda - p||^2``.

    FIRM's local weight problem (see the module docstring). M = 1 gives [1];
    M = 2 is solved in closed form (:func:`_solve_two`); M > 2 by accelerated
    projected gradient. ``preference`` must be on the simplex (non-negative,
    sum 1 within 1e-6) and ``beta >= 0``. Returns a float64 vector on the
    simplex.
    """
    g, p = _check_problem(gram, preference, beta)
    if iters < 1 or not tol > 0:
        raise UserError(f"need iters >= 1 and tol > 0, got iters={iters}, tol={tol}")
    p = p / p.sum()
    if g.shape[0] == 1:
        return np.ones(1)
    if g.shape[0] == 2:
        return _solve_two(g, p, beta)
    return _solve_projected_gradient(g, p, beta, iters, tol)


def mgda_weights(gram: np.ndarray, iters: int = 500, tol: float = 1e-10) -> np.ndarray:
    """MGDA min-norm weights: ``argmin_{lambda in simplex} ||sum_m lambda_m g_m||^2``.

    The ``beta = 0`` case of :func:`regularized_simplex_weights`; ties (e.g.
    identical gradients) resolve to the uniform weights.
    """
    m = np.asarray(gram).shape[0] if np.asarray(gram).ndim == 2 else 0
    uniform = np.full(max(m, 1), 1.0 / max(m, 1))
    return regularized_simplex_weights(gram, uniform, 0.0, iters=iters, tol=tol)


def gram_matrix(grads: Sequence[torch.Tensor]) -> np.ndarray:
    """``G_ij = <g_i, g_j>`` in float64 for gradients of any (equal) size."""
    if len(grads) == 0:
        raise UserError("gram_matrix needs at least one gradient")
    flat = [g.detach().to("cpu", torch.float64).reshape(-1) for g in grads]
    if len({f.numel() for f in flat}) != 1:
        raise UserError(
            f"gradients have different sizes {[f.numel() for f in flat]}: one per objective, same parameters"
        )
    x = torch.stack(flat)  # (M, d)
    return (x @ x.T).numpy()
