"""Client-level differential privacy: clipping, Gaussian noise, RDP accounting.

Per round each client update is clipped to L2 norm ``C`` and Gaussian noise of
standard deviation ``z * C`` is added to the sum (DP-FedAvg, McMahan et al.
2018, "Learning Differentially Private Recurrent Language Models"). The
Gaussian mechanism with noise multiplier ``z`` satisfies
``(alpha, alpha / (2 z^2))``-RDP (Mironov 2017, "Rényi Differential
Privacy"); RDP composes additively over steps and converts to ``(eps, delta)``
with the bound of Canonne, Kamath & Steinke 2020 / Balle et al. 2020::

    eps = min_alpha  rdp(alpha) + log1p(-1/alpha) - (log(delta) + log(alpha)) / (alpha - 1)

No subsampling amplification is applied (every selected client is counted
as always participating), which is conservative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from openpfi.algorithms.state import StateDict, l2_norm
from openpfi.errors import UserError

DEFAULT_ORDERS: tuple[float, ...] = (
    1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 12.0, 16.0, 20.0, 24.0, 32.0, 48.0, 64.0, 128.0, 256.0,
)  # fmt: skip

MAX_NOISE_MULTIPLIER = 1e4
"""Upper bound searched by :func:`noise_multiplier_for`."""


def clip_l2(state: StateDict, max_norm: float) -> tuple[StateDict, float]:
    """``x * min(1, C / ||x||)`` with the global L2 norm; returns ``(clipped, ||x||)``.

    A zero update is returned unchanged (no division by a zero norm).
    """
    if not (math.isfinite(max_norm) and max_norm > 0):
        raise UserError(f"clipping norm must be positive, got {max_norm}")
    norm = l2_norm(state)
    if not math.isfinite(norm):
        raise UserError("update has a non-finite L2 norm (NaN or inf values): cannot clip")
    factor = 1.0 if norm <= max_norm else max_norm / norm
    return {k: (t.detach().double() * factor).to(t.dtype) for k, t in state.items()}, norm


def add_gaussian_noise(state: StateDict, std: float, generator: torch.Generator) -> StateDict:
    """``x + N(0, std^2 I)``, noise drawn from ``generator`` in sorted key order.

    Noise is drawn in float32 on the generator's device (so the same seed gives
    the same noise whatever the dict order), added, and cast back.
    """
    if not (math.isfinite(std) and std >= 0):
        raise UserError(f"noise std must be >= 0, got {std}")
    out: StateDict = {}
    for k in sorted(state):
        t = state[k]
        if not t.is_floating_point():
            raise UserError(f"cannot add Gaussian noise to non-float tensor '{k}' ({t.dtype})")
        noise = torch.randn(t.shape, generator=generator, dtype=torch.float32, device=generator.device)
        out[k] = (t.detach().float() + std * noise.to(t.device)).to(t.dtype)
    return {k: out[k] for k in state}


def _orders_array(orders: Sequence[float]) -> np.ndarray:
    a = np.asarray(orders, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or np.any(~np.isfinite(a)) or np.any(a <= 1):
        raise UserError(f"RDP orders must be a non-empty list of finite numbers > 1, got {list(orders)}")
    return a


def gaussian_rdp(noise_multiplier: float, orders: Sequence[float] = DEFAULT_ORDERS) -> np.ndarray:
    """RDP of one Gaussian mechanism: ``rdp(alpha) = alpha / (2 z^2)`` (Mironov 2017)."""
    z = noise_multiplier
    if not (math.isfinite(z) and z > 0):
        raise UserError(f"noise multiplier must be positive, got {z}")
    return _orders_array(orders) / (2.0 * z * z)


def rdp_to_epsilon(rdp: np.ndarray, orders: Sequence[float], delta: float) -> tuple[float, float]:
    """Convert RDP to ``(eps, best_order)`` for the given ``delta``.

    ``eps = min_alpha rdp(alpha) + log1p(-1/alpha) - (log(delta) + log(alpha)) / (alpha - 1)``
    (Canonne, Kamath & Steinke 2020, Prop. 12; Balle et al. 2020, Thm. 21),
    floored at 0.
    """
    a = _orders_array(orders)
    r = np.asarray(rdp, dtype=np.float64)
    if r.shape != a.shape:
        raise UserError(f"got {r.size} RDP values for {a.size} orders")
    if not 0 < delta < 1:
        raise UserError(f"delta must be in (0, 1), got {delta}")
    eps = r + np.log1p(-1.0 / a) - (math.log(delta) + np.log(a)) / (a - 1.0)
    eps = np.where(np.isnan(eps), np.inf, eps)
    best = int(np.argmin(eps))
    return max(0.0, float(eps[best])), float(a[best])


def epsilon_after(
    noise_multiplier: float,
    steps: int,
    delta: float,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> float:
    """``eps`` after ``steps`` Gaussian mechanisms (RDP composes: ``steps * rdp``)."""
    if steps < 0:
        raise UserError(f"steps must be >= 0, got {steps}")
    rdp = gaussian_rdp(noise_multiplier, orders) * steps
    return 0.0 if steps == 0 else rdp_to_epsilon(rdp, orders, delta)[0]


def noise_multiplier_for(
    target_epsilon: float,
    steps: int,
    delta: float,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> float:
    """Smallest noise multiplier ``z`` (to 1e-6 relative) with ``epsilon_after(z) <= target``.

    Bisection on ``log z`` in ``[1e-3, 1e4]``; ``UserError`` if even
    ``z = 1e4`` does not reach the target.
    """
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise UserError(f"target epsilon must be positive, got {target_epsilon}")
    if steps < 1:
        raise UserError(f"steps must be >= 1, got {steps}")
    lo, hi = 1e-3, MAX_NOISE_MULTIPLIER
    if epsilon_after(hi, steps, delta, orders) > target_epsilon:
        raise UserError(
            f"target epsilon {target_epsilon} is unreachable with noise multiplier <= {hi:g} over {steps} steps "
            f"at delta {delta}: raise the target or delta, or use fewer rounds"
        )
    if epsilon_after(lo, steps, delta, orders) <= target_epsilon:
        return lo
    while hi / lo > 1.0 + 1e-6:
        mid = math.sqrt(lo * hi)
        if epsilon_after(mid, steps, delta, orders) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi
