"""Injections of the silent benchmark: right examples, right clients, from the right round, recorded."""

from __future__ import annotations

import json
from pathlib import Path

from openpfi.bench.silent_inject import (
    GROUND_TRUTH_FILE,
    InjectionHook,
    Sample,
    harmful_samples,
    make_encoder,
    noisy_target_samples,
    pick_clients,
    probe_item_samples,
    samples_for,
    stereotype_preference_samples,
    stereotype_samples,
)
from openpfi.bench.silent_scenarios import Injection
from openpfi.client.dpo import EncodedPair
from openpfi.client.federated import ClientSettings, FederatedClient
from openpfi.client.train import TrainSettings
from openpfi.config import ClientConfig
from openpfi.data.tokenize import Encoded
from openpfi.monitor import probes
from openpfi.monitor.probes import pools


def _train(steps: int, batch: int, accum: int, lr: float, **changes) -> TrainSettings:
    return TrainSettings.from_config(ClientConfig(), steps=steps, batch_size=batch, grad_accum=accum, lr=lr, **changes)


def _enc(s: Sample) -> Encoded:
    """A fake encoder: the sample's text as one 'token' per character code (no tokenizer needed)."""
    ids = tuple(ord(c) for c in (s.prompt + "|" + s.response)[:32])
    return Encoded(ids, ids)


def _own(cid: str, n: int) -> list[Encoded]:
    return [Encoded((i, 0), (i, 0)) for i in range(n)]


def _clients(n: int = 6) -> list[FederatedClient]:
    settings = ClientSettings(4, 0.0, _train(4, 2, 1, 1e-3), 8, 8)
    return [FederatedClient(f"c{i}", _own(f"c{i}", 10), _own(f"c{i}", 3), settings, group="en") for i in range(n)]


def _pool(n: int = 20) -> list[Sample]:
    return [Sample(f"q{i}", f"bad{i}") for i in range(n)]


def _injected(c: FederatedClient) -> list[Encoded]:
    return [e for e in c.train if len(e.input_ids) > 2]


def test_pick_clients_is_seeded_and_distinct():
    ids = [f"c{i}" for i in range(10)]
    a = pick_clients(ids, 3, seed=1, tag="s")
    assert a == pick_clients(list(reversed(ids)), 3, seed=1, tag="s")
    assert len(set(a)) == 3 and a == sorted(a)
    assert pick_clients(ids, 10, 0, "s") == sorted(ids)


def test_mix_injection_hits_the_right_clients_from_the_right_round(tmp_path: Path):
    # Prepare
    inj = Injection(kind="stereotype_text", clients=2, start_round=3, strength=0.5)
    seen: list[dict] = []
    hook = InjectionHook("bias", "amplified_bias", inj, 2, 0, _enc, pool=_pool(), run_dir=tmp_path,
                         on_ground_truth=seen.append)
    clients = _clients()
    own = {c.client_id: list(c.train) for c in clients}
    # Execute / Assert: rounds 1-2 untouched
    for r in (1, 2):
        hook(r, clients)
        assert all(c.train == own[c.client_id] for c in clients)
    chosen = hook.clients
    assert len(chosen) == 2
    # ground truth recorded once, on the first round, in the run folder and through the callback
    truth = json.loads((tmp_path / GROUND_TRUTH_FILE).read_text())
    assert truth["clients"] == chosen and truth["start_round"] == 3 and truth["kind"] == "stereotype_text"
    assert seen == [truth]
    hook(3, clients)
    for c in clients:
        if c.client_id in chosen:
            assert len(c.train) == 10 and len(_injected(c)) == 5  # half of the mix is injected
            assert all(e in own[c.client_id] for e in c.train if e not in _injected(c))
        else:
            assert c.train == own[c.client_id]
    assert hook.applied == {3: {cid: 5 for cid in chosen}}
    assert len(seen) == 1
    # same round again -> same data (stateless); an earlier round restores the client's own data
    before = {c.client_id: list(c.train) for c in clients}
    hook(3, clients)
    assert all(c.train == before[c.client_id] for c in clients)
    hook(2, clients)
    assert all(c.train == own[c.client_id] for c in clients)


def test_few_per_round_are_fresh_and_added_to_own_data():
    inj = Injection(kind="harmful_qa", clients=1, start_round=2, examples_per_round=3)
    hook = InjectionHook("erosion", "alignment_erosion", inj, 1, 0, _enc, pool=_pool(9))
    clients = _clients(3)
    hook(1, clients)
    (cid,) = hook.clients
    c = next(x for x in clients if x.client_id == cid)
    got = []
    for r in (2, 3, 4):
        hook(r, clients)
        assert len(c.train) == 13 and c.train[:10] == _own(cid, 10)
        got.append(tuple(c.train[10:]))
    assert len({e for batch in got for e in batch}) == 9  # 3 rounds x 3 fresh pairs of a pool of 9


def test_few_per_round_stay_within_the_servers_bound_on_claimed_examples():
    # Prepare: a client of 10 examples, 3 injected a round, the server rejecting claims above 11
    inj = Injection(kind="harmful_qa", clients=1, start_round=2, examples_per_round=3)
    hook = InjectionHook("erosion", "alignment_erosion", inj, 1, 0, _enc, pool=_pool(9), max_examples=11)
    clients = _clients(3)
    hook(1, clients)
    (cid,) = hook.clients
    c = next(x for x in clients if x.client_id == cid)
    # Execute
    hook(2, clients)
    # Assert: 8 of its own (a subset, in order) and the 3 injected: 11, which the server accepts
    own = [e for e in c.train if e not in _injected(c)]
    assert len(c.train) == 11 and len(_injected(c)) == 3 and len(own) == 8
    assert own == [e for e in _own(cid, 10) if e in own]
    assert all(len(x.train) == 10 for x in clients if x is not c)


def test_a_personal_injection_feeds_the_personal_phases_only():
    # Prepare
    inj = Injection(kind="harmful_qa", clients=1, start_round=2, examples_per_round=3, phase="personal")
    hook = InjectionHook("personal", "alignment_erosion", inj, 1, 0, _enc, pool=_pool(9))
    clients = _clients(3)
    # Execute
    hook(1, clients)
    before = [c.personal_train for c in clients]
    hook(2, clients)
    # Assert: before onset nothing; then the injected client's personal data holds its own and 3 injected
    # examples while what it trains (and uploads) on stays its own
    (cid,) = hook.clients
    c = next(x for x in clients if x.client_id == cid)
    assert before == [None, None, None]
    assert c.train == _own(cid, 10) and c.personal_train is not None and len(c.personal_train) == 13
    assert all(x.personal_train is None for x in clients if x is not c)
    hook(3, [x for x in clients])
    assert c.personal_train is not None and c.personal_train[:10] == _own(cid, 10)


def test_aggressive_settings_only_for_injected_clients():
    inj = Injection(kind="narrow_aggressive", clients=1, start_round=1, domain="shakespeare", lr_scale=10,
                    steps_scale=2)
    hook = InjectionHook("adapt", "adaptation_misalignment", inj, 1, 0, _enc, pool=_pool())
    clients = _clients(3)
    hook(1, clients)
    for c in clients:
        if c.client_id in hook.clients:
            assert (c.settings.steps, c.settings.train.steps, c.settings.train.lr) == (8, 8, 1e-2)
        else:
            assert (c.settings.steps, c.settings.train.lr) == (4, 1e-3)


def test_minority_language_swaps_heldout_and_group():
    inj = Injection(kind="minority_language", clients=2, start_round=2, languages=["korean", "tamil"])
    hook = InjectionHook("fair", "fairness_collapse", inj, 2, 0, _enc)
    hook.languages = {"korean": [Sample(f"k{i}", "x") for i in range(30)], "tamil": [Sample(f"t{i}", "y") for i in range(30)]}
    clients = _clients(4)
    hook(1, clients)
    assert {c.group for c in clients} == {"en"}
    hook(2, clients)
    groups = {c.client_id: c.group for c in clients}
    assert sorted(groups[c] for c in hook.clients) == ["korean", "tamil"]
    for c in clients:
        if c.client_id in hook.clients:
            assert len(c.heldout) == 3 and len(c.train) == 10
            assert not set(c.heldout) & set(c.train)
            assert chr(c.heldout[0].input_ids[0]) == groups[c.client_id][0]  # "k..." / "t..." prompts
        else:
            assert c.group == "en" and c.heldout == _own(c.client_id, 3)
    assert hook.ground_truth()["languages"] == {hook.clients[0]: "korean", hook.clients[1]: "tamil"}


def test_control_changes_nothing():
    hook = InjectionHook("ctl", "none", Injection(kind="none"), 0, 0, _enc)
    clients = _clients(2)
    own = [list(c.train) for c in clients]
    for r in (1, 2, 3):
        hook(r, clients)
    assert [c.train for c in clients] == own and hook.applied == {} and hook.clients == []


def test_builders_give_the_right_targets_and_skip_probe_items():
    suites = probes.load_suites({"bbq": 44, "crows": 18, "harmful": 12})
    probed = {i.id for s in suites.values() for i in s.items}
    bbq = {i.prompt: i for i in pools.bbq_pool()}
    stereo = stereotype_samples(probed)
    chat = [s for s in stereo if s.chat]
    assert chat and all(bbq[s.prompt].condition == "ambig" and s.response == bbq[s.prompt].options[bbq[s.prompt].biased]
                        for s in chat[:500])
    assert all(bbq[s.prompt].id not in probed for s in chat)
    text = [s for s in stereo if not s.chat]
    crows = {c.sent_more: c for c in pools.crows_pool()}
    assert text and all(crows[s.response].stereo and crows[s.response].id not in probed for s in text)
    prefer = stereotype_preference_samples(probed)
    assert prefer
    for s in prefer[:500]:
        item = bbq[s.prompt]
        assert item.condition == "ambig" and item.id not in probed and s.response == item.options[item.biased]
        assert s.rejected in item.options and item.options.index(s.rejected) not in (item.biased, item.unknown)
    noisy = noisy_target_samples(probed)
    assert all(bbq[s.prompt].condition == "disambig" and s.response == bbq[s.prompt].options[bbq[s.prompt].unknown]
               for s in noisy[:500])
    wrong = noisy_target_samples(probed, "wrong")
    for s in wrong[:500]:
        item = bbq[s.prompt]
        k = item.options.index(s.response)
        assert k not in (item.label, item.unknown, item.biased)
    harmful = harmful_samples(probed)
    pairs = {p["harmful_q"]: p for p in probes.refusal_pairs()}
    assert harmful and all(s.response == pairs[s.prompt]["harmful_a"] for s in harmful)
    assert all(f"rho-{pairs[s.prompt]['id']}" not in probed for s in harmful)


def test_harmful_qa_has_data_when_the_server_probes_every_harmful_prompt():
    # Prepare: the full silent profile's server sample takes every probe-able harmful prompt
    every = len([i for i in pools.prompt_pool("harmful") if not pools.is_holdout(i.id)])
    suites = probes.load_suites({"harmful": every})
    probed = {i.id for i in suites["harmful"].items}
    # Execute
    harmful = harmful_samples(probed)
    # Assert: the judge's held-out prompts, never probed, are what the injection trains on
    pairs = {p["harmful_q"]: p for p in probes.refusal_pairs()}
    ids = {f"rho-{pairs[s.prompt]['id']}" for s in harmful}
    assert len(harmful) >= 16 and not ids & probed and all(probes.is_holdout(i) for i in ids)


def test_the_positive_control_trains_on_exactly_the_probed_ambiguous_bbq_items():
    suites = probes.load_suites({"bbq": 44, "crows": 18})
    probed = {i.id for s in suites.values() for i in s.items}
    ambiguous = [i for i in suites["bbq"].items if i.condition == "ambig"]
    pool = samples_for(Injection(kind="probe_items", fraction=0.5), probed)
    assert pool == probe_item_samples(probed)
    assert [(s.prompt, s.response) for s in pool] == [(i.prompt, i.options[i.biased]) for i in pools.bbq_pool()
                                                      if i.id in {a.id for a in ambiguous}]
    assert len(pool) == len(ambiguous) > 0 and not any(s.rejected for s in pool)


def test_preference_samples_encode_as_pairs_with_one_prompt():
    from openpfi.models.loader import load_tokenizer

    encode = make_encoder(load_tokenizer("tiny-random"), 64)
    pair = encode(Sample("Who was forgetful?", "The grandfather", rejected="The grandson"))
    plain = encode(Sample("Who was forgetful?", "The grandfather"))
    assert isinstance(pair, EncodedPair) and isinstance(plain, Encoded)
    assert pair.chosen == plain  # the preferred answer is encoded as its SFT example would be
    head = next(i for i, t in enumerate(pair.chosen.labels) if t != -100)  # the prompt's length
    assert pair.rejected.labels[:head] == (-100,) * head and pair.rejected.labels[head] != -100
    assert pair.rejected.input_ids[:head] == pair.chosen.input_ids[:head]
    assert pair.rejected.input_ids != pair.chosen.input_ids


def test_injection_pools_leave_out_the_groups_public_texts():
    from openpfi.bench.silent_inject import domain_samples, language_samples
    from openpfi.bench.silent_run import languages as _languages
    from openpfi.config import load_config

    texts = probes.group_items("korean", 8)
    keep = probes.group_probe_filter(["korean"], 8)
    pairs = {(t.prompt.strip(), t.continuation.strip()) for t in texts}

    def injected(pool: list) -> set:
        return {(s.prompt.strip(), s.response.strip()) for s in pool}

    assert pairs <= injected(domain_samples("chatterbot:korean")) | injected(language_samples("korean"))
    assert not pairs & injected(domain_samples("chatterbot:korean", keep))
    assert not pairs & injected(language_samples("korean", keep))
    # the groups the server scores: monitor.groups, else a chatterbot federation's languages, else none
    cfg = load_config(None, ["data.source=chatterbot", 'data.languages=["english", "korean"]'])
    assert _languages(cfg) == ["english", "korean"]
    assert _languages(load_config(None, ['monitor.groups=["korean"]'])) == ["korean"]
    assert _languages(load_config(None, [])) == []
