"""Objective weights on the simplex: MGDA and its regularized form (FIRM).

Given per-objective gradients ``g_1..g_M`` with Gram matrix ``G_ij = <g_i, g_j>`` and a
preference ``p`` on the simplex, FIRM solves the simplex QP::

    lambda* = argmin_{lambda in simplex} 1/2 lambda^T G lambda + beta/2 ||lambda - p||^2

and steps along ``sum_m lambda*_m g_m``. ``beta = 0`` is MGDA's min-norm point
(Désidéri 2012, "Multiple-gradient descent algorithm"; Sener & Koltun 2018,
"Multi-Task Learning as Multi-Objective Optimization"), also solved by the server in
FMGDA. A large ``beta`` pulls ``lambda`` to ``p`` (linear scalarization).

**The scale of beta.** ``G`` carries the squared size of the gradients, which changes by
orders of magnitude between models, losses and moments of training, while ``||lambda -
p||^2`` is at most 2. A fixed ``beta`` is therefore negligible for large gradients
(lambda = MGDA's point, whatever p) and dominant for small ones (lambda = p). FIRM uses
``beta = beta_rel * tr(G) / M`` (:func:`scaled_beta`): the regularizer's curvature is
``beta_rel`` times the mean squared gradient norm. The solution is then invariant to a
common rescaling of the gradients (``G -> s G`` scales the whole objective by ``s``), so
``beta_rel`` has one meaning for every model and every step. For M = 2 with orthogonal
gradients, ``d lambda_1 / d p_1 = beta_rel / (1 + beta_rel)``: ``beta_rel = 1`` moves
lambda half as far as p, the default ``alignment.beta = 3`` three quarters as far, while
the min-norm term still leans toward the objective whose gradient is smaller. The trace was chosen over
per-objective normalisation (unit gradients) because it keeps the step along the raw
gradients ``sum_m lambda_m g_m``, the same direction scalarization takes when
lambda = p, so the two methods differ only in the weights.

**Solvers.** M = 1: [1]. M = 2: closed form. 3 <= M <= :data:`ENUMERATION_MAX`: exact
active-set enumeration (every face of the simplex, each an equality-constrained QP
solved in the face's null space; the best feasible candidate wins). Larger M:
accelerated projected gradient (FISTA with restart), stopped on the projected-gradient
residual at lambda, with an iteration cap reported in :class:`SimplexSolution`, then
polished by an exact solve on the support found.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from openpfi.errors import UserError

ENUMERATION_MAX = 8
"""Largest M solved by enumerating the simplex's 2^M - 1 faces (255 small solves)."""
RESIDUAL_TOL = 1e-12
"""Projected-gradient residual (max-norm, in lambda units) below which lambda is optimal."""
MAX_ITERATIONS = 100_000
"""Cap of the projected-gradient solver (M > ENUMERATION_MAX)."""


@dataclass(frozen=True)
class SimplexSolution:
    """A solved simplex QP: the weights and how they were found."""

    weights: np.ndarray
    """lambda, float64 on the simplex."""
    objective: float
    """1/2 lambda^T G lambda + beta/2 ||lambda - p||^2 at ``weights``."""
    residual: float
    """Projected-gradient residual ``||lambda - P(lambda - grad f(lambda) / L)||_inf`` (0 at the optimum)."""
    method: str
    """'closed-form', 'enumeration' or 'projected-gradient'."""
    iterations: int = 0
    """Projected-gradient iterations (0 for the exact methods)."""
    converged: bool = True
    """False when the projected-gradient solver hit its cap (``iterations == max_iterations``) and the
    final residual is above tolerance."""


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
    return 0.5 * (g + g.T), p / p.sum()


def _objective(g: np.ndarray, p: np.ndarray, beta: float, lam: np.ndarray) -> float:
    return float(0.5 * lam @ g @ lam + 0.5 * beta * np.sum((lam - p) ** 2))


def _lipschitz(g: np.ndarray, beta: float) -> float:
    return max(float(np.linalg.eigvalsh(g)[-1]), 0.0) + beta


def projected_gradient_residual(gram: np.ndarray, preference: np.ndarray, beta: float, lam: np.ndarray) -> float:
    """``||lambda - P(lambda - grad f(lambda) / L)||_inf``, ``L = lambda_max(G) + beta``: 0 iff lambda is optimal.

    Its zeros are exactly the KKT points of the convex QP (projection characterisation
    of the optimality condition ``<grad f(lambda), mu - lambda> >= 0`` on the simplex).
    """
    g, p = _check_problem(gram, preference, beta)
    return _residual(g, p, beta, np.asarray(lam, dtype=np.float64), _lipschitz(g, beta))


def _residual(g: np.ndarray, p: np.ndarray, beta: float, lam: np.ndarray, lipschitz: float) -> float:
    if lipschitz <= 1e-300:
        return 0.0  # G = 0 and beta = 0: every lambda is optimal
    grad = g @ lam + beta * (lam - p)
    return float(np.max(np.abs(lam - simplex_projection(lam - grad / lipschitz))))


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


def _face_minimiser(h: np.ndarray, c: np.ndarray, p: np.ndarray, face: Sequence[int]) -> np.ndarray | None:
    """Minimiser of ``1/2 x^T H x + c^T x`` over the affine hull of a face, as a point of the simplex.

    On face S, ``x_S = x0 + Z y`` with ``x0 = p_S / sum p_S`` (uniform if p is 0 on S) and
    ``Z`` an orthonormal basis of ``{z : sum z = 0}``; ``y`` solves the reduced system
    ``(Z^T H_S Z) y = -Z^T (H_S x0 + c_S)`` by eigen-decomposition, directions of
    (numerically) zero curvature left at 0, so ties keep the point closest to ``p``.
    Working in the null space removes the gradients' common component before solving,
    which keeps nearly parallel gradients well conditioned. The point is clipped to the
    face and renormalised (a feasible candidate; exact when the face holds the optimum).
    """
    idx = list(face)
    k = len(idx)
    x = np.zeros(p.size)
    ps = p[idx]
    x0 = ps / ps.sum() if ps.sum() > 0 else np.full(k, 1.0 / k)
    if k > 1:
        z = np.linalg.qr(np.ones((k, 1)), mode="complete")[0][:, 1:]  # (k, k-1), orthonormal, Z^T 1 = 0
        hs = h[np.ix_(idx, idx)]
        w, v = np.linalg.eigh(z.T @ hs @ z)
        cutoff = max(1e-12 * float(w.max(initial=0.0)), 1e-13 * float(np.abs(hs).max(initial=0.0)))
        keep = w > cutoff
        rhs = -z.T @ (hs @ x0 + c[idx])
        y = v[:, keep] @ ((v[:, keep].T @ rhs) / w[keep])
        x0 = x0 + z @ y
    x[idx] = np.maximum(x0, 0.0)
    total = x.sum()
    return x / total if total > 0 else None


def _solve_enumeration(g: np.ndarray, p: np.ndarray, beta: float) -> np.ndarray:
    """Exact: the optimum lies in the relative interior of some face S, where it is the unique
    minimiser over S's affine hull (for the smallest such S); every face is tried.

    Ties (within rounding) prefer the larger face, whose candidate is the optimal point
    closest to ``p`` (e.g. identical gradients with beta = 0 return ``p``).
    """
    m = p.size
    h = g + beta * np.eye(m)
    c = -beta * p
    scale = float(np.abs(h).max(initial=0.0))
    best: tuple[float, int, float] | None = None
    best_x = p.copy()
    for k in range(m, 0, -1):
        for face in itertools.combinations(range(m), k):
            x = _face_minimiser(h, c, p, face)
            if x is None:
                continue
            f = _objective(g, p, beta, x)
            key = (f, -int(np.count_nonzero(x)), float(np.sum((x - p) ** 2)))
            tie = best is not None and abs(f - best[0]) <= 1e-12 * abs(best[0]) + 1e-15 * scale
            if best is None or (f < best[0] and not tie) or (tie and key[1:] < best[1:]):
                best, best_x = key, x
    return best_x


def _solve_projected_gradient(g: np.ndarray, p: np.ndarray, beta: float, max_iterations: int,
                              tol: float) -> tuple[np.ndarray, int, bool]:
    """FISTA (Beck & Teboulle 2009) with function-value restart (O'Donoghue & Candès 2015).

    Step ``1/L``; on a rise of the objective the momentum restarts with a plain projected
    gradient step from the last iterate (which never increases f). Convergence is tested
    on the projected-gradient residual at the iterate itself, never on the step length, so
    momentum carrying the extrapolated point past a vertex cannot stop it early.
    Returns (lambda, iterations, converged).
    """
    lipschitz = _lipschitz(g, beta)
    if lipschitz <= 1e-300:
        return p.copy(), 0, True
    lam, y, t = p.copy(), p.copy(), 1.0
    f_lam = _objective(g, p, beta, lam)
    for it in range(1, max_iterations + 1):
        new = simplex_projection(y - (g @ y + beta * (y - p)) / lipschitz)
        f_new = _objective(g, p, beta, new)
        if f_new > f_lam:  # restart from lam with a monotone step
            t = 1.0
            new = simplex_projection(lam - (g @ lam + beta * (lam - p)) / lipschitz)
            f_new = _objective(g, p, beta, new)
        t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        y = new + ((t - 1.0) / t_next) * (new - lam)
        lam, t, f_lam = new, t_next, f_new
        if _residual(g, p, beta, lam, lipschitz) <= tol:
            return lam, it, True
    return lam, max_iterations, False


def _polish(g: np.ndarray, p: np.ndarray, beta: float, lam: np.ndarray) -> np.ndarray:
    """An exact solve on the support of an iterative answer; kept only if it is no worse."""
    face = [i for i in range(lam.size) if lam[i] > 1e-12]
    x = _face_minimiser(g + beta * np.eye(lam.size), -beta * p, p, face)
    if x is not None and _objective(g, p, beta, x) <= _objective(g, p, beta, lam):
        return x
    return lam


def solve_simplex_qp(gram: np.ndarray, preference: np.ndarray, beta: float,
                     max_iterations: int = MAX_ITERATIONS, tol: float = RESIDUAL_TOL) -> SimplexSolution:
    """``argmin_{lambda in simplex} 1/2 lambda^T G lambda + beta/2 ||lambda - p||^2`` with a report.

    ``preference`` must be on the simplex (non-negative, sum 1 within 1e-6) and
    ``beta >= 0``. ``max_iterations`` and ``tol`` apply to the projected-gradient solver
    (M > ENUMERATION_MAX); ``converged`` is False when it stopped at the cap.
    """
    g, p = _check_problem(gram, preference, beta)
    if max_iterations < 1 or not tol > 0:
        raise UserError(f"need max_iterations >= 1 and tol > 0, got {max_iterations}, {tol}")
    m = g.shape[0]
    iterations, converged = 0, True
    if m == 1:
        lam, method = np.ones(1), "closed-form"
    elif m == 2:
        lam, method = _solve_two(g, p, beta), "closed-form"
    elif m <= ENUMERATION_MAX:
        lam, method = _solve_enumeration(g, p, beta), "enumeration"
    else:
        lam, iterations, converged = _solve_projected_gradient(g, p, beta, max_iterations, tol)
        lam, method = _polish(g, p, beta, lam), "projected-gradient"
    residual = _residual(g, p, beta, lam, _lipschitz(g, beta))
    converged = converged or residual <= tol  # the polish can finish what the capped iterations left
    return SimplexSolution(lam, _objective(g, p, beta, lam), residual, method, iterations, converged)


def regularized_simplex_weights(gram: np.ndarray, preference: np.ndarray, beta: float,
                                max_iterations: int = MAX_ITERATIONS, tol: float = RESIDUAL_TOL) -> np.ndarray:
    """The weights of :func:`solve_simplex_qp` (a float64 vector on the simplex)."""
    return solve_simplex_qp(gram, preference, beta, max_iterations, tol).weights


def scaled_beta(gram: np.ndarray, beta_rel: float) -> float:
    """FIRM's regularization weight on the gradients' scale: ``beta_rel * tr(G) / M`` (module docstring)."""
    g = np.asarray(gram, dtype=np.float64)
    if not (math.isfinite(beta_rel) and beta_rel >= 0):
        raise UserError(f"regularization beta must be >= 0, got {beta_rel}")
    return float(beta_rel * max(float(np.trace(g)), 0.0) / max(g.shape[0], 1))


def mgda_weights(gram: np.ndarray) -> np.ndarray:
    """MGDA min-norm weights: ``argmin_{lambda in simplex} ||sum_m lambda_m g_m||^2``.

    The ``beta = 0`` case of :func:`regularized_simplex_weights`; ties (e.g. identical
    gradients) resolve to the uniform weights.
    """
    m = np.asarray(gram).shape[0] if np.asarray(gram).ndim == 2 else 0
    uniform = np.full(max(m, 1), 1.0 / max(m, 1))
    return regularized_simplex_weights(gram, uniform, 0.0)


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
