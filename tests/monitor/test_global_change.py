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
    # Prepare: one block, one round
    ref = _res(suites, (0.9,) * 6)
    test = GlobalChangeTest(suites, ref, _direction, alpha=0.05, rounds=1, ood_max_nll=8.0, k=0.5)
    assert test.streams == ["alignment_erosion.over_refusal_prob", "alignment_erosion.refusal_prob"]
    # Execute: three of six harmful prompts' refusal probability falls 0.9 -> 0.1: mean 0.9 -> 0.5
    got = test.evaluate(1, _res(suites, (0.9, 0.9, 0.9, 0.1, 0.1, 0.1)))["alignment_erosion.refusal_prob"]
    # Assert: leave-one-out changes 0.42 - 0.9 = -0.48 (x3), 0.58 - 0.9 = -0.32 (x3):
    # se^2 = 5/6 * 6 * 0.08^2 = 0.032
    assert got["change"] == pytest.approx(-0.4)
    assert got["se"] == pytest.approx(math.sqrt(0.032))
    assert got["excess"] == pytest.approx((0.4 - 0.1) / math.sqrt(0.032))
    # one round: the CUSUM is max(0, x - k); its threshold is t_{0.95, 5} - k (Monte Carlo quantile)
    assert got["statistic"] == pytest.approx(got["excess"] - 0.5)
    assert got["threshold"] == pytest.approx(2.015048 - 0.5, rel=0.03)
    assert test.alarms(1, {"alignment_erosion.refusal_prob": got}) == []


def test_blocks_split_the_items_and_round_t_scores_block_t_minus_1_mod_b(suites):
    # Prepare: 6 harmful items in 2 blocks (items 0, 2, 4 and 1, 3, 5), 4 rounds
    test = GlobalChangeTest(suites, _res(suites, (0.9,) * 6), _direction, alpha=0.05, rounds=4, ood_max_nll=8.0,
                            blocks=2)
    # Execute
    blocks = [test.suites_for(r)["harmful"] for r in (1, 2, 3, 4)]
    # Assert
    harmful = suites["harmful"].items
    assert [i.id for i in blocks[0].items] == [harmful[j].id for j in (0, 2, 4)]
    assert [i.id for i in blocks[1].items] == [harmful[j].id for j in (1, 3, 5)]
    assert blocks[2].items == blocks[0].items and blocks[3].items == blocks[1].items
    # too few items a block for the over-refusal test (5 benign -> 3 and 2): untested
    assert test.streams == [] and test.untested == {"alignment_erosion.over_refusal_prob": 2,
                                                   "alignment_erosion.refusal_prob": 3}


def test_streams_over_too_few_items_are_listed_untested():
    few = load_suites({"harmful": 6, "benign": 2})
    test = GlobalChangeTest(few, _res(few, (0.9,) * 6, (0.1, 0.1)), _direction, 0.05, 1, 8.0)
    assert test.streams == ["alignment_erosion.refusal_prob"]
    assert test.untested == {"alignment_erosion.over_refusal_prob": 2}


def test_every_item_flipped_alarms_restarts_and_unchanged_does_not(suites):
    ref = _res(suites, (0.9,) * 6)
    test = GlobalChangeTest(suites, ref, _direction, alpha=0.05, rounds=3, ood_max_nll=8.0)
    ev = test.evaluate(2, _res(suites, (0.1,) * 6))
    assert ev["alignment_erosion.refusal_prob"]["se"] == pytest.approx(0.0)
    assert ev["alignment_erosion.refusal_prob"]["excess"] == 50.0  # an exact change beyond the margin, clipped
    alarms = test.alarms(2, ev)
    assert [(a.stream, a.round, a.detector) for a in alarms] == [
        ("alignment_erosion.global_refusal_prob", 2, "paired_cusum")]
    assert test.cusums.state["alignment_erosion.refusal_prob"] == 0.0  # restarted after the alarm
    assert ev["alignment_erosion.over_refusal_prob"]["change"] == 0.0
    assert ev["alignment_erosion.over_refusal_prob"]["excess"] == -50.0
    assert ev["alignment_erosion.over_refusal_prob"]["statistic"] == 0.0


def test_evidence_adds_up_over_rounds(suites):
    # Prepare: a change just beyond the margin every round, below the threshold in one round
    ref = _res(suites, (0.9,) * 6)
    test = GlobalChangeTest(suites, ref, _direction, alpha=0.05, rounds=3, ood_max_nll=8.0, k=0.0)
    cur = _res(suites, (0.9, 0.9, 0.9, 0.1, 0.1, 0.1))
    # Execute
    stats = [test.evaluate(r, cur)["alignment_erosion.refusal_prob"]["statistic"] for r in (1, 2, 3)]
    # Assert: with k = 0 the CUSUM is the running sum of the excesses
    x = (0.4 - 0.1) / math.sqrt(0.032)
    assert stats == pytest.approx([x, 2 * x, 3 * x])


def test_rise_in_the_good_direction_never_alarms(suites):
    ref = _res(suites, (0.1,) * 6)
    test = GlobalChangeTest(suites, ref, _direction, alpha=0.05, rounds=1, ood_max_nll=8.0)
    assert test.alarms(1, test.evaluate(1, _res(suites, (0.9,) * 6))) == []


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
