from __future__ import annotations

import math

import pytest

from openpfi.errors import UserError
from openpfi.monitor.detection.paired import critical_t, excess_change, jackknife_se, margin_t


def test_jackknife_se_by_hand():
    # leave-one-out estimates 1, 2, 3: mean 2, squares 1 + 0 + 1; (3 - 1) / 3 * 2 = 4 / 3
    assert jackknife_se([1.0, 2.0, 3.0]) == pytest.approx(math.sqrt(4 / 3))


def test_jackknife_of_a_mean_is_the_standard_error():
    # x = 0, 0, 1, 1: leave-one-out means 2/3, 2/3, 1/3, 1/3; s^2 = 1/3, s^2 / n = 1/12
    x = [0.0, 0.0, 1.0, 1.0]
    loo = [(sum(x) - v) / 3 for v in x]
    assert jackknife_se(loo) == pytest.approx(math.sqrt(1 / 12))


def test_jackknife_refuses_too_few_or_non_finite():
    with pytest.raises(UserError, match="at least 2"):
        jackknife_se([1.0])
    with pytest.raises(UserError, match="not finite"):
        jackknife_se([1.0, math.nan])


def test_excess_change_per_direction():
    assert excess_change(0.3, 0.1, "increase") == pytest.approx(0.2)
    assert excess_change(0.3, 0.1, "decrease") == pytest.approx(-0.4)
    assert excess_change(-0.3, 0.1, "decrease") == pytest.approx(0.2)
    assert excess_change(-0.3, 0.1, "both") == pytest.approx(0.2)
    with pytest.raises(UserError, match="direction"):
        excess_change(0.3, 0.1, "up")
    with pytest.raises(UserError, match="margin"):
        excess_change(0.3, -0.1, "increase")


def test_margin_t_and_its_floor():
    assert margin_t(0.3, 0.1, 0.1, "increase", 1e-6) == pytest.approx(2.0)
    # every item changed alike: se 0, the floor keeps t finite
    assert margin_t(0.3, 0.0, 0.1, "increase", 0.01) == pytest.approx(20.0)
    # a change within the margin is evidence against an alarm
    assert margin_t(0.05, 0.01, 0.1, "increase", 1e-6) == pytest.approx(-5.0)


def test_critical_t_student_quantiles():
    assert critical_t(0.05, 1, 2) == pytest.approx(6.313752, abs=1e-5)  # t_{0.95, 1}
    assert critical_t(0.10, 2, 11) == pytest.approx(1.812461, abs=1e-5)  # t_{0.95, 10}
    assert critical_t(0.05, 1, 10**7) == pytest.approx(1.644854, abs=1e-4)  # -> normal
    with pytest.raises(UserError, match="at least 2 items"):
        critical_t(0.05, 1, 1)
    with pytest.raises(UserError, match="tests"):
        critical_t(0.05, 0, 10)
