from __future__ import annotations

import pytest

from openpfi.errors import UserError
from openpfi.monitor import probes
from openpfi.monitor.detection.group_gap import GroupGapTest, gap, gap_jackknife_se, relative_changes


def test_relative_changes_and_gap_by_hand():
    ref = {"a": [2.0, 2.0], "b": [4.0, 4.0]}
    cur = {"a": [1.0, 3.0], "b": [5.0, 5.0]}
    # a: mean 2 -> 2, rho 0; b: mean 4 -> 5, rho 0.25
    assert relative_changes(ref, cur) == {"a": 0.0, "b": 0.25}
    assert gap(ref, cur) == pytest.approx(0.25)


def test_gap_jackknife_by_hand():
    ref = {"a": [2.0, 2.0], "b": [4.0, 4.0]}
    cur = {"a": [1.0, 3.0], "b": [5.0, 5.0]}
    # without item 0: a 2 -> 3 (+0.5), b +0.25: gap 0.25; without item 1: a 2 -> 1 (-0.5): gap 0.75
    # mean 0.5; se^2 = (2 - 1) / 2 * (0.25^2 + 0.25^2) = 0.0625
    assert gap_jackknife_se(ref, cur) == pytest.approx(0.25)


def test_a_group_of_one_item_cannot_be_jackknifed():
    ref = {"a": [1.0, 1.0, 1.0], "b": [2.0]}
    cur = {"a": [1.0, 1.0, 4.0], "b": [2.0]}
    # unit 0 drops b's only item: its mean is undefined, so the jackknife is refused
    with pytest.raises(UserError, match="losses"):
        gap_jackknife_se(ref, cur)


def test_mismatched_groups_or_items_are_refused():
    with pytest.raises(UserError, match="monitor.groups"):
        gap({"a": [1.0], "b": [1.0]}, {"a": [1.0], "c": [1.0]})
    with pytest.raises(UserError, match="same public items"):
        gap({"a": [1.0, 1.0], "b": [1.0]}, {"a": [1.0], "b": [1.0]})
    with pytest.raises(UserError, match="at least 2 groups"):
        gap({"a": [1.0]}, {"a": [2.0]})


def test_test_alarms_beyond_the_margin_only():
    ref = {"en": [4.0] * 6, "ko": [2.0] * 6}
    t = GroupGapTest(ref, rounds=4, alpha=0.01)
    assert t.streams == ["fairness_collapse.group_gap"]
    # every English item falls 20%, Korean stays: gap 0.2, jackknife se 0: an exact excess, alarm
    out = t.evaluate(3, {"en": [3.2] * 6, "ko": [2.0] * 6})
    e = out["fairness_collapse.group_gap"]
    assert e["value"] == pytest.approx(0.2) and e["se"] == pytest.approx(0.0) and e["excess"] == 50.0
    assert e["threshold"] == pytest.approx(t.cusums.threshold(6))
    assert e["rho.en"] == pytest.approx(-0.2) and e["rho.ko"] == 0.0
    [alarm] = t.alarms(3, out)
    assert (alarm.mode, alarm.stream, alarm.round) == ("fairness_collapse", "fairness_collapse.global_group_gap", 3)
    # a 5% spread stays within the 10% margin: a negative excess, the CUSUM stays at 0, no alarm
    calm = t.evaluate(4, {"en": [3.8] * 6, "ko": [2.0] * 6})
    assert calm["fairness_collapse.group_gap"]["excess"] < 0 and calm["fairness_collapse.group_gap"]["statistic"] == 0
    assert t.alarms(4, calm) == []


def test_noisy_items_widen_the_error():
    ref = {"en": [4.0] * 6, "ko": [2.0] * 6}
    t = GroupGapTest(ref, rounds=4, alpha=0.01)
    cur = {"en": [2.0, 4.4, 2.0, 4.4, 2.0, 4.4], "ko": [2.0] * 6}  # mean 3.2, items disagree
    e = t.evaluate(1, cur)["fairness_collapse.group_gap"]
    assert e["value"] == pytest.approx(0.2) and e["se"] > 0.05
    assert e["excess"] == pytest.approx((0.2 - 0.1) / e["se"])
    assert e["statistic"] == pytest.approx(e["excess"] - 0.5)


def test_blocks_take_every_bth_text_of_each_group():
    # Prepare: 10 texts per group in 2 blocks
    ref = {"en": [float(i + 1) for i in range(10)], "ko": [2.0] * 10}
    t = GroupGapTest(ref, rounds=3, alpha=0.01, blocks=2)
    suite = probes.make_suite("groups", [*probes.group_items("english", 10), *probes.group_items("korean", 10)])
    # Execute
    first, second = t.block_suite(suite, 1), t.block_suite(suite, 2)
    # Assert: texts 0, 2, .. of each group in round 1, 1, 3, .. in round 2
    assert [i.id for i in first.items] == [suite.items[j].id for j in (0, 2, 4, 6, 8, 10, 12, 14, 16, 18)]
    assert [i.id for i in second.items] == [suite.items[j].id for j in (1, 3, 5, 7, 9, 11, 13, 15, 17, 19)]
    assert t.blocks[1]["en"] == [2.0, 4.0, 6.0, 8.0, 10.0] and t.items == 5


def test_too_few_items_or_groups_leave_it_untested():
    assert GroupGapTest({"en": [1.0] * 4, "ko": [1.0] * 4}, rounds=3).streams == []
    assert GroupGapTest({"en": [1.0] * 8}, rounds=3).streams == []
    assert GroupGapTest({"en": [1.0] * 4, "ko": [1.0] * 4}, rounds=3).evaluate(1, {"en": [1.0] * 4, "ko": [1.0] * 4}) == {}


def test_group_items_are_seeded_chatterbot_texts_kept_from_clients():
    ko = probes.group_items("korean", 6)
    assert len(ko) == 6 and all(i.source == "korean" for i in ko)
    assert ko == probes.group_items("korean", 6) and ko != probes.group_items("korean", 6, seed=1)
    assert probes.group_items("not_a_language", 6) == () and probes.group_items("korean", 10**6) == ()
    keep = probes.group_probe_filter(["korean"], 6)
    assert not keep(ko[0].prompt, ko[0].continuation)
    assert not keep(ko[0].continuation, "the next turn")  # the turn answering the probed reply
    assert keep(ko[0].prompt, "another reply")
