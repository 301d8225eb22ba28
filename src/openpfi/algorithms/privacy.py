"""Client-level differential privacy: clipping, Gaussian noise, RDP accounting.

Per round each client update is clipped to L2 norm ``C`` and Gaussian noise of
standard deviation ``z * C`` is added to the sum (DP-FedAvg, McMahan et al.
2018, "Learning Differentially Private Recurrent Language Models"). The
Gaussian mechanism with noise multiplier ``z`` satisfies
``(alpha, alpha / (2 z^2))``-RDP (Mironov 2017, "Rényi Differential
Privacy"); RDP composes additively over steps and converts to ``(eps, delta)``
with the bound of Canonne, Kamath & Steinke 2020 / Balle et al. 2020::

    eps = min_alpha  rdp(alpha) + log1p(-1/alpha) - (log(delta) + log(alpha)) / (alpha - 1)

:func:`epsilon_after` without a sampling rate applies no subsampling amplification (every
round counts as one full Gaussian mechanism, as for the monitor's reports).

Client sampling (:func:`sampled_gaussian_rdp`): each client takes part in a round
independently with probability ``q`` (Poisson sampling) and the server releases the noised
SUM; the round is the Sampled Gaussian Mechanism of Mironov, Talwar & Zhang 2019 ("Rényi
Differential Privacy of the Sampled Gaussian Mechanism"), whose RDP is ``log(A_alpha) /
(alpha - 1)`` with ``A_alpha`` computed exactly for integer orders (a binomial sum) and by
their two-sided series for fractional ones (Sec. 3.3). :func:`sampled_local_rdp` is the
same sampling when each client's noised update is seen on its own (a robust aggregator
needs them): with ``P = N(0, 1)``-shifted presence the divergence is exactly
``log(1 - q + q exp((alpha - 1) alpha / (2 z^2))) / (alpha - 1)``. :func:`round_rdp` rounds
both up by ``RDP_ROUND_UP`` (relative) so floating-point error never under-reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import special

from openpfi.algorithms.state import StateDict, l2_norm
from openpfi.errors import UserError

DEFAULT_ORDERS: tuple[float, ...] = (
    1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 12.0, 16.0, 20.0, 24.0, 32.0, 48.0, 64.0, 128.0, 256.0,
)  # fmt: skip

MAX_NOISE_MULTIPLIER = 1e4
"""Upper bound searched by :func:`noise_multiplier_for`."""

RDP_ROUND_UP = 1e-9
"""Relative margin added to a sampled mechanism's RDP (float rounding, series truncation)."""
_SERIES_STOP = -30.0
"""The fractional-order series stops once both its terms are below exp(-30) (relative to 1)."""


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


def _check_rate(q: float) -> float:
    if not (math.isfinite(q) and 0 <= q <= 1):
        raise UserError(f"sampling rate must be in [0, 1], got {q}")
    return float(q)


def _log_a_int(q: float, z: float, alpha: int) -> float:
    """``log A_alpha = log sum_k C(alpha, k) (1-q)^(alpha-k) q^k exp((k^2 - k) / (2 z^2))`` (integer alpha)."""
    k = np.arange(alpha + 1, dtype=np.float64)
    log_binom = special.gammaln(alpha + 1) - special.gammaln(k + 1) - special.gammaln(alpha - k + 1)
    terms = log_binom + k * math.log(q) + (alpha - k) * math.log1p(-q) + (k * k - k) / (2 * z * z)
    return float(special.logsumexp(terms))


def _log_erfc(x: float) -> float:
    return math.log(2.0) + float(special.log_ndtr(-x * math.sqrt(2.0)))


def _log_a_frac(q: float, z: float, alpha: float) -> float:
    """``log A_alpha`` for fractional alpha: the two integrals split at ``z0 = z^2 log(1/q - 1) + 1/2``,
    each a series over i of signed binomial terms (Mironov, Talwar & Zhang 2019, Sec. 3.3)."""
    z0 = z * z * math.log(1.0 / q - 1.0) + 0.5
    pos0: list[float] = []
    neg0: list[float] = []
    pos1: list[float] = []
    neg1: list[float] = []
    i = 0
    while True:
        coef = float(special.binom(alpha, i))
        log_coef = math.log(abs(coef))
        j = alpha - i
        s0 = log_coef + i * math.log(q) + j * math.log1p(-q) + (i * i - i) / (2 * z * z) + math.log(0.5) + _log_erfc(
            (i - z0) / (math.sqrt(2.0) * z)
        )
        s1 = log_coef + j * math.log(q) + i * math.log1p(-q) + (j * j - j) / (2 * z * z) + math.log(0.5) + _log_erfc(
            (z0 - j) / (math.sqrt(2.0) * z)
        )
        (pos0 if coef > 0 else neg0).append(s0)
        (pos1 if coef > 0 else neg1).append(s1)
        i += 1
        if max(s0, s1) < _SERIES_STOP:
            break
    parts = []
    for pos, neg in ((pos0, neg0), (pos1, neg1)):
        lp = float(special.logsumexp(pos)) if pos else -math.inf
        ln = float(special.logsumexp(neg)) if neg else -math.inf
        if ln >= lp and lp > -math.inf:
            raise UserError(f"RDP series for order {alpha} did not converge (q = {q}, z = {z}); use integer orders")
        parts.append(lp + math.log1p(-math.exp(ln - lp)) if ln > -math.inf else lp)  # log(p - n)
    return float(np.logaddexp(parts[0], parts[1]))


def _sampled(sampling_rate: float, noise_multiplier: float, orders: Sequence[float],
             body: Callable[[float, float, np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Shared ends of the sampled mechanisms: q = 1 is the Gaussian, q = 0 free, never above the Gaussian."""
    q = _check_rate(sampling_rate)
    a = _orders_array(orders)
    base = gaussian_rdp(noise_multiplier, orders)
    if q == 1.0:
        return base
    if q == 0.0:
        return np.zeros_like(a)
    return np.minimum(body(q, noise_multiplier, a, base), base)


def sampled_gaussian_rdp(
    sampling_rate: float, noise_multiplier: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> np.ndarray:
    """RDP of one round of the Sampled Gaussian Mechanism (Poisson rate ``q``, noise multiplier ``z``) on a sum.

    ``q = 1`` is the plain Gaussian ``alpha / (2 z^2)``; ``q = 0`` costs nothing.
    """
    def sgm(q: float, z: float, a: np.ndarray, base: np.ndarray) -> np.ndarray:
        log_a = [_log_a_int(q, z, int(x)) if float(x).is_integer() else _log_a_frac(q, z, float(x)) for x in a]
        return np.asarray(log_a) / (a - 1.0)

    return _sampled(sampling_rate, noise_multiplier, orders, sgm)


def sampled_local_rdp(
    sampling_rate: float, noise_multiplier: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> np.ndarray:
    """RDP of a round in which each Poisson-sampled client releases its own clipped, noised update.

    A client's part of the output is absent with probability ``1 - q`` and ``N(x, z^2 C^2 I)`` otherwise,
    against ``N(0, z^2 C^2 I)`` without its data; the Rényi divergence of the two mixtures (a common
    disjoint part) is ``log(1 - q + q exp((alpha - 1) alpha / (2 z^2))) / (alpha - 1)``, which is
    ``alpha / (2 z^2)`` at ``q = 1``. Weaker than the sum's amplification (order q, not q^2).
    """
    def mixture(q: float, z: float, a: np.ndarray, base: np.ndarray) -> np.ndarray:
        return np.logaddexp(math.log1p(-q), math.log(q) + (a - 1.0) * base) / (a - 1.0)

    return _sampled(sampling_rate, noise_multiplier, orders, mixture)


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


def round_rdp(
    noise_multiplier: float, sampling_rate: float = 1.0, local: bool = False, orders: Sequence[float] = DEFAULT_ORDERS
) -> np.ndarray:
    """RDP of one round: the sum's sampled Gaussian, or with ``local`` each client's update seen alone,
    rounded up by ``RDP_ROUND_UP``."""
    rdp = (sampled_local_rdp if local else sampled_gaussian_rdp)(sampling_rate, noise_multiplier, orders)
    return rdp * (1.0 + RDP_ROUND_UP)


def epsilon_after(
    noise_multiplier: float,
    steps: int,
    delta: float,
    orders: Sequence[float] = DEFAULT_ORDERS,
    sampling_rate: float = 1.0,
    local: bool = False,
) -> float:
    """``eps`` after ``steps`` rounds (RDP composes: ``steps * rdp``).

    By default each round is one plain Gaussian mechanism (the monitor's reports); with
    ``sampling_rate`` < 1 or ``local`` it is :func:`round_rdp` (the updates' accountant).
    """
    if steps < 0:
        raise UserError(f"steps must be >= 0, got {steps}")
    if steps == 0:
        return 0.0
    if sampling_rate == 1.0 and not local:
        rdp = gaussian_rdp(noise_multiplier, orders) * steps
    else:
        rdp = round_rdp(noise_multiplier, sampling_rate, local, orders) * steps
    return rdp_to_epsilon(rdp, orders, delta)[0]


def noise_multiplier_for(
    target_epsilon: float,
    steps: int,
    delta: float,
    orders: Sequence[float] = DEFAULT_ORDERS,
    sampling_rate: float = 1.0,
    local: bool = False,
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

    def eps(z: float) -> float:
        return epsilon_after(z, steps, delta, orders, sampling_rate, local)

    if eps(hi) > target_epsilon:
        raise UserError(
            f"target epsilon {target_epsilon} is unreachable with noise multiplier <= {hi:g} over {steps} steps "
            f"at delta {delta}: raise the target or delta, or use fewer rounds"
        )
    if eps(lo) <= target_epsilon:
        return lo
    while hi / lo > 1.0 + 1e-6:
        mid = math.sqrt(lo * hi)
        if eps(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi
