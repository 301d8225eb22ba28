"""Paired change tests for a model the server holds, on the same public probe items each round.

The server scores the global model on a fixed public sample every round, so its change
against the round-0 model is a *paired* comparison: what an item contributes at round t
and at round 0 is correlated (the same prompt), and comparing two levels with their own
item-sampling intervals (``server_eval.public_points``) throws that away. Here the change
``D = f(cur) - f(ref)`` of a stream ``f`` (any function of the per-item outcomes: a rate,
a bias score, an ECE, a mean NLL) gets the delete-one jackknife standard error over the
sampling units (Quenouille 1956; Tukey 1958; Efron & Stein 1981)::

    D_(j) = f(cur without unit j) - f(ref without unit j)
    se_J^2 = (n - 1) / n * sum_j (D_(j) - mean_j D_(j))^2

A sampling unit ``j`` is item ``j`` of every suite (the suites are drawn independently;
a unit lacking a suite's item leaves that suite unchanged). A unit that no stream item
depends on gives ``D_(j) = D`` and adds about nothing.

A federated model is *meant* to change, so the null hypothesis is not "no change" but
"no material change": the bad-direction change stays within a margin ``delta`` (an
interval hypothesis, as in equivalence and non-inferiority testing)::

    H0: s * Delta <= delta    vs    H1: s * Delta > delta      (s = +1 increase, -1 decrease)
    t = (s * D - delta) / se_J        (two-sided streams: |D| in place of s * D)

and the stream alarms when ``t > t_{1 - alpha, m - 1}``, the Student quantile with
``m - 1`` degrees of freedom for a stream over ``m`` items. ``alpha`` is the target
false-alarm rate split over every (stream, round) test (Bonferroni): tests of the same
stream in later rounds are positively correlated, so the split is conservative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

from openpfi.errors import UserError


def jackknife_se(leave_one_out: Sequence[float]) -> float:
    """Delete-one jackknife standard error ``sqrt((n-1)/n * sum (x_j - mean x)^2)`` of ``n >= 2``
    leave-one-out estimates."""
    n = len(leave_one_out)
    if n < 2:
        raise UserError(f"a jackknife needs at least 2 leave-one-out estimates, got {n}")
    if not all(math.isfinite(x) for x in leave_one_out):
        raise UserError("a leave-one-out estimate is not finite; every sampling unit must leave a defined value")
    mean = sum(leave_one_out) / n
    return math.sqrt((n - 1) / n * sum((x - mean) ** 2 for x in leave_one_out))


def excess_change(change: float, margin: float, direction: str) -> float:
    """The bad-direction change beyond ``margin``: ``change - margin`` (increase),
    ``-change - margin`` (decrease), ``|change| - margin`` (both)."""
    if not (math.isfinite(margin) and margin >= 0):
        raise UserError(f"a change margin must be a finite number >= 0, got {margin}")
    if direction == "increase":
        return change - margin
    if direction == "decrease":
        return -change - margin
    if direction == "both":
        return abs(change) - margin
    raise UserError(f"direction must be increase, decrease or both, got '{direction}'")


def margin_t(change: float, se: float, margin: float, direction: str, min_se: float) -> float:
    """``t = excess_change / max(se, min_se)``: ``min_se`` keeps a change that every item made
    alike (``se = 0``) finite and is the smallest change the test resolves."""
    if not min_se > 0:
        raise UserError(f"min_se must be positive, got {min_se}")
    return excess_change(change, margin, direction) / max(se, min_se)


def critical_t(target_false_alarm_rate: float, tests: int, items: int) -> float:
    """``t_{1 - target / tests, items - 1}``: the one-sided Student quantile of one of ``tests``
    Bonferroni-split tests on a stream over ``items`` items."""
    if not 0 < target_false_alarm_rate < 1:
        raise UserError(f"target false-alarm rate must be in (0, 1), got {target_false_alarm_rate}")
    if tests < 1:
        raise UserError(f"the number of tests must be >= 1, got {tests}")
    if items < 2:
        raise UserError(f"a paired test needs a stream over at least 2 items, got {items}")
    return float(stats.t.ppf(1.0 - target_false_alarm_rate / tests, items - 1))
