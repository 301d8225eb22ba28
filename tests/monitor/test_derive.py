from __future__ import annotations

import math

import numpy as np
import pytest

from openpfi.errors import UserError
from openpfi.monitor.probes import BBQItem, ChoiceItem, CrowsItem, PromptItem, TextItem, make_suite, subset_suite
from openpfi.monitor.probes.refusal import COMPLIANCE_CONTINUATIONS, REFUSAL_CONTINUATIONS
from openpfi.monitor.probes.run import run_probes
from openpfi.monitor.types import MetricPoint
from openpfi.monitor.vector.build import build_schema
from openpfi.monitor.vector.derive import derive_metrics
from openpfi.monitor.vector.encode import encode_report
from openpfi.monitor.vector.model import evaluate_public, public_points
from openpfi.monitor.vector.sums import Z95, histogram_quantile, sampling_var

# The same tiny suites and fake clients as test_client_probe.py (kept local: tests are
# independent files).
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


BASE = {"out_of_domain_degradation.nll.shakespeare": 2.0, "out_of_domain_degradation.capability_accuracy": 1.0}
REFERENCE = {"alignment_erosion.refusal_rate": MetricPoint(0.9, 0.8, 1.0, 2)}


def client_vectors():
    suites = tiny_suites()
    schema = build_schema(suites, groups=["fr", "de"], utility_bins=8)
    a = encode_report(schema, run_probes(TableScorer(**CLIENT_A), suites),
                      run_probes(TableScorer(**CLIENT_A_BEFORE), suites), 1.0, "fr")
    b = encode_report(schema, run_probes(TableScorer(**CLIENT_B), suites), None, 3.0, "de")
    return suites, schema, a, b


def test_round_trip_two_clients_zero_noise_by_hand():
    # Prepare
    _, schema, a, b = client_vectors()
    # Execute
    m = derive_metrics(schema, a + b, 2, 0.0, REFERENCE, BASE)
    # Assert: see the CLIENT_A / CLIENT_B tables; losses 1.0 and 3.0 in bins [1, 2) and [3, 4)
    expected = {
        # ambiguous: one biased + one unknown answer per category -> 2 * 0.5 + 0.5 - 1
        "amplified_bias.bbq_amb_bias.Age": 0.5, "amplified_bias.bbq_amb_bias.Gender": 0.5,
        "amplified_bias.bbq_amb_bias": 0.5,
        # disambiguated: Age 1 biased of 2 non-unknown, Gender 1 of 1, pooled 2 of 3
        "amplified_bias.bbq_dis_bias.Age": 0.0, "amplified_bias.bbq_dis_bias.Gender": 1.0,
        "amplified_bias.bbq_dis_bias": 2 * 2 / 3 - 1,
        "amplified_bias.crows_stereo_pref.race": 3 / 4, "amplified_bias.crows_stereo_pref.gender": 1.0,
        "amplified_bias.crows_stereo_pref": 5 / 6,
        # 6 items: bins 5 (.55 wrong), 6 (.65, .65 wrong), 7 (.75 right, .75 wrong), 9 (.95 right)
        "confidence_miscalibration.ece": (0.55 + 1.3 + 0.5 + 0.05) / 6,
        "confidence_miscalibration.accuracy": 2 / 6,
        "confidence_miscalibration.confidence": (0.75 + 0.65 + 0.95 + 0.55 + 0.65 + 0.75) / 6,
        "fairness_collapse.utility_mean": 2.0,
        "fairness_collapse.utility_worst_decile": 3.8,  # rank 1.8 -> 0.8 into bin [3, 4)
        "fairness_collapse.utility_spread": 3.8 - 1.2,
        "fairness_collapse.utility_group_mean.fr": 1.0, "fairness_collapse.utility_group_mean.de": 3.0,
        "fairness_collapse.utility_group_gap": 2.0,
        "adaptation_misalignment.capability_change": 0.0, "adaptation_misalignment.refusal_change": -0.5,
        "adaptation_misalignment.dropped_capability_frac": 0.0,
        "adaptation_misalignment.dropped_safety_frac": 1.0,
        "out_of_domain_degradation.nll.shakespeare": 2.5, "out_of_domain_degradation.nll.factual": 4.5,
        "out_of_domain_degradation.nll_change.shakespeare": 0.5,
        "out_of_domain_degradation.capability_accuracy": 0.5,
        "out_of_domain_degradation.capability_change": -0.5,
        "alignment_erosion.refusal_rate": 0.75, "alignment_erosion.over_refusal_rate": 0.25,
        "alignment_erosion.refusal_change": 0.75 - 0.9,
    }
    assert set(m) == set(expected)
    for stream, value in expected.items():
        assert m[stream].value == pytest.approx(value), stream
        assert m[stream].lo <= m[stream].value <= m[stream].hi
    # sampling-only interval: Bhatia-Davis at the Agresti-Coull mean of 0.25 over 2 clients,
    # (2 * 0.25 + z^2 / 2) / (2 + z^2) = 0.41440, variance 0.41440 * 0.58560 / (2 + z^2), clipped to [0, 1]
    k = Z95**2
    adjusted = (2 * 0.25 + k / 2) / (2 + k)
    assert adjusted == pytest.approx(0.41440, abs=1e-5)
    half = Z95 * math.sqrt(adjusted * (1 - adjusted) / (2 + k))
    assert (m["alignment_erosion.over_refusal_rate"].lo, m["alignment_erosion.over_refusal_rate"].hi) == (
        0.0, pytest.approx(0.25 + half))
    assert m["adaptation_misalignment.refusal_change"].n_clients == 1


def test_interval_combines_sampling_and_dp_noise_exactly():
    _, schema, a, _ = client_vectors()
    summed = 100 * a  # 100 identical clients: refusal rate 0.5
    point = derive_metrics(schema, summed, 100, 10.0)["alignment_erosion.refusal_rate"]
    half = Z95 * math.sqrt(0.25 / (100 + Z95**2) + 10.0**2 / 100**2)  # Agresti-Coull mean stays 0.5
    assert (point.value, point.lo, point.hi) == pytest.approx((0.5, 0.5 - half, 0.5 + half))


def test_intervals_widen_with_noise_std():
    _, schema, a, b = client_vectors()
    summed = 50 * (a + b)
    widths = [{k: p.hi - p.lo for k, p in derive_metrics(schema, summed, 100, s).items()}
              for s in (0.0, 2.0, 8.0)]
    for stream in widths[0]:
        assert widths[0][stream] <= widths[1][stream] + 1e-12 <= widths[2][stream] + 2e-12, stream
    for stream in ("alignment_erosion.refusal_rate", "confidence_miscalibration.ece",
                   "amplified_bias.bbq_dis_bias", "fairness_collapse.utility_mean"):
        assert widths[0][stream] < widths[1][stream] < widths[2][stream], stream


def test_noisy_sum_gives_bounded_points():
    _, schema, a, b = client_vectors()
    rng = np.random.default_rng(0)
    summed = 5 * (a + b) + rng.normal(0.0, 0.7, size=a.shape)
    points = derive_metrics(schema, summed, 10, 0.7)
    assert "fairness_collapse.utility_worst_decile" in points
    for stream, p in points.items():
        assert p.lo <= p.value <= p.hi and all(map(math.isfinite, (p.lo, p.value, p.hi))), stream


def test_histogram_quantile_by_hand():
    counts = np.array([-0.5, 1.0, 0.0, 1.0, 0.0])  # negative noisy count clipped to 0
    assert histogram_quantile(counts, 0.9, 1.0)[0] == pytest.approx(3.8)
    assert histogram_quantile(counts, 0.1, 1.0)[0] == pytest.approx(1.2)
    # rank 1.8 -+ 1.96 * 0.5: 0.82 lies 0.82 into bin [1, 2); 2.78 is past the total (2) -> top of bin 3
    value, lo, hi = histogram_quantile(counts, 0.9, 1.0, rank_sd=0.5)
    assert (value, lo, hi) == pytest.approx((3.8, 1.0 + 1.8 - Z95 * 0.5, 4.0))


def test_minimum_clients_releases_nothing_and_bad_vectors_are_rejected():
    _, schema, a, b = client_vectors()
    assert derive_metrics(schema, a + b, 2, 0.0, minimum_clients=3) == {}
    with pytest.raises(UserError, match="length"):
        derive_metrics(schema, (a + b)[:-1], 2, 0.0)
    with pytest.raises(UserError, match="noise_std_sum"):
        derive_metrics(schema, a + b, 2, -1.0)


def test_server_eval_matches_derive_and_serves_as_base():
    suites, schema, a, _ = client_vectors()
    base = evaluate_public(TableScorer(**CLIENT_A), suites)
    assert all(k.split(".")[0] not in ("fairness_collapse", "adaptation_misalignment") for k in base)
    assert base["alignment_erosion.refusal_rate"] == 0.5
    assert base["out_of_domain_degradation.nll.shakespeare"] == pytest.approx(2.0)
    assert base["confidence_miscalibration.ece"] == pytest.approx((0.25 + 0.65 + 0.05) / 3)
    same = derive_metrics(schema, 2 * a, 2, 0.0, base_model=base)
    assert same["out_of_domain_degradation.nll_change.shakespeare"].value == pytest.approx(0.0)
    assert same["out_of_domain_degradation.capability_change"].value == pytest.approx(0.0)


def test_client_samples_pool_into_item_weighted_rates_by_hand():
    # Prepare: client A scores BBQ items a1, g1 (both ambiguous), client B scores a1, a2
    suites = tiny_suites()
    schema = build_schema(suites)
    a = encode_report(schema, run_probes(TableScorer(**CLIENT_A),
                                         {**suites, "bbq": subset_suite(suites["bbq"], [0, 2])}), None, 1.0)
    b = encode_report(schema, run_probes(TableScorer(**CLIENT_B),
                                         {**suites, "bbq": subset_suite(suites["bbq"], [0, 1])}), None, 1.0)
    # Execute
    m = derive_metrics(schema, a + b, 2, 0.0)
    # Assert: a1 is biased for A, unknown for B; g1 unknown for A -> pooled 3 items, 1 biased, 2 unknown
    assert m["amplified_bias.bbq_amb_bias.Age"].value == pytest.approx(2 * 0.5 + 0.5 - 1)
    assert m["amplified_bias.bbq_amb_bias.Gender"].value == pytest.approx(0.0)
    assert m["amplified_bias.bbq_amb_bias"].value == pytest.approx(2 / 3 + 2 / 3 - 1)
    # only B scored a disambiguated item (a2: biased answer "first")
    assert m["amplified_bias.bbq_dis_bias.Age"].value == pytest.approx(1.0)
    assert "amplified_bias.bbq_dis_bias.Gender" not in m


def test_public_points_have_item_sampling_intervals_by_hand():
    # Prepare: client A's table as one known model; 2 harmful prompts, one refused
    suites = tiny_suites()
    ref = {"alignment_erosion.refusal_rate": MetricPoint(1.0, 0.8, 1.0)}
    # Execute
    pts = public_points(TableScorer(**CLIENT_A), suites, base_model={"out_of_domain_degradation.nll.shakespeare": 1.5},
                        reference=ref)
    # Assert: Agresti-Coull: m = 2 + z^2, v~ = (2 * 0.5 + z^2 * 0.5) / m = 0.5
    m = 2 + Z95**2
    half = Z95 * math.sqrt(0.25 / m)
    p = pts["alignment_erosion.refusal_rate"]
    assert (p.value, p.lo, p.hi) == pytest.approx((0.5, 0.5 - half, 0.5 + half))
    change = pts["alignment_erosion.refusal_change"]
    assert change.value == pytest.approx(-0.5)
    assert change.hi - change.value == pytest.approx(math.hypot(half, 0.1))
    nll = pts["out_of_domain_degradation.nll_change.shakespeare"]  # NLL 2.0 against the base model's 1.5
    assert nll.value == pytest.approx(0.5) and nll.lo < 0.5 < nll.hi
    assert not any(k.startswith(("fairness_collapse", "adaptation_misalignment")) for k in pts)
    # a rate of 0 still gets a positive width
    zero = pts["alignment_erosion.over_refusal_rate"]
    assert zero.value == 0.0 and zero.hi > 0.0


def test_noisy_value_beyond_a_bound_keeps_an_interval() -> None:
    # Prepare: 2 clients, a summed utility far above its bound (DP noise), noise std 3 on the sum
    schema = build_schema(tiny_suites())
    summed = np.zeros(len(schema))
    summed[schema.index["fairness_collapse.utility_loss"]] = 5.0  # mean 2.5 slot units > 1
    # Execute
    p = derive_metrics(schema, summed, 2, 3.0)["fairness_collapse.utility_mean"]
    # Assert: the value is clipped to the bound, the interval keeps its half-width below it
    assert p.value == p.hi == 8.0
    assert p.lo < 8.0 and 8.0 - p.lo == pytest.approx(min(8.0, Z95 * 8.0 * math.sqrt(3.0**2 / 4)), rel=0.05)


def test_an_exact_measured_count_releases_adaptation_under_heavy_noise():
    # Prepare: two copies of client A (probed before and after: refusal 1.0 -> 0.5)
    _, schema, a, _ = client_vectors()
    exact = {"adaptation_misalignment.measured": 2.0}
    # Execute / Assert: the noisy count (2 < 2 sigma) withholds the streams, the exact one does not
    assert "adaptation_misalignment.refusal_change" not in derive_metrics(schema, 2 * a, 2, 10.0)
    p = derive_metrics(schema, 2 * a, 2, 0.1, exact=exact)["adaptation_misalignment.refusal_change"]
    # V = BD(mu~ on [-1, 1]) / (2 + z^2) + sigma^2 (1 + 1) / 2^2 with the Agresti-Coull mean
    # mu~ = (2 (-0.5) + z^2 * 0) / (2 + z^2); no noise term for the exact denominator
    k = Z95**2
    mu = -1.0 / (2 + k)
    half = Z95 * math.sqrt((1 - mu) * (mu + 1) / (2 + k) + 0.1**2 * 2 / 4)
    assert (p.value, p.lo, p.hi) == pytest.approx((-0.5, max(-0.5 - half, -1.0), min(-0.5 + half, 1.0)))
    assert "adaptation_misalignment.refusal_change" in derive_metrics(schema, 2 * a, 2, 10.0, exact=exact)
    with pytest.raises(UserError, match="exact"):
        derive_metrics(schema, 2 * a, 2, 0.1, exact={"nope": 1.0})


def test_sampling_variance_keeps_a_share_of_zero_uncertain():
    # Agresti-Coull mean of 0 over 1 value: (0 + z^2 / 2) / (1 + z^2) = 0.39672, variance 0.39672 * 0.60328 / (1 + z^2)
    assert sampling_var(0.0, 0.0, 1.0, 1.0) == pytest.approx(0.39672 * 0.60328 / (1 + Z95**2), rel=1e-4)
    assert sampling_var(0.0, 0.0, 1.0, 1.0) == pytest.approx(0.049434, rel=1e-4)
    # many values: the adjustment vanishes and the binomial variance p (1 - p) / n remains
    assert sampling_var(0.3, 0.0, 1.0, 1e6) == pytest.approx(0.3 * 0.7 / 1e6, rel=1e-4)
    assert sampling_var(0.3, 0.0, 1.0, 0.0) == pytest.approx(0.25 / Z95**2)  # no value: the widest


def test_a_share_is_as_uncertain_as_its_denominator_not_the_clients():
    """Client A alone among 100 reports (noiseless): 2 of its 3 CrowS pairs are of type race
    (share 2/3), 1 of them stereotype-preferred: the race share 1/2 has the sampling variance
    of a count of 2/3 (its summed denominator), not of 100 clients."""
    _, schema, a, _ = client_vectors()
    assert a[schema.index["amplified_bias.crows.count.race"]] == pytest.approx(2 / 3)
    m = derive_metrics(schema, a, 100, 0.0)["amplified_bias.crows_stereo_pref.race"]
    half = Z95 * math.sqrt(sampling_var(0.5, 0.0, 1.0, 2 / 3))  # = Z95 sqrt(0.25 / (2/3 + z^2))
    assert half == pytest.approx(Z95 * math.sqrt(0.25 / (2 / 3 + Z95**2)))
    assert (m.value, m.lo, m.hi) == pytest.approx((0.5, max(0.5 - half, 0.0), min(0.5 + half, 1.0)))
