from __future__ import annotations

import math

import pytest

from openpfi.errors import UserError
from openpfi.monitor.detection.global_change import GlobalChangeTest
from openpfi.monitor.probes import load_suites
from openpfi.monitor.probes.run import ProbeResults, results_from_dict, results_to_dict


def _direction(stream: str) -> str:
    return "increase" if "over_refusal" in stream else "decrease"


@pytest.fixture(scope="module")
def suites():
    return load_suites({"harmful": 6, "benign": 5})


def _res(suites, harmful, benign=(0.1,) * 5):
    return ProbeResults(suites, {}, (), {"harmful": tuple(harmful), "benign": tuple(benign)}, (), 0)


def test_paired_change_by_hand(suites):
    ref = _res(suites, (0.9,) * 6)
    test = GlobalChangeTest(suites, ref, _direction, alpha_per_stream=0.05, rounds=1, ood_max_nll=8.0)
    assert test.streams == ["alignment_erosion.over_refusal_rate", "alignment_erosion.refusal_rate"]
    # three of six harmful prompts no longer refused: refusal rate 1 -> 1/2
    got = test.evaluate(_res(suites, (0.9, 0.9, 0.9, 0.1, 0.1, 0.1)))["alignment_erosion.refusal_rate"]
    assert got["change"] == pytest.approx(-0.5)
    # leave-one-out changes -0.6 (x3), -0.4 (x3): se^2 = 5/6 * 6 * 0.1^2 = 0.05 (= s^2 / n of the item changes)
    assert got["se"] == pytest.approx(math.sqrt(0.05))
    assert got["t"] == pytest.approx((0.5 - 0.1) / math.sqrt(0.05))
    assert got["critical"] == pytest.approx(2.015048, abs=1e-5)  # t_{0.95, 5}
    assert test.alarms(1, {"alignment_erosion.refusal_rate": got}) == []


def test_streams_over_too_few_items_are_listed_untested():
    few = load_suites({"harmful": 6, "benign": 2})
    test = GlobalChangeTest(few, _res(few, (0.9,) * 6, (0.1, 0.1)), _direction, 0.05, 1, 8.0)
    assert test.streams == ["alignment_erosion.refusal_rate"]
    assert test.untested == {"alignment_erosion.over_refusal_rate": 2}


def test_every_item_flipped_alarms_and_unchanged_does_not(suites):
    ref = _res(suites, (0.9,) * 6)
    test = GlobalChangeTest(suites, ref, _direction, alpha_per_stream=0.05, rounds=3, ood_max_nll=8.0)
    ev = test.evaluate(_res(suites, (0.1,) * 6))
    assert ev["alignment_erosion.refusal_rate"]["se"] == 0.0
    alarms = test.alarms(2, ev)
    assert [(a.stream, a.round, a.detector) for a in alarms] == [
        ("alignment_erosion.global_refusal_rate", 2, "paired_jackknife")]
    assert ev["alignment_erosion.over_refusal_rate"]["change"] == 0.0
    assert ev["alignment_erosion.over_refusal_rate"]["t"] < 0


def test_rise_in_the_good_direction_never_alarms(suites):
    ref = _res(suites, (0.1,) * 6)
    test = GlobalChangeTest(suites, ref, _direction, alpha_per_stream=0.05, rounds=1, ood_max_nll=8.0)
    assert test.alarms(1, test.evaluate(_res(suites, (0.9,) * 6))) == []


def test_results_round_trip_and_mismatch(suites):
    res = _res(suites, (0.9, 0.2, 0.9, 0.4, 0.3, 0.8))
    back = results_from_dict(results_to_dict(res), suites)
    assert back.refusal == res.refusal
    bad = results_to_dict(res)
    bad["refusal"]["harmful"] = bad["refusal"]["harmful"][:3]
    with pytest.raises(UserError, match="3 items of suite 'harmful'"):
        results_from_dict(bad, suites)
    with pytest.raises(UserError, match="malformed"):
        results_from_dict({"choices": {}}, suites)


def test_margin_metrics_match_the_config_keys():
    from openpfi.config import MARGIN_METRICS
    from openpfi.monitor.modes import default_margins

    assert set(MARGIN_METRICS) == set(default_margins())
