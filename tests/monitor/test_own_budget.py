"""The within-round degradation count: its slot outside the clip, its own noise, its stream."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openpfi.algorithms.privacy import gaussian_rdp
from openpfi.errors import UserError
from openpfi.monitor.privacy.mechanism import client_noise, clip_vector, split_noise
from openpfi.monitor.probes import ChoiceItem, TextItem, make_suite
from openpfi.monitor.probes.run import ProbeResults
from openpfi.monitor.vector.build import build_schema
from openpfi.monitor.vector.derive import derive_metrics
from openpfi.monitor.vector.encode import client_values
from openpfi.monitor.vector.sums import Z95, sampling_var

SLOT = "adaptation_misalignment.degraded_general"


def tiny_suites():
    return {
        "ood": make_suite("ood", [TextItem("t1", "t1", "x", "shakespeare", "s", False),
                                  TextItem("t2", "t2", "y", "factual", "f", False)]),
        "capability": make_suite("capability", [ChoiceItem("c1", "c1", (" yes", " no"), 0, "d", False)]),
    }


def results(suites, nll):
    """A client's per-item outcomes: only the out-of-domain NLLs matter here."""
    return ProbeResults(suites, {"capability": ()}, (), {}, tuple(nll), 0)


def test_the_slot_exists_only_when_clients_probe_before_and_stays_outside_the_clip():
    suites = tiny_suites()
    plain, split = build_schema(suites), build_schema(suites, probe_before=True)
    assert SLOT not in plain.index and plain.own_bound == 0.0
    assert split.slots[split.index[SLOT]].own_budget
    assert split.own_bound == 1.0  # one 0/1 indicator
    assert split.l2_bound == pytest.approx(plain.l2_bound)  # the clipped part is unchanged
    assert not split.clip_mask[split.index[SLOT]] and split.clip_mask.sum() == len(split) - 1
    noise = split.slot_noise(5.0, 2.0)
    assert noise[split.index[SLOT]] == 2.0 and (noise[split.clip_mask] == 5.0).all()


def test_clip_vector_with_a_mask_clips_only_the_masked_slots():
    # (3, 4) has norm 5 -> scaled to norm 1: (0.6, 0.8); the unmasked slot keeps its 1
    out = clip_vector([3.0, 4.0, 1.0], [0, 0, 0], [5, 5, 1], 1.0, np.array([True, True, False]))
    assert out == pytest.approx([0.6, 0.8, 1.0])
    assert clip_vector([3.0, 4.0, 1.0], [0, 0, 0], [5, 5, 1], 1.0) == pytest.approx(np.array([3, 4, 1]) / math.sqrt(26))


def test_split_noise_costs_what_one_mechanism_at_z_costs():
    z, c, b, f = 2.0, 3.0, 1.0, 0.5
    sigma_c, sigma_b = split_noise(z, c, b, f)
    assert sigma_c == pytest.approx(2 * 3 / math.sqrt(0.5)) and sigma_b == pytest.approx(2 / math.sqrt(0.5))
    # RDP of the two mechanisms, each alpha / 2 (sensitivity / sigma)^2, adds up to alpha / (2 z^2)
    orders = (2.0, 8.0, 32.0)
    both = gaussian_rdp(sigma_c / c, orders) + gaussian_rdp(sigma_b / b, orders)
    assert both == pytest.approx(gaussian_rdp(z, orders))
    assert split_noise(z, c, 0.0, f) == (z * c, 0.0)  # no own-budget slot: all of it to the clip
    with pytest.raises(UserError, match="adaptation_share must be in"):
        split_noise(z, c, b, 1.0)


def test_client_noise_takes_a_std_per_slot():
    noise = client_noise(3, np.array([0.0, 2.0, 0.0]), 4, np.random.default_rng(0))
    assert noise[0] == 0.0 == noise[2] and noise[1] != 0.0
    many = np.stack([client_noise(2, np.array([1.0, 4.0]), 4, np.random.default_rng(s)) for s in range(4000)])
    assert many.std(axis=0) == pytest.approx([0.5, 2.0], rel=0.05)  # std / sqrt(4 clients)


def test_degraded_when_any_text_got_worse_by_more_than_the_threshold():
    suites = tiny_suites()
    schema = build_schema(suites, probe_before=True)
    after = results(suites, (2.0, 4.0))

    def degraded(before_nll, threshold=0.1):
        return client_values(schema, after, results(suites, before_nll), 0.5, None, {"general_nll": threshold})[SLOT]

    assert degraded((2.0, 3.6)) == 1.0  # 4.0 > 3.6 * 1.1 = 3.96
    assert degraded((2.0, 3.7)) == 0.0  # 4.0 < 4.07; the other text did not change
    assert degraded((1.5, 4.0)) == 1.0  # the first text: 2.0 > 1.65
    assert degraded((1.5, 4.0), threshold=0.5) == 0.0  # 2.0 < 2.25
    assert client_values(schema, after, None, 0.5, None)[SLOT] == 0.0  # not probed before


def test_the_share_uses_the_own_noise_and_every_report():
    schema = build_schema(tiny_suites(), probe_before=True)
    summed = np.zeros(len(schema))
    summed[schema.index[SLOT]] = 6.0
    summed[schema.index["adaptation_misalignment.measured"]] = 12.0
    points = derive_metrics(schema, summed, 12, noise_std_sum=5.0, own_noise_std=2.0)
    p = points["adaptation_misalignment.degraded_general_frac"]
    var = sampling_var(0.5, 0.0, 1.0, 12) + 2.0**2 / 12**2  # the clip's sigma 5 plays no part
    assert p.value == 0.5
    assert (p.hi - p.lo) / 2 == pytest.approx(Z95 * math.sqrt(var))
