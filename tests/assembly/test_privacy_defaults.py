"""Privacy defaults: a target epsilon of 8 unless set; a fixed noise multiplier that overspends says so."""

from __future__ import annotations

import logging

import pytest

from openpfi.algorithms.privacy import epsilon_after
from openpfi.assembly.monitor_plan import plan_monitor
from openpfi.config import load_config

BASE = ["monitor.enabled=true", "federation.rounds=3"]


def test_without_a_target_the_noise_is_planned_for_epsilon_8(caplog):
    # Prepare / Execute
    with caplog.at_level(logging.WARNING):
        plan = plan_monitor(load_config(None, BASE))
    # Assert: z = 1.1052 spends 8.00 over 3 rounds at delta 1e-5 (z = 1 would spend 9.09)
    assert plan is not None
    assert plan.cfg.privacy.target_epsilon == 8.0
    assert plan.noise_multiplier == pytest.approx(1.1052, abs=1e-3)
    assert plan.planned_epsilon == pytest.approx(8.0, abs=1e-3)
    assert not [r for r in caplog.records if "privacy" in r.getMessage()]


def test_a_fixed_noise_multiplier_that_spends_more_than_8_says_so_in_one_line(caplog):
    # Prepare / Execute
    with caplog.at_level(logging.WARNING):
        plan = plan_monitor(load_config(None, [*BASE, "privacy.noise_multiplier=1.0"]))
    # Assert
    assert plan is not None and plan.noise_multiplier == 1.0
    assert plan.planned_epsilon == pytest.approx(epsilon_after(1.0, 3, 1e-5)) == pytest.approx(9.0879, abs=1e-4)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("privacy:")]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "epsilon 9.09" in lines[0] and "privacy.target_epsilon = 8" in lines[0]
    assert "privacy.noise_multiplier >= 1.11" in lines[0]


def test_a_fixed_noise_multiplier_within_the_users_target_is_silent(caplog):
    with caplog.at_level(logging.WARNING):
        plan = plan_monitor(load_config(None, [*BASE, "privacy.noise_multiplier=1.0", "privacy.target_epsilon=10"]))
    assert plan is not None and plan.planned_epsilon < 10
    assert not [r for r in caplog.records if r.getMessage().startswith("privacy:")]
    # ... but the same noise against a lower target of the user's speaks up
    with caplog.at_level(logging.WARNING):
        plan_monitor(load_config(None, [*BASE, "privacy.noise_multiplier=1.0", "privacy.target_epsilon=5"]))
    assert any("more than privacy.target_epsilon = 5" in r.getMessage() for r in caplog.records)
