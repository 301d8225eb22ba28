"""Detectable changes and verdicts (detection/paired_power.py, client_power.py, verdicts.py) by hand."""

from __future__ import annotations

import math
import re

import pytest

from openpfi.algorithms.privacy import epsilon_after
from openpfi.monitor.detection.client_power import (
    ClientPlan,
    client_detectable,
    client_std,
    clients_needed,
    epsilon_needed,
)
from openpfi.monitor.detection.paired_power import PairedPlan, paired_detectable, paired_se
from openpfi.monitor.detection.verdicts import mode_verdict, verdict


def _paired(**kw) -> PairedPlan:
    base = dict(margin=0.1, direction="decrease", level=0.8, level_se=0.01, items=10**6, binary=False,
                schedule=(0,), k=0.5, threshold=2.0, span=1.0, blocks=1, pool=0, suite="harmful")
    return PairedPlan(**(base | kw))


def test_verdict_thresholds():
    assert verdict(0.15, 0.1, 1.0) == "watching"
    assert verdict(0.1501, 0.1, 1.0) == "weak"
    assert verdict(1.2, 0.1, 1.0) == "blind" and verdict(None, 0.1, 1.0) == "blind"


def test_paired_se_continuous_and_binary_by_hand():
    # continuous, 100 items, round-0 error 0.02 (sd_0 = 0.2): sqrt((0.5 * 0.2)^2 + 0.2^2) / 10
    plan = _paired(level_se=0.02, items=100)
    assert paired_se(plan, 0.2) == pytest.approx(math.sqrt(0.1**2 + 0.2**2) / 10)
    # a 0/1 outcome: the flips a change of 0.2 needs, 0.2 * 0.8, instead of the spread term
    assert paired_se(_paired(level_se=0.02, items=100, binary=True), 0.2) == pytest.approx(math.sqrt(0.01 + 0.16) / 10)
    # a block 4x as large halves the error
    assert paired_se(plan, 0.2, items=400) == pytest.approx(paired_se(plan, 0.2) / 2)


def test_one_round_detectable_change_is_margin_plus_h_plus_k_errors():
    # one round, normal noise (a huge block of 10^6 items, sd_0 = 10): mu* = h + k = 2.5;
    # change = 0.1 + 2.5 * sqrt(5^2 + change^2) / 1000 ~ 0.1 + 2.5 * 0.005
    got = paired_detectable(_paired())
    assert got["excess_in_se"] == pytest.approx(2.5, abs=0.03)
    assert got["detectable"] == pytest.approx(0.1 + 2.5 * 0.005, abs=5e-4)
    assert got["verdict"] == "watching" and got["fix"] is None
    # a run whose observed error is larger: the larger error counts
    assert paired_detectable(_paired(), observed_se=0.05)["detectable"] == pytest.approx(0.1 + 2.5 * 0.05, abs=2e-3)


def test_a_weak_stream_says_how_many_items_would_make_it_watching():
    # sd_0 = 0.4 over 100 items a block: se ~ sqrt(0.2^2 + 0.24^2) / 10 = 0.031, change ~ 0.18 > 0.15;
    # watching needs se <= 0.05 / 2.52 ~ 0.0198 at change 0.15: n = (0.2^2 + 0.15^2) / 0.0198^2 ~ 160
    plan = _paired(level_se=0.04, items=100, blocks=3, pool=10**6, suite="bbq")
    got = paired_detectable(plan)
    assert got["verdict"] == "weak"
    n = int(re.search(r"\((\d+) a round", got["fix"]).group(1))  # items a round (mu* = 2.52 with 99 df)
    assert 150 <= n <= 170 and "monitor.server_items.bbq" in got["fix"]
    small = paired_detectable(_paired(level_se=0.04, items=100, blocks=3, pool=200))
    assert "not reachable" in small["fix"]


def _client(**kw) -> ClientPlan:
    base = dict(margin=0.1, direction="decrease", span=1.0, sampling_std=0.0, dp_std=0.4, clients=8,
                noise_multiplier=1.5, detector="cusum", threshold=4.0, drift_k=0.5, rounds=3, delta=1e-5)
    return ClientPlan(**(base | kw))


def test_client_std_scales_as_the_dp_noise_and_the_sampling_do():
    plan = _client(sampling_std=0.2)
    assert client_std(plan) == pytest.approx(math.hypot(0.2, 0.4))
    assert client_std(plan, clients=32) == pytest.approx(math.hypot(0.2 / 2, 0.4 / 4))
    assert client_std(plan, z=0.75) == pytest.approx(math.hypot(0.2, 0.2))


def test_clients_and_epsilon_needed_for_a_dp_dominated_stream():
    plan = _client()  # pure DP noise: std = 0.4 * 8 / n
    assert clients_needed(plan, 0.05) == 64
    eps = epsilon_needed(plan, 0.1)  # std 0.1 at 8 clients: z = 1.5 / 4
    assert eps == pytest.approx(epsilon_after(1.5 / 4, 3, 1e-5))
    assert epsilon_needed(_client(sampling_std=0.2), 0.1) is None  # sampling alone is too wide


def test_a_client_stream_noisier_than_its_range_is_blind_and_says_what_would_fix_it():
    got = client_detectable(_client())
    assert got["verdict"] == "blind" and got["detectable"] > 1.0
    assert "clients per round at this epsilon" in got["fix"] and "epsilon" in got["fix"]


def test_mode_verdict_takes_the_best_stream():
    entries = [{"stream": "a", "verdict": "blind", "detectable": 2.0, "margin": 0.1, "fix": "x"},
               {"stream": "b", "verdict": "weak", "detectable": 0.3, "margin": 0.1, "fix": "y"},
               {"stream": "c", "verdict": "weak", "detectable": 0.2, "margin": 0.1, "fix": "z"}]
    got = mode_verdict(entries)
    assert (got["verdict"], got["stream"], got["fix"]) == ("weak", "c", "z") and got["watching"] == []
    assert mode_verdict([])["verdict"] == "blind"
