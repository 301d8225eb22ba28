"""Distributed differential privacy for monitor reports, and the privacy ledger.

A client's monitor report is a fixed-length vector ``v`` of bounded counts and
sums. Before it leaves the client::

    v_clip  = clip_l2(clamp(v, lo, hi), C)          # ||v_clip||_2 <= C
    report  = v_clip + N(0, (z C)^2 / n  I)          # client_noise

so the server-side sum of ``n`` reports is ``sum_i v_clip_i + N(0, (z C)^2 I)``:
one Gaussian mechanism with L2 sensitivity ``C`` under add/remove-one-client
adjacency and noise multiplier ``z`` (distributed DP; Kairouz, Liu & Steinke
2021, "The Distributed Discrete Gaussian Mechanism for Federated Learning with
Secure Aggregation", here with continuous Gaussian shares). No single report
carries the full noise, so the individual reports must only be seen summed
(SecAgg+ on Flower; the in-process engine only ever hands the server the sum).

Slots with their own budget (``ReportSchema.own_budget``, e.g. the within-round degradation
indicator of adaptation misalignment) stay outside the clip: bounded by ``B`` on their own, they
get noise std ``z B / sqrt(f)`` and the clipped slots ``z C / sqrt(1 - f)`` (``split_noise``,
``f = privacy.adaptation_share``). Two Gaussian mechanisms on one report compose in RDP to
``alpha / 2 (C^2 / sigma_C^2 + B^2 / sigma_B^2) = alpha / (2 z^2)``: the round costs what one
mechanism with multiplier ``z`` costs, and the ledger below is unchanged.

Accounting is in ``ledger.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from openpfi.errors import UserError

ArrayLike = float | Sequence[float] | np.ndarray


def check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{name} must be a positive number, got {value}")


def clip_vector(v: ArrayLike, lo: ArrayLike, hi: ArrayLike, l2_max: float,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Clamp each slot to ``[lo, hi]``, then clip the L2 norm to ``l2_max``.

    ``u = clamp(v, lo, hi)``; ``out = u * min(1, l2_max / ||u||_2)`` (the
    clipping of Abadi et al. 2016 / McMahan et al. 2018); with ``mask``, the norm and the
    scaling cover only the slots where it is True (the others are only clamped). A zero vector is
    returned unchanged (no division by a zero norm). NaN slots cannot be
    bounded and raise ``UserError``. When ``0`` lies in every ``[lo, hi]`` the
    L2 step keeps every slot inside its bounds. Returns float64.
    """
    check_positive("l2_max", l2_max)
    x = np.asarray(v, dtype=np.float64)
    if np.isnan(x).any():
        raise UserError("monitor report has NaN values: cannot clip it")
    lo_a = np.broadcast_to(np.asarray(lo, dtype=np.float64), x.shape)
    hi_a = np.broadcast_to(np.asarray(hi, dtype=np.float64), x.shape)
    if np.any(lo_a > hi_a):
        raise UserError("monitor report bounds have lo > hi in some slot")
    u = np.clip(x, lo_a, hi_a)
    inside = np.ones(u.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    norm = float(np.linalg.norm(u[inside]))
    if norm > l2_max:
        u = np.where(inside, u * (l2_max / norm), u)
    return u


def split_noise(noise_multiplier: float, l2_clip: float, own_bound: float, share: float) -> tuple[float, float]:
    """(std on the sum of the clipped slots, std on the sum of the own-budget slots).

    Without own-budget slots (``own_bound`` = 0) the clipped slots take the whole budget: ``z C``.
    Otherwise ``z C / sqrt(1 - share)`` and ``z B / sqrt(share)`` (module docstring).
    """
    if not 0 < share < 1:
        raise UserError(f"privacy.adaptation_share must be in (0, 1), got {share}")
    if own_bound <= 0:
        return noise_multiplier * l2_clip, 0.0
    return noise_multiplier * l2_clip / math.sqrt(1 - share), noise_multiplier * own_bound / math.sqrt(share)


def client_noise(dim: int, noise_std_sum: ArrayLike, n_clients: int, generator: np.random.Generator) -> np.ndarray:
    """One client's noise share: ``N(0, noise_std_sum^2 / n_clients  I_dim)``.

    The sum of ``n_clients`` independent shares is ``N(0, noise_std_sum^2 I)``; a vector
    ``noise_std_sum`` gives each slot its own std.
    ``noise_std_sum = noise_multiplier * l2_max`` (see :func:`noise_std_sum`).
    Drawn from the passed generator only (never the global random state).
    """
    if dim < 0:
        raise UserError(f"report length must be >= 0, got {dim}")
    if n_clients < 1:
        raise UserError(f"n_clients must be >= 1, got {n_clients}")
    std = np.asarray(noise_std_sum, dtype=np.float64)
    if not (np.all(np.isfinite(std)) and np.all(std >= 0)):
        raise UserError(f"noise std must be >= 0, got {noise_std_sum}")
    return generator.normal(0.0, std / math.sqrt(n_clients), size=dim)


def noise_std_sum(noise_multiplier: float, l2_max: float) -> float:
    """Standard deviation of the noise on the summed reports: ``sigma = z * C``."""
    return noise_multiplier * l2_max



def privatize_report(
    v: ArrayLike,
    lo: ArrayLike,
    hi: ArrayLike,
    *,
    l2_max: float,
    noise_std: ArrayLike,
    n_clients: int,
    generator: np.random.Generator,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """A client's report as it leaves the client: ``clip_vector(v, lo, hi, l2_max, mask)`` plus its
    share ``client_noise(..., noise_std, n_clients, generator)`` of the round's noise (``noise_std``:
    the std on the SUM, one value or one per slot, e.g. ``ReportSchema.slot_noise``)."""
    clipped = clip_vector(v, lo, hi, l2_max, mask)
    noise = client_noise(clipped.size, noise_std, n_clients, generator)
    return clipped + noise.reshape(clipped.shape)


def release_allowed(n_clients: int, min_clients: int) -> bool:
    """The ``min_clients`` rule: an aggregate is released only if ``n_clients >= min_clients``."""
    if min_clients < 1:
        raise UserError(f"privacy.min_clients must be >= 1, got {min_clients}")
    return n_clients >= min_clients


def validate_report(
    vec: ArrayLike,
    lo: ArrayLike,
    hi: ArrayLike,
    expected_len: int,
    noise_std_client: ArrayLike,
    k: float = 6.0,
) -> str | None:
    """Why a received client report must be rejected (one line), or ``None``.

    A report is rejected when it has the wrong length, non-finite values, or a
    slot outside ``[lo - k * std, hi + k * std]`` where ``std`` is the client's
    noise share ``noise_std_sum / sqrt(n)``. The exact bounds ``[lo, hi]``
    cannot be enforced on a noised value: Gaussian noise is unbounded, so an
    honest report only lies within ``k`` standard deviations of its bounds
    with probability ``1 - 2 Phi(-k)`` per slot (``k = 6``: about ``2e-9``
    false rejections per slot). The check stops gross corruption and scaled
    or shifted reports, not a careful poisoner that stays inside the band.
    """
    x = np.asarray(vec, dtype=np.float64).reshape(-1)
    if x.size != expected_len:
        return f"report has {x.size} values, expected {expected_len}"
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        return f"report has non-finite values in {bad.size} slot(s), first at slot {int(bad[0])}"
    std = np.maximum(np.asarray(noise_std_client, dtype=np.float64).reshape(-1), 0.0)
    lo_a = np.broadcast_to(np.asarray(lo, dtype=np.float64).reshape(-1), x.shape) - k * std
    hi_a = np.broadcast_to(np.asarray(hi, dtype=np.float64).reshape(-1), x.shape) + k * std
    out = np.flatnonzero((x < lo_a) | (x > hi_a))
    if out.size:
        i = int(out[0])
        return (
            f"report value {x[i]:.6g} at slot {i} is outside [{lo_a[i]:.6g}, {hi_a[i]:.6g}] "
            f"(bounds widened by {k:g} noise std); {out.size} slot(s) out of range"
        )
    return None
