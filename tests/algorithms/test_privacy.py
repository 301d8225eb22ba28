"""Tests for openpfi.algorithms.privacy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import norm

from openpfi.algorithms.privacy import (
    DEFAULT_ORDERS,
    add_gaussian_noise,
    clip_l2,
    epsilon_after,
    gaussian_rdp,
    noise_multiplier_for,
    rdp_to_epsilon,
)
from openpfi.errors import UserError


def _update() -> dict[str, torch.Tensor]:
    """Global L2 norm 5."""
    return {
        "w": torch.tensor([3.0, 0.0]),
        "b": torch.tensor([4.0]),
        "c": torch.tensor([[0.0]]),
    }


def _exact_gaussian_epsilon(z: float, steps: int, delta: float) -> float:
    """Exact eps of ``steps`` Gaussian mechanisms (Balle & Wang 2018): one Gaussian with mu = sqrt(steps) / z."""
    mu = math.sqrt(steps) / z

    def excess(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return float(brentq(excess, 0.0, 500.0))


def test_clip_scales_down_to_max_norm() -> None:
    # Prepare
    update = _update()
    # Execute
    clipped, norm_before = clip_l2(update, max_norm=1.0)
    # Assert: factor 1/5
    assert norm_before == 5.0
    torch.testing.assert_close(clipped["w"], torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(clipped["b"], torch.tensor([0.8]))
    assert float(clipped["c"]) == 0.0
    assert torch.equal(update["b"], torch.tensor([4.0]))


def test_clip_leaves_small_and_zero_updates_unchanged() -> None:
    # Prepare
    update, zero = _update(), {k: torch.zeros_like(t) for k, t in _update().items()}
    # Execute
    same, n1 = clip_l2(update, max_norm=10.0)
    zero_out, n0 = clip_l2(zero, max_norm=1.0)
    # Assert
    assert n1 == 5.0 and all(torch.equal(same[k], update[k]) for k in update)
    assert n0 == 0.0 and all(float(t.abs().sum()) == 0.0 for t in zero_out.values())
    with pytest.raises(UserError, match="clipping norm"):
        clip_l2(update, max_norm=0.0)


def test_noise_comes_from_the_generator_in_sorted_key_order() -> None:
    # Prepare
    update = _update()
    reordered = {k: update[k] for k in ("c", "w", "b")}
    gen = torch.Generator().manual_seed(7)
    expected_noise = {k: torch.randn(update[k].shape, generator=gen) for k in ("b", "c", "w")}
    # Execute
    noisy = add_gaussian_noise(update, 0.5, torch.Generator().manual_seed(7))
    noisy_reordered = add_gaussian_noise(reordered, 0.5, torch.Generator().manual_seed(7))
    # Assert
    for k in update:
        torch.testing.assert_close(noisy[k], update[k] + 0.5 * expected_noise[k])
        assert torch.equal(noisy_reordered[k], noisy[k])
    assert list(noisy) == ["w", "b", "c"]
    assert torch.equal(update["w"], torch.tensor([3.0, 0.0]))


def test_noise_std_and_zero_std() -> None:
    # Prepare
    big = {"w": torch.zeros(20000)}
    # Execute
    noisy = add_gaussian_noise(big, 2.0, torch.Generator().manual_seed(0))
    silent = add_gaussian_noise(_update(), 0.0, torch.Generator().manual_seed(0))
    # Assert
    assert float(noisy["w"].std()) == pytest.approx(2.0, rel=0.03)
    assert all(torch.equal(silent[k], _update()[k]) for k in silent)
    with pytest.raises(UserError, match="non-float"):
        add_gaussian_noise({"n": torch.tensor([1])}, 1.0, torch.Generator())


def test_gaussian_rdp_closed_form() -> None:
    # Execute
    rdp = gaussian_rdp(2.0, [2.0, 4.0, 10.0])
    # Assert: alpha / (2 z^2) = alpha / 8
    np.testing.assert_allclose(rdp, [0.25, 0.5, 1.25], atol=1e-15)


def test_epsilon_single_order_by_hand() -> None:
    # Prepare: z = 1, alpha = 2: rdp = 1; eps = 1 + log(1/2) - (log(1e-5) + log 2) / 1
    expected = 1.0 - 2.0 * math.log(2.0) + 5.0 * math.log(10.0)  # 11.1266...
    # Execute
    eps, order = rdp_to_epsilon(np.array([1.0]), [2.0], 1e-5)
    # Assert
    assert eps == pytest.approx(expected, abs=1e-12) and order == 2.0
    assert epsilon_after(1.0, 1, 1e-5, orders=[2.0]) == pytest.approx(11.126631103850338, abs=1e-9)


def test_epsilon_takes_the_best_order() -> None:
    # Prepare
    rdp = gaussian_rdp(1.0, DEFAULT_ORDERS)
    # Execute
    eps, order = rdp_to_epsilon(rdp, DEFAULT_ORDERS, 1e-5)
    # Assert: z = 1, delta = 1e-5 is best at alpha = 5 among the defaults
    per_order = [epsilon_after(1.0, 1, 1e-5, orders=[a]) for a in DEFAULT_ORDERS]
    assert eps == pytest.approx(min(per_order), abs=1e-12) and order == 5.0


@pytest.mark.parametrize(("z", "steps", "delta"), [(1.0, 1, 1e-5), (2.0, 10, 1e-5), (10.0, 3, 1e-6)])
def test_epsilon_is_a_valid_and_tight_bound(z: float, steps: int, delta: float) -> None:
    # Prepare
    exact = _exact_gaussian_epsilon(z, steps, delta)
    # Execute
    eps = epsilon_after(z, steps, delta)
    # Assert: RDP accounting over-estimates the exact epsilon, by less than 15%
    assert exact <= eps <= 1.15 * exact


def test_epsilon_monotone_and_composes() -> None:
    # Execute / Assert
    assert epsilon_after(1.0, 10, 1e-5) > epsilon_after(2.0, 10, 1e-5) > epsilon_after(4.0, 10, 1e-5)
    assert epsilon_after(2.0, 1, 1e-5) < epsilon_after(2.0, 10, 1e-5) < epsilon_after(2.0, 100, 1e-5)
    assert epsilon_after(2.0, 10, 1e-3) < epsilon_after(2.0, 10, 1e-6)
    # 4 steps at z equal 1 step at z / 2 (RDP adds: 4 alpha / (2 z^2) = alpha / (2 (z/2)^2))
    assert epsilon_after(3.0, 4, 1e-5) == pytest.approx(epsilon_after(1.5, 1, 1e-5), abs=1e-12)
    assert epsilon_after(3.0, 0, 1e-5) == 0.0


def test_noise_multiplier_for_is_the_smallest_reaching_the_target() -> None:
    # Execute
    z = noise_multiplier_for(1.0, steps=10, delta=1e-5)
    # Assert
    assert epsilon_after(z, 10, 1e-5) <= 1.0
    assert epsilon_after(z * (1 - 1e-5), 10, 1e-5) > 1.0
    assert 10.0 < z < 20.0


def test_noise_multiplier_for_unreachable_target_names_it() -> None:
    # Execute / Assert: with orders <= 256 eps cannot drop below ~0.02 at delta 1e-5
    with pytest.raises(UserError, match="target epsilon 0.001 is unreachable"):
        noise_multiplier_for(0.001, steps=1, delta=1e-5)
    with pytest.raises(UserError, match="delta"):
        epsilon_after(1.0, 1, 0.0)
