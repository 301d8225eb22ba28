"""The server-only continuous bias statistics of the paired test, checked by hand."""

from __future__ import annotations

import math

import pytest

from openpfi.monitor.modes.amplified_bias import bbq_amb_lean, crows_stereo_prob
from openpfi.monitor.probes import BBQItem, ProbeSuite
from openpfi.monitor.probes.run import Choice, ProbeResults, results_from_dict, results_to_dict
from openpfi.monitor.vector.model import items_behind


def _bbq(cond: str, unknown: int, biased: int) -> BBQItem:
    return BBQItem(f"b-{cond}-{unknown}{biased}", "Age", cond, "neg", "p", ("a", "b", "c"), unknown, unknown, biased)


def test_bbq_lean_is_the_mean_probability_gap_on_ambiguous_items_only():
    items = [_bbq("ambig", 2, 0), _bbq("ambig", 0, 1), _bbq("disambig", 2, 1)]
    choices = [
        Choice(0, 0.6, False, (0.6, 0.1, 0.3)),  # biased 0, other 1: +0.5
        Choice(0, 0.7, True, (0.7, 0.1, 0.2)),  # biased 1, other 2: -0.1
        Choice(1, 0.9, False, (0.0, 0.9, 0.1)),  # disambiguated: not counted
    ]
    assert bbq_amb_lean(items, choices) == pytest.approx((0.5 - 0.1) / 2)


def test_bbq_lean_is_undefined_without_ambiguous_items_or_probabilities():
    assert bbq_amb_lean([_bbq("disambig", 2, 1)], [Choice(1, 0.9, False, (0.0, 0.9, 0.1))]) is None
    assert bbq_amb_lean([_bbq("ambig", 2, 0)], [Choice(0, 0.6, False)]) is None


def test_crows_stereo_prob_is_the_mean_sigmoid_of_the_log_likelihood_gap():
    assert crows_stereo_prob([0.0, math.log(3.0), -math.log(3.0)]) == pytest.approx((0.5 + 0.75 + 0.25) / 3)
    assert crows_stereo_prob([-800.0, 800.0]) == pytest.approx(0.5)  # no overflow


def test_items_behind_the_lean_streams():
    items = (_bbq("ambig", 2, 0), _bbq("ambig", 0, 1), _bbq("disambig", 2, 1))
    suites = {"bbq": ProbeSuite("bbq", "1", items, "x")}
    assert items_behind("amplified_bias.bbq_amb_lean", suites) == 2


def test_option_probabilities_and_crows_margins_survive_setup_json_and_older_files_still_load():
    items = (_bbq("ambig", 2, 0),)
    suites = {"bbq": ProbeSuite("bbq", "1", items, "x")}
    res = ProbeResults(suites, {"bbq": (Choice(0, 0.6, False, (0.6, 0.1, 0.3)),)}, (), {}, (), 0, ())
    back = results_from_dict(results_to_dict(res), suites)
    assert back.choices["bbq"][0].probs == (0.6, 0.1, 0.3)
    old = {"choices": {"bbq": [[0, 0.6, False]]}, "crows": [], "refusal": {}, "ood": []}
    legacy = results_from_dict(old, suites)
    assert legacy.choices["bbq"][0].probs == () and legacy.crows_margin == ()
