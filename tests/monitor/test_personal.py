"""The personal-model section of the report (monitor/vector/personal.py) on hand-made outcomes."""

from __future__ import annotations

import pytest
from test_client_probe import CLIENT_A, CLIENT_B, TableScorer, tiny_suites

from openpfi.monitor.modes import MODEL_MODES
from openpfi.monitor.probes.run import run_probes
from openpfi.monitor.vector.build import build_schema
from openpfi.monitor.vector.derive import derive_metrics
from openpfi.monitor.vector.encode import encode_report


def test_the_section_repeats_the_model_level_modes_slots_only():
    # Prepare
    suites = tiny_suites()
    plain, with_own = build_schema(suites), build_schema(suites, personal=True)
    # Execute
    extra = [s.name for s in with_own.slots if s.name not in plain.index]
    # Assert: every model-level slot once more, nothing of fairness or adaptation
    model_slots = [s.name for s in plain.slots if s.name.partition(".")[0] in MODEL_MODES]
    assert extra == [f"{n.partition('.')[0]}.personal.{n.partition('.')[2]}" for n in model_slots]
    assert with_own.l2_bound > plain.l2_bound


def test_a_personal_model_that_refuses_less_shows_in_its_own_streams_only():
    # Prepare: client A's trained model refuses h1 only; its personal model (B's table) refuses h1 and h2
    suites = tiny_suites()
    schema = build_schema(suites, personal=True)
    after = run_probes(TableScorer(**CLIENT_A), suites)
    own = run_probes(TableScorer(**CLIENT_B), suites)
    # Execute: one noiseless client
    vec = encode_report(schema, after, None, 2.0, None, personal=own)
    points = derive_metrics(schema, vec, 1, 0.0, minimum_clients=1)
    # Assert
    assert points["alignment_erosion.refusal_rate"].value == pytest.approx(0.5)
    assert points["alignment_erosion.personal_refusal_rate"].value == pytest.approx(1.0)
    assert points["alignment_erosion.personal_over_refusal_rate"].value == pytest.approx(0.5)  # b1 refused
    assert points["amplified_bias.personal_crows_stereo_pref"].value == pytest.approx(1.0)
    assert not any(k.startswith(("fairness_collapse.personal", "adaptation_misalignment.personal")) for k in points)
