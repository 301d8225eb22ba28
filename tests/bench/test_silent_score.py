"""Bookkeeping of the silent benchmark: exact on hand-made alarm lists."""

from __future__ import annotations

from openpfi.bench.silent_score import coverage, coverage_row, score_run, summarize


def _a(mode: str, r: int) -> dict:
    return {"mode": mode, "round": r, "stream": f"{mode}.x"}


def test_detected_in_onset_round_has_delay_zero():
    # Prepare
    alarms = [_a("amplified_bias", 2), _a("amplified_bias", 4)]
    # Execute
    s = score_run(alarms, "amplified_bias", onset=2)
    # Assert
    assert (s.detected, s.delay, s.late, s.false_alarms, s.alarms_after_onset) == (True, 0, False, 0, 2)


def test_delay_at_window_edge_and_beyond():
    # within 3 rounds = an alarm in round r0, r0 + 1 or r0 + 2
    assert score_run([_a("alignment_erosion", 4)], "alignment_erosion", onset=2).delay == 2
    assert score_run([_a("alignment_erosion", 4)], "alignment_erosion", onset=2).detected is True
    late = score_run([_a("alignment_erosion", 5)], "alignment_erosion", onset=2)
    assert (late.detected, late.delay, late.late) == (False, 3, True)
    assert score_run([_a("alignment_erosion", 3)], "alignment_erosion", onset=2, within=1).detected is False


def test_wrong_mode_and_pre_onset_alarms_are_false():
    alarms = [_a("fairness_collapse", 1), _a("fairness_collapse", 3), _a("out_of_domain_degradation", 3),
              _a("out_of_domain_degradation", 5)]
    s = score_run(alarms, "fairness_collapse", onset=2)
    assert s.detected and s.delay == 1
    assert s.false_alarms == 3  # the pre-onset one and both wrong-mode ones
    assert s.false_alarm_modes == ("fairness_collapse", "out_of_domain_degradation")
    assert s.modes_alarmed == ("fairness_collapse", "out_of_domain_degradation")


def test_a_mode_the_injection_also_causes_is_not_false_from_onset_on():
    alarms = [_a("adaptation_misalignment", 1), _a("adaptation_misalignment", 3), _a("out_of_domain_degradation", 2),
              _a("alignment_erosion", 3)]
    s = score_run(alarms, "out_of_domain_degradation", onset=2, also=("adaptation_misalignment",))
    assert s.detected and s.delay == 0
    assert s.false_alarms == 2  # adaptation before onset, erosion: not listed
    assert s.false_alarm_modes == ("adaptation_misalignment", "alignment_erosion")
    plain = score_run(alarms, "out_of_domain_degradation", onset=2)
    assert plain.false_alarms == 3


def test_every_alarm_on_a_control_is_false():
    s = score_run([_a("amplified_bias", 1), _a("amplified_bias", 3)], "none", onset=None)
    assert (s.detected, s.delay, s.false_alarms) == (False, None, 2)
    assert score_run([], "none", onset=None).false_alarms == 0


def test_unsorted_alarms_give_the_first_delay():
    s = score_run([_a("confidence_miscalibration", 5), _a("confidence_miscalibration", 3)],
                  "confidence_miscalibration", onset=2)
    assert s.delay == 1


def test_summary_and_coverage():
    # Prepare: bias detected in all 3 seeds; erosion in 2 of 3; fairness only via another mode;
    # adaptation late only; OOD nothing at all; miscalibration has no scenario.
    bias = [score_run([_a("amplified_bias", 3)], "amplified_bias", 2) for _ in range(3)]
    erosion = [score_run([_a("alignment_erosion", 2)], "alignment_erosion", 2)] * 2 + [
        score_run([], "alignment_erosion", 2)]
    fair = [score_run([_a("out_of_domain_degradation", 3)], "fairness_collapse", 2)]
    adapt = [score_run([_a("adaptation_misalignment", 5)], "adaptation_misalignment", 2)]
    ood = [score_run([], "out_of_domain_degradation", 2)]
    control = [score_run([_a("alignment_erosion", 4)], "none", None), score_run([], "none", None)]
    # Execute
    sums = [summarize("b", bias), summarize("e", erosion), summarize("f", fair), summarize("a", adapt),
            summarize("o", ood), summarize("c", control)]
    cov = coverage(sums)
    # Assert
    assert sums[1].detected_runs == 2 and sums[1].detection_rate == 2 / 3 and sums[1].median_delay == 0
    assert sums[5].false_alarms == 1 and sums[5].expect == "none"
    assert cov == {
        "amplified_bias": "direct",
        "confidence_miscalibration": "none",
        "fairness_collapse": "proxy",
        "adaptation_misalignment": "proxy",
        "out_of_domain_degradation": "none",
        "alignment_erosion": "proxy",
    }
    assert coverage_row(cov, "openpfi") == "| openpfi | direct | none | proxy | proxy | none | proxy |"
