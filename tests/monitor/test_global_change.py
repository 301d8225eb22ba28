from __future__ import annotations

import math

import pytest

from openpfi.errors import UserError
from openpfi.monitor.client_probe import ProbeResults
from openpfi.monitor.global_change import GlobalChangeTest, results_from_dict, results_to_dict
from openpfi.monitor.probes import load_suites


def _direction(stream: str) -> str:
    return "increase" if "over_refusal" in stream else "decrease"


@pytest.fixture(scope="module")
def suites():
    return load_suites({"harmful": 4, "benign": 2})


def _res(suites, harmful, benign=(0.1, 0.1)):
    return ProbeResults(suites, {}, (), {"harmful": tuple(harmful), "benign": tuple(benign)}, (), 0)


def test_paired_change_by_hand(suites):
    ref = _res(suites, (0.9, 0.9, 0.9, 0.9))
    test = GlobalChangeTest(suites, ref, _direction, alpha_per_stream=0.05, rounds=1, ood_max_nll=8.0)
    assert test.streams == ["alignment_erosion.over_refusal_rate", "alignment_erosion.refusal_rate"]
    # two of four harmful prompts no longer refused: refusal rate 1 -> 1/2
    got = test.evaluate(_res(suites, (0.9, 0.9, 0.1, 0.1)))["alignment_erosion.refusal_rate"]
    assert got["change"] == pytest.approx(-0.5)
    # leave-one-out changes -2/3, -2/3, -1/3, -1/3: se^2 = 3/4 * 4 * (1/6)^2 = 1/12
    assert got["se"] == pytest.approx(math.sqrt(1 / 12))
    assert got["t"] == pytest.approx((0.5 - 0.1) / math.sqrt(1 / 12))
    assert got["critical"] == pytest.approx(2.353363, abs=1e-5)  # t_{0.95, 3}
    assert test.alarms(1, {"alignment_erosion.refusal_rate": got}) == []


def test_every_item_flipped_alarms_and_unchanged_does_not(suites):
    ref = _res(suites, (0.9, 0.9, 0.9, 0.9))
    test = GlobalChangeTest(suites, ref, _direction, alpha_per_stream=0.05, rounds=3, ood_max_nll=8.0)
    ev = test.evaluate(_res(suites, (0.1, 0.1, 0.1, 0.1)))
    assert ev["alignment_erosion.refusal_rate"]["se"] == 0.0
    alarms = test.alarms(2, ev)
    assert [(a.stream, a.round, a.detector) for a in alarms] == [
        ("alignment_erosion.global_refusal_rate", 2, "paired_jackknife")]
    assert ev["alignment_erosion.over_refusal_rate"]["change"] == 0.0
    assert ev["alignment_erosion.over_refusal_rate"]["t"] < 0


def test_rise_in_the_good_direction_never_alarms(suites):
    ref = _res(suites, (0.1, 0.1, 0.1, 0.1))
    test = GlobalChangeTest(suites, ref, _direction, alpha_per_stream=0.05, rounds=1, ood_max_nll=8.0)
    assert test.alarms(1, test.evaluate(_res(suites, (0.9, 0.9, 0.9, 0.9)))) == []


def test_results_round_trip_and_mismatch(suites):
    res = _res(suites, (0.9, 0.2, 0.9, 0.4))
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
    from openpfi.monitor.global_change import DEFAULT_MARGINS

    assert set(MARGIN_METRICS) == set(DEFAULT_MARGINS)
