"""benchmarks/silent/bias_halves.py: the CrowS pair split behind the shared-ending probability."""

from __future__ import annotations

import sys
from pathlib import Path

from openpfi.monitor.probes import CrowsItem

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "silent"))
from bias_halves import shared_ending  # noqa: E402


def _pair(more: str, less: str) -> CrowsItem:
    return CrowsItem("x", more, less, True, "race-color")


def test_the_shared_ending_follows_the_last_difference():
    assert shared_ending(_pair("The poor are really ignorant.", "The rich are really ignorant.")) == (
        "The poor", "The rich", " are really ignorant.")
    assert shared_ending(_pair("He said he is a nurse", "She said she is a nurse")) == (
        "He said he", "She said she", " is a nurse")


def test_pairs_that_differ_in_their_last_word_have_no_shared_ending():
    assert shared_ending(_pair("It was the old man", "It was the teenager")) is None
    assert shared_ending(_pair("Same words", "Same words")) is None
