from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from openpfi.errors import UserError
from openpfi.monitor.probes import (
    DEFAULT_SIZES,
    BBQItem,
    ChoiceItem,
    CrowsItem,
    PromptItem,
    TextItem,
    load_suites,
    make_suite,
    subset_suite,
)
from openpfi.monitor.probes.refusal import COMPLIANCE_CONTINUATIONS, REFUSAL_CONTINUATIONS
from openpfi.monitor.probes.run import count_items, run_probes
from openpfi.monitor.vector.build import build_schema
from openpfi.monitor.vector.encode import client_values, encode_report

OPTS = ("first", "second", "unknown")


def tiny_suites():
    bbq = [
        BBQItem("a1", "Age", "ambig", "neg", "a1", OPTS, 2, 2, 0),
        BBQItem("a2", "Age", "disambig", "neg", "a2", OPTS, 1, 2, 0),
        BBQItem("g1", "Gender", "ambig", "neg", "g1", OPTS, 2, 2, 1),
        BBQItem("g2", "Gender", "disambig", "neg", "g2", OPTS, 0, 2, 1),
    ]
    crows = [CrowsItem("p1", "m1", "l1", True, "race"), CrowsItem("p2", "m2", "l2", True, "race"),
             CrowsItem("p3", "m3", "l3", False, "gender")]
    return {
        "bbq": make_suite("bbq", bbq),
        "crows": make_suite("crows", crows),
        "harmful": make_suite("harmful", [PromptItem("h1", "h1", "t", "c"), PromptItem("h2", "h2", "t", "c")]),
        "benign": make_suite("benign", [PromptItem("b1", "b1", "t", "c"), PromptItem("b2", "b2", "t", "c")]),
        "ood": make_suite("ood", [TextItem("t1", "t1", "x", "shakespeare", "s", False),
                                  TextItem("t2", "t2", "y", "factual", "f", False)]),
        "capability": make_suite("capability", [ChoiceItem("c1", "c1", (" yes", " no"), 0, "d", False)]),
    }


class TableScorer:
    """Fake model: option probabilities, CrowS log-probs, refusals and NLLs from a table."""

    def __init__(self, probs, crows_more, refuses, nll):
        self.table = {}
        for prompt, ps in probs.items():
            opts = (" yes", " no") if prompt == "c1" else OPTS
            self.table |= {(prompt, o): (math.log(p), 1) for o, p in zip(opts, ps, strict=True)}
        for k, more in enumerate(crows_more, start=1):
            self.table[("", f"m{k}")] = (-1.0 if more else -2.0, 1)
            self.table[("", f"l{k}")] = (-2.0 if more else -1.0, 1)
        for prompt in ("h1", "h2", "b1", "b2"):
            r, c = (-2.0, -6.0) if prompt in refuses else (-6.0, -2.0)
            self.table |= {(prompt, x): (r, 2) for x in REFUSAL_CONTINUATIONS}
            self.table |= {(prompt, x): (c, 2) for x in COMPLIANCE_CONTINUATIONS}
        self.table |= {("t1", "x"): (-4 * nll[0], 4), ("t2", "y"): (-4 * nll[1], 4)}
        self.calls = 0

    def logprobs(self, items):
        self.calls += 1
        return [self.table[(i.prompt, i.continuation)] for i in items]


CLIENT_A = {
    "probs": {"a1": (0.5, 0.25, 0.25), "a2": (0.15, 0.75, 0.1), "g1": (0.1, 0.1, 0.8),
              "g2": (0.3, 0.65, 0.05), "c1": (0.95, 0.05)},
    "crows_more": (True, False, True), "refuses": {"h1"}, "nll": (2.0, 4.0),
}
CLIENT_A_BEFORE = {**CLIENT_A, "refuses": {"h1", "h2"}}
CLIENT_B = {
    "probs": {"a1": (0.1, 0.2, 0.7), "a2": (0.55, 0.35, 0.1), "g1": (0.2, 0.6, 0.2),
              "g2": (0.2, 0.15, 0.65), "c1": (0.25, 0.75)},
    "crows_more": (True, True, True), "refuses": {"h1", "h2", "b1"}, "nll": (3.0, 5.0),
}


def test_count_items_tiny_and_default_budget():
    # 4 BBQ x 3 + 3 pairs x 2 + 4 prompts x 4 + 2 texts + 1 x 2
    assert count_items(tiny_suites())["total"] == 12 + 6 + 16 + 2 + 2
    # the default suites: 3 options a BBQ item, 2 sentences a pair, 4 judge continuations a prompt
    counts = count_items(load_suites(DEFAULT_SIZES, seed=0))
    assert counts["total"] == 3 * 480 + 2 * 300 + 4 * 130 + 4 * 237 + 450 + 2 * 110
    assert counts["bbq"] == 3 * DEFAULT_SIZES["bbq"]


def test_run_probes_batches_and_scores_by_rule():
    suites = tiny_suites()
    scorer = TableScorer(**CLIENT_A)
    res = run_probes(scorer, suites, batch=5)
    assert scorer.calls == math.ceil(38 / 5) and res.n_items == 38
    assert [c.pred for c in res.choices["bbq"]] == [0, 1, 2, 1]
    assert [c.confidence for c in res.choices["bbq"]] == pytest.approx([0.5, 0.75, 0.8, 0.65])
    assert [c.correct for c in res.choices["bbq"]] == [False, True, True, False]
    assert res.crows == (True, False, True)
    assert [p > 0.5 for p in res.refusal["harmful"]] == [True, False]
    assert res.refusal["harmful"][0] == pytest.approx(1 / (1 + math.exp(-4.0)))  # L=2, m=2
    assert res.ood == pytest.approx((2.0, 4.0))


def test_encode_report_values_by_hand():
    suites = tiny_suites()
    schema = build_schema(suites, groups=["fr", "de"], utility_bins=8)
    after = run_probes(TableScorer(**CLIENT_A), suites)
    before = run_probes(TableScorer(**CLIENT_A_BEFORE), suites)
    vec = encode_report(schema, after, before, utility_loss=1.0, group="fr")
    v = {s.name: vec[i] for i, s in enumerate(schema.slots)}
    expected = {
        # BBQ counts are shares of the client's 4 BBQ items
        "amplified_bias.bbq.ambig_count.Age": 0.25, "amplified_bias.bbq.disambig_count.Gender": 0.25,
        "amplified_bias.bbq.ambig_biased.Age": 0.25, "amplified_bias.bbq.ambig_unknown.Age": 0.0,
        "amplified_bias.bbq.ambig_unknown.Gender": 0.25, "amplified_bias.bbq.disambig_correct.Age": 0.25,
        "amplified_bias.bbq.disambig_biased.Gender": 0.25, "amplified_bias.bbq.disambig_non_unknown.Gender": 0.25,
        "amplified_bias.crows.stereo_preferred.race": 1 / 3, "amplified_bias.crows.count.race": 2 / 3,
        "confidence_miscalibration.bin_count.9": 1 / 3, "confidence_miscalibration.bin_confidence.9": 0.95 / 3,
        "confidence_miscalibration.bin_correct.6": 0.0, "confidence_miscalibration.bin_count.6": 1 / 3,
        "fairness_collapse.utility_hist.1": 1.0, "fairness_collapse.utility_hist.0": 0.0,
        "fairness_collapse.utility_loss": 1 / 8, "fairness_collapse.group_count.fr": 1.0,
        "fairness_collapse.group_loss.fr": 1 / 8, "fairness_collapse.group_count.de": 0.0,
        "adaptation_misalignment.measured": 1.0, "adaptation_misalignment.refusal_before": 1.0,
        "adaptation_misalignment.refusal_after": 0.5, "adaptation_misalignment.dropped_safety": 1.0,
        "adaptation_misalignment.dropped_capability": 0.0,
        # one of the two ood texts is shakespeare, NLL 2 of max 8
        "out_of_domain_degradation.count.shakespeare": 0.5, "out_of_domain_degradation.nll.shakespeare": 2 / 8 / 2,
        "out_of_domain_degradation.capability_accuracy": 1.0,
        "alignment_erosion.refusal_rate": 0.5, "alignment_erosion.over_refusal_rate": 0.0,
    }
    for name, value in expected.items():
        assert v[name] == pytest.approx(value), name
    assert vec.dtype == np.float64 and vec.shape == (len(schema),)


def test_no_before_zeroes_adaptation_and_threshold_is_configurable():
    suites = tiny_suites()
    schema = build_schema(suites)
    after = run_probes(TableScorer(**CLIENT_A), suites)
    before = run_probes(TableScorer(**CLIENT_A_BEFORE), suites)
    v = client_values(schema, after, None, 0.5, None)
    assert v["adaptation_misalignment.measured"] == 0.0 == v["adaptation_misalignment.refusal_before"]
    relaxed = client_values(schema, after, before, 0.5, None, {"safety": 0.6})
    assert relaxed["adaptation_misalignment.dropped_safety"] == 0.0


def test_huge_loss_lands_in_last_bin_clipped():
    suites = tiny_suites()
    schema = build_schema(suites, utility_bins=4, utility_max_loss=2.0)
    v = client_values(schema, run_probes(TableScorer(**CLIENT_B), suites), None, 50.0, None)
    assert v["fairness_collapse.utility_hist.3"] == 1.0 and v["fairness_collapse.utility_loss"] == 1.0


def test_bad_inputs_are_user_errors():
    suites = tiny_suites()
    schema = build_schema(suites, groups=["fr"])
    res = run_probes(TableScorer(**CLIENT_A), suites)
    with pytest.raises(UserError, match="group 'xx'"):
        encode_report(schema, res, None, 1.0, "xx")
    with pytest.raises(UserError, match="loss"):
        encode_report(schema, res, None, float("nan"), "fr")
    other = build_schema({k: s for k, s in suites.items() if k != "crows"})
    with pytest.raises(UserError, match="same suites"):
        encode_report(other, res, None, 1.0, None)

    class Short:
        def logprobs(self, items):
            return [(-1.0, 1)] * (len(items) - 1)

    with pytest.raises(UserError, match="one"):
        run_probes(Short(), suites)


def test_real_suites_with_hash_scorer_encode_within_bounds():
    class HashScorer:
        def logprobs(self, items):
            out = []
            for it in items:
                h = hashlib.sha256(f"{it.prompt}|{it.continuation}".encode()).digest()
                n = max(1, len(it.continuation) // 4)
                out.append((-(1 + h[0] / 64) * n, n))
            return out

    suites = load_suites(DEFAULT_SIZES, seed=0)
    schema = build_schema(suites, groups=["fr"])
    res = run_probes(HashScorer(), suites, batch=64)
    vec = encode_report(schema, res, res, 3.0, "fr")
    assert schema.validate(vec) is not None
    cal = [vec[schema.index[f"confidence_miscalibration.bin_count.{b}"]] for b in range(10)]
    assert sum(cal) == pytest.approx(1.0)


def test_a_client_sample_encodes_against_the_full_schema():
    # Prepare: a sample holding one BBQ item (Gender, disambiguated) and one ood text
    suites = tiny_suites()
    schema = build_schema(suites)
    sample = {**suites, "bbq": subset_suite(suites["bbq"], [3]), "ood": subset_suite(suites["ood"], [1])}
    after = run_probes(TableScorer(**CLIENT_A), sample)
    before = run_probes(TableScorer(**CLIENT_A_BEFORE), {k: sample[k] for k in ("harmful", "capability")})
    # Execute
    vec = encode_report(schema, after, before, 1.0)
    v = {s.name: vec[i] for i, s in enumerate(schema.slots)}
    # Assert: categories missing from the sample are zeros, not undefined rates
    assert v["amplified_bias.bbq.ambig_count.Age"] == 0.0 == v["amplified_bias.bbq.ambig_biased.Age"]
    assert v["amplified_bias.bbq.disambig_count.Gender"] == 1.0 == v["amplified_bias.bbq.disambig_biased.Gender"]
    assert v["out_of_domain_degradation.count.shakespeare"] == 0.0
    assert v["out_of_domain_degradation.nll.factual"] == pytest.approx(4 / 8)
    assert v["adaptation_misalignment.refusal_before"] == 1.0 and v["adaptation_misalignment.dropped_safety"] == 1.0
    assert sample["bbq"].root_sha256 == suites["bbq"].sha256 != sample["bbq"].sha256


def test_a_sample_of_another_suite_is_refused():
    suites = tiny_suites()
    schema = build_schema(suites)
    other = make_suite("bbq", list(suites["bbq"].items)[:2])
    res = run_probes(TableScorer(**CLIENT_A), {**suites, "bbq": subset_suite(other, [0])})
    with pytest.raises(UserError, match="same suites"):
        encode_report(schema, res, None, 1.0)
