from __future__ import annotations

import json
import math

import numpy as np
import pytest

from openpfi.algorithms.privacy import epsilon_after
from openpfi.errors import UserError
from openpfi.monitor.privacy.ledger import PrivacyLedger, plan_budget
from openpfi.monitor.privacy.mechanism import (
    client_noise,
    clip_vector,
    noise_std_sum,
    privatize_report,
    release_allowed,
    validate_report,
)


def test_clip_vector_clamps_then_clips_l2() -> None:
    # Prepare: clamp [3, -1, 4] to [0, 2] -> [2, 0, 2], norm sqrt(8); clip to 2
    # Execute
    out = clip_vector([3.0, -1.0, 4.0], 0.0, [2.0, 2.0, 2.0], l2_max=2.0)
    # Assert
    np.testing.assert_allclose(out, [math.sqrt(2), 0.0, math.sqrt(2)], rtol=1e-12)
    assert np.linalg.norm(out) == pytest.approx(2.0)


def test_clip_vector_leaves_small_and_zero_vectors_unchanged() -> None:
    np.testing.assert_array_equal(clip_vector([0.5, 0.25], 0.0, 1.0, 10.0), [0.5, 0.25])
    np.testing.assert_array_equal(clip_vector([0.0, 0.0], 0.0, 1.0, 1.0), [0.0, 0.0])  # no division by 0


def test_clip_vector_rejects_nan_and_bad_bounds() -> None:
    with pytest.raises(UserError, match="NaN"):
        clip_vector([np.nan, 1.0], 0.0, 1.0, 1.0)
    with pytest.raises(UserError, match="lo > hi"):
        clip_vector([0.0], 1.0, 0.0, 1.0)
    with pytest.raises(UserError, match="l2_max"):
        clip_vector([0.0], 0.0, 1.0, 0.0)


def test_client_noise_shares_sum_to_the_configured_sigma() -> None:
    # Prepare: sigma = z * C = 1.5 * 2 = 3; four clients
    sigma = noise_std_sum(1.5, 2.0)
    gens = [np.random.default_rng(s) for s in range(4)]
    # Execute
    shares = np.stack([client_noise(50_000, sigma, 4, g) for g in gens])
    # Assert: each share has std sigma / 2, the sum has std sigma
    assert sigma == 3.0
    assert shares[0].std() == pytest.approx(1.5, rel=0.02)
    assert shares.sum(axis=0).std() == pytest.approx(3.0, rel=0.02)


def test_client_noise_uses_only_the_passed_generator() -> None:
    a = client_noise(5, 1.0, 2, np.random.default_rng(7))
    np.random.seed(123)  # the global state must not matter
    b = client_noise(5, 1.0, 2, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_privatize_report_is_clip_plus_noise() -> None:
    out = privatize_report(
        [3.0, 4.0], 0.0, 10.0, l2_max=1.0, noise_std=2.0, n_clients=4, generator=np.random.default_rng(0)
    )
    noise = client_noise(2, 2.0, 4, np.random.default_rng(0))
    np.testing.assert_allclose(out, np.array([0.6, 0.8]) + noise)


def test_privatize_report_clips_only_the_masked_slots_and_noises_each_with_its_own_std() -> None:
    # Prepare: slots 0, 1 inside the clip (norm 5 -> 1), slot 2 with its own budget
    std = np.array([2.0, 2.0, 0.5])
    # Execute
    out = privatize_report([3.0, 4.0, 1.0], 0.0, 10.0, l2_max=1.0, noise_std=std, n_clients=4,
                           generator=np.random.default_rng(0), mask=np.array([True, True, False]))
    # Assert
    noise = np.random.default_rng(0).normal(0.0, std / 2.0, size=3)
    np.testing.assert_allclose(out, np.array([0.6, 0.8, 1.0]) + noise)


def test_ledger_composes_released_rounds_and_skips_withheld() -> None:
    # Prepare
    led = PrivacyLedger(delta=1e-5)
    # Execute: rounds 0, 1, 3 released, round 2 withheld
    e0 = led.record(0, 1.5, 1.0, 8, True)
    led.record(1, 1.5, 1.0, 8, True)
    e2 = led.record(2, 1.5, 1.0, 2, False)
    e3 = led.record(3, 1.5, 1.0, 8, True)
    # Assert
    assert e0.epsilon_round == pytest.approx(epsilon_after(1.5, 1, 1e-5))
    assert e2.epsilon_round == 0.0
    assert e2.epsilon_total == pytest.approx(epsilon_after(1.5, 2, 1e-5))
    assert e3.epsilon_total == pytest.approx(epsilon_after(1.5, 3, 1e-5))
    assert led.epsilon_total == e3.epsilon_total
    assert [e.released for e in led.entries] == [True, True, False, True]


def test_ledger_charges_dropouts_with_the_effective_multiplier() -> None:
    # 4 of 8 planned reports: the sum carries half the variance -> z_eff = z / sqrt(2)
    led = PrivacyLedger(delta=1e-5)
    e = led.record(0, 2.0, 1.0, 4, True, n_expected=8)
    assert e.effective_noise_multiplier == pytest.approx(math.sqrt(2.0))
    assert e.epsilon_round == pytest.approx(epsilon_after(math.sqrt(2.0), 1, 1e-5))
    with pytest.raises(UserError, match="noise sized for 8"):
        led.record(1, 2.0, 1.0, 9, True, n_expected=8)


def test_ledger_rejects_repeated_rounds() -> None:
    led = PrivacyLedger(delta=1e-5)
    led.record(0, 1.0, 1.0, 4, True)
    with pytest.raises(UserError, match="already has round 0"):
        led.record(0, 1.0, 1.0, 4, True)


def test_ledger_save_load_round_trip_atomic(tmp_path) -> None:
    # Prepare
    led = PrivacyLedger(delta=1e-6)
    led.record(0, 1.1, 0.5, 8, True)
    led.record(1, 1.1, 0.5, 1, False)
    led.record(2, 1.1, 0.5, 6, True, n_expected=8)
    # Execute
    path = led.save(tmp_path)
    back = PrivacyLedger.load(tmp_path)
    # Assert
    assert path == tmp_path / "privacy.json"
    assert [p.name for p in tmp_path.iterdir()] == ["privacy.json"]  # no temp file left behind
    assert back.entries == led.entries
    assert back.epsilon_total == led.epsilon_total
    # continuing after load gives what continuing the original gives
    assert back.record(3, 1.1, 0.5, 8, True) == led.record(3, 1.1, 0.5, 8, True)


def test_ledger_load_detects_an_edited_total(tmp_path) -> None:
    led = PrivacyLedger(delta=1e-5)
    led.record(0, 1.0, 1.0, 4, True)
    led.save(tmp_path)
    data = json.loads((tmp_path / "privacy.json").read_text())
    data["epsilon_total"] = 0.1
    (tmp_path / "privacy.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="edited"):
        PrivacyLedger.load(tmp_path)
    with pytest.raises(UserError, match="no privacy ledger"):
        PrivacyLedger.load(tmp_path / "missing.json")


def test_plan_budget_meets_the_target() -> None:
    z = plan_budget(2.0, 1e-5, 10)
    assert epsilon_after(z, 10, 1e-5) <= 2.0
    assert epsilon_after(z * 0.99, 10, 1e-5) > 2.0  # and is (nearly) the smallest such z


def test_plan_budget_unreachable_names_keys_and_fix() -> None:
    with pytest.raises(UserError) as err:
        plan_budget(0.5, 1e-5, 1000, max_noise_multiplier=20.0)
    msg = str(err.value)
    assert "privacy.target_epsilon" in msg and "federation.rounds" in msg
    assert "\n" not in msg
    # the suggested number of rounds really fits, one more does not
    fit = int(msg.split("at most ")[1].split()[0])
    assert epsilon_after(20.0, fit, 1e-5) <= 0.5 < epsilon_after(20.0, fit + 1, 1e-5)
    with pytest.raises(UserError, match="federation.rounds"):
        plan_budget(1.0, 1e-5, 0)
    with pytest.raises(UserError, match="privacy.target_epsilon"):
        plan_budget(0.0, 1e-5, 3)


def test_release_allowed_min_clients_rule() -> None:
    assert release_allowed(5, 5)
    assert not release_allowed(4, 5)
    with pytest.raises(UserError, match="min_clients"):
        release_allowed(3, 0)


def test_validate_report_reasons() -> None:
    lo, hi, std = 0.0, 1.0, 0.1
    assert validate_report([0.5, 1.3, -0.4], lo, hi, 3, std) is None  # within 6 std of the bounds
    assert "3 values, expected 4" in validate_report([0.5, 0.5, 0.5], lo, hi, 4, std)
    assert "non-finite" in validate_report([0.5, np.inf, 0.5], lo, hi, 3, std)
    reason = validate_report([0.5, 1.7, 0.5], lo, hi, 3, std)
    assert reason is not None and "slot 1" in reason and "[-0.6, 1.6]" in reason
    # per-slot bounds
    assert validate_report([5.0, 0.0], [0.0, 0.0], [5.0, 1.0], 2, 0.0) is None
    assert "slot 1" in validate_report([5.0, 1.01], [0.0, 0.0], [5.0, 1.0], 2, 0.0)
