"""The updates' accountant: the Sampled Gaussian Mechanism against hand-computed values and Opacus."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openpfi.algorithms.privacy import (
    DEFAULT_ORDERS,
    RDP_ROUND_UP,
    epsilon_after,
    gaussian_rdp,
    noise_multiplier_for,
    rdp_to_epsilon,
    round_rdp,
    sampled_gaussian_rdp,
    sampled_local_rdp,
)
from openpfi.errors import UserError


def test_integer_order_is_the_binomial_sum() -> None:
    # Prepare: q = 0.5, z = 1, alpha = 2: A = (1-q)^2 + 2 q (1-q) + q^2 e^{(4-2)/2} = 0.25 + 0.5 + 0.25 e
    # Execute
    rdp = sampled_gaussian_rdp(0.5, 1.0, [2.0])
    # Assert: rdp = log(A) / (alpha - 1)
    assert rdp[0] == pytest.approx(math.log(0.75 + 0.25 * math.e), rel=1e-12)


def test_rate_one_and_zero() -> None:
    assert np.allclose(sampled_gaussian_rdp(1.0, 2.0), gaussian_rdp(2.0))
    assert not sampled_gaussian_rdp(0.0, 2.0).any()
    # sampling never costs more than the Gaussian it samples
    assert np.all(sampled_gaussian_rdp(0.3, 0.7) <= gaussian_rdp(0.7) + 1e-15)


def test_local_rdp_by_hand() -> None:
    # Prepare: q = 0.1, z = 1, alpha = 2: log(0.9 + 0.1 e^{(2-1) * 2 / 2}) / 1
    # Execute
    rdp = sampled_local_rdp(0.1, 1.0, [2.0])
    # Assert
    assert rdp[0] == pytest.approx(math.log(0.9 + 0.1 * math.e), rel=1e-12)
    assert np.allclose(sampled_local_rdp(1.0, 1.5), gaussian_rdp(1.5))
    # the sum's amplification (order q^2) is stronger than the per-client one (order q)
    assert np.all(sampled_gaussian_rdp(0.01, 1.0) < sampled_local_rdp(0.01, 1.0))


def test_round_rdp_rounds_up() -> None:
    assert np.allclose(round_rdp(1.0, 1.0), gaussian_rdp(1.0) * (1 + RDP_ROUND_UP), rtol=1e-15)


@pytest.mark.filterwarnings("ignore:Optimal order is the smallest alpha")
@pytest.mark.parametrize("q", [1.0, 0.1, 0.01])
def test_epsilon_within_one_percent_of_opacus_and_never_below(q: float) -> None:
    # Prepare: Opacus's RDP accountant (its compute_rdp + get_privacy_spent) on the same orders
    rdp_lib = pytest.importorskip("opacus.accountants.analysis.rdp")
    orders = list(DEFAULT_ORDERS)
    worst = 0.0
    for z in (0.6, 1.0, 2.0, 4.0):
        for rounds in (1, 10, 100, 1000):
            # Execute
            ours = rdp_to_epsilon(round_rdp(z, q) * rounds, orders, 1e-5)[0]
            theirs = rdp_lib.get_privacy_spent(
                orders=orders, rdp=rdp_lib.compute_rdp(q=q, noise_multiplier=z, steps=rounds, orders=orders),
                delta=1e-5,
            )[0]
            # Assert
            assert ours >= theirs, (z, q, rounds)
            worst = max(worst, ours / theirs - 1)
    assert worst <= 0.01


def test_target_with_sampling_needs_less_noise() -> None:
    # Execute
    z_all = noise_multiplier_for(2.0, 50, 1e-5, sampling_rate=1.0, local=True)
    z_tenth = noise_multiplier_for(2.0, 50, 1e-5, sampling_rate=0.1)
    # Assert: each meets the target, and sampling a tenth of the clients needs less noise
    assert epsilon_after(z_tenth, 50, 1e-5, sampling_rate=0.1) <= 2.0
    assert epsilon_after(z_all, 50, 1e-5, local=True) <= 2.0
    assert z_tenth < z_all
    with pytest.raises(UserError, match="sampling rate"):
        sampled_gaussian_rdp(1.5, 1.0)
