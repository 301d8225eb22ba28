from __future__ import annotations

import math

import numpy as np
import pytest

from openpfi.errors import UserError
from openpfi.monitor.modes import MODES
from openpfi.monitor.probes import DEFAULT_SIZES, load_suites
from openpfi.monitor.vector.build import build_schema
from openpfi.monitor.vector.schema import ReportSchema, Slot


@pytest.fixture(scope="module")
def suites():
    return load_suites(DEFAULT_SIZES, seed=0)


def test_default_schema_slot_count_by_hand(suites):
    # bias: 11 categories x (1 + 2 ambiguous + 1 + 3 disambiguated) + 9 CrowS types x 2
    # calibration: 10 bins x 3; utility: 10 bins + clipped loss + 2 x groups
    # adaptation: measured + 2 x (before, after, dropped); ood: 3 domains x 2 + capability;
    # safety: refusal + over-refusal
    expected = 11 * 7 + 9 * 2 + 30 + 11 + 7 + 7 + 2
    assert len(build_schema(suites)) == expected == 152
    assert len(build_schema(suites, groups=["fr", "de", "es"])) == expected + 6


def test_slots_are_bounded_named_by_mode_and_l2_bounded(suites):
    schema = build_schema(suites, groups=["fr"])
    names = [s.name for s in schema.slots]
    assert len(set(names)) == len(names)
    assert all(n.split(".")[0] in MODES for n in names)
    assert "amplified_bias.bbq.ambig_biased.Age" in schema.index
    assert "fairness_collapse.group_loss.fr" in schema.index
    assert all(0 <= s.lo < s.hi <= 1 for s in schema.slots)
    assert schema.l2_bound <= math.sqrt(len(schema))
    assert schema.slots[schema.index["fairness_collapse.utility_loss"]].scale == 8.0


def test_schema_hash_is_stable_and_tracks_layout(suites):
    a, b = build_schema(suites), build_schema(suites)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    assert build_schema(suites, bins=5).sha256 != a.sha256
    assert build_schema(suites, groups=["fr"]).sha256 != a.sha256
    other = load_suites(DEFAULT_SIZES, seed=1)
    assert build_schema(other).sha256 != a.sha256  # probe hashes are part of it


def test_missing_suites_contribute_no_slots():
    crows_only = build_schema(load_suites({"crows": 9}, seed=0))
    modes = {s.name.split(".")[0] for s in crows_only.slots}
    assert modes == {"amplified_bias", "fairness_collapse"}


def test_validate_rejects_wrong_length_out_of_bounds_and_nan(suites):
    schema = build_schema(suites)
    ok = np.zeros(len(schema))
    assert schema.validate(ok).dtype == np.float64
    with pytest.raises(UserError, match="length 151"):
        schema.validate(np.zeros(len(schema) - 1))
    bad = ok.copy()
    bad[schema.index["alignment_erosion.refusal_rate"]] = 1.5
    with pytest.raises(UserError, match="alignment_erosion.refusal_rate"):
        schema.validate(bad)
    bad[:] = np.nan
    with pytest.raises(UserError, match="NaN"):
        schema.validate(bad)


@pytest.mark.parametrize("groups", [["a.b"], ["x", "x"], [""]])
def test_bad_group_names(suites, groups):
    with pytest.raises(UserError, match="groups"):
        build_schema(suites, groups=groups)


def test_schema_rejects_slots_wider_than_one_or_without_mode():
    with pytest.raises(UserError):
        ReportSchema((Slot("alignment_erosion.x", 0.0, 2.0),))
    with pytest.raises(UserError):
        ReportSchema((Slot("nomode.x", 0.0, 1.0),))


def test_l2_bound_counts_each_family_once_by_hand(suites):
    # Prepare: families: bbq count, ambig answer, 3 disambig; 2 CrowS; 3 calibration;
    # utility histogram; 2 ood (count, nll) = 13. Singletons: utility loss, 7 adaptation,
    # capability accuracy, refusal, over-refusal = 11.
    schema = build_schema(suites)
    # Execute / Assert
    assert len(schema.families) == 13
    assert schema.l2_bound == pytest.approx(math.sqrt(13 + 11))
    assert build_schema(suites, groups=["fr"]).l2_bound == pytest.approx(math.sqrt(15 + 11))


def test_validate_rejects_a_family_summing_above_one(suites):
    schema = build_schema(suites)
    x = np.zeros(len(schema))
    x[schema.index["fairness_collapse.utility_hist.0"]] = 1.0
    assert schema.validate(x) is not None
    x[schema.index["fairness_collapse.utility_hist.3"]] = 0.5
    with pytest.raises(UserError, match="family fairness_collapse.utility_hist"):
        schema.validate(x)


def test_any_valid_report_is_within_the_l2_bound(suites):
    schema = build_schema(suites, groups=["fr", "de"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(200):
        x = rng.uniform(schema.lo, schema.hi)
        for idx in schema.families.values():  # scale each family onto its simplex
            x[idx] = rng.dirichlet(np.full(idx.size, 0.1)) * rng.uniform(0.5, 1.0)
        worst = max(worst, float(np.linalg.norm(schema.validate(x))))
    assert worst <= schema.l2_bound
