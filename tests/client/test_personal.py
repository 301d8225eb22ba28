"""Personalization policies with a fake trainer (exact), and their client side on tiny-random."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openpfi.client.federated import ClientSettings, FederatedClient, SharedModel
from openpfi.client.personal import (
    POLICIES,
    KeySplit,
    PersonalPolicy,
    check_split,
    compose,
    make_policy,
)
from openpfi.client.store import ClientStore
from openpfi.client.train import TrainResult, TrainSettings
from openpfi.config import ClientConfig, PersonalizationConfig
from openpfi.errors import UserError
from openpfi.runfolder.adapter import AdapterLayout


def _train(steps: int, batch: int, accum: int, lr: float, **changes) -> TrainSettings:
    return TrainSettings.from_config(ClientConfig(), steps=steps, batch_size=batch, grad_accum=accum, lr=lr, **changes)

QA, QB = "l0.q_proj.lora_A.weight", "l0.q_proj.lora_B.weight"
VA, VB = "l0.v_proj.lora_A.weight", "l0.v_proj.lora_B.weight"
KEYS = [QA, QB, VA, VB]
MERGED = "l0.q_proj.merged_delta"


class FakeTrainer:
    """Adds 1 to every trained tensor; records each call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, start, keys, steps, tag, anchor=None, mu=0.0):
        self.calls.append({"start": start, "keys": set(keys), "steps": steps, "tag": tag, "anchor": anchor, "mu": mu})
        return {k: v + 1 if k in keys else v.clone() for k, v in start.items()}, TrainResult(3, 1.0, 10, 5, 0.1)


def _states() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    initial = {k: torch.full((2, 2), 0.0) for k in KEYS}
    global_ = {k: torch.full((2, 2), 10.0) for k in KEYS}
    return initial, global_


def _fit(method: str, personal=None, settings: PersonalizationConfig | None = None, global_=None):
    policy = make_policy(method, settings)
    initial, g = _states()
    g = global_ if global_ is not None else g
    split = policy.split(KEYS)
    train = FakeTrainer()
    out = policy.fit(train, split, initial, g, personal)
    delta = {k: out.state[k] - out.start[k] for k in split.shared}
    return policy, split, train, out, delta


def test_every_config_method_has_one_policy() -> None:
    from typing import get_args

    from openpfi.config import PersonalizationConfig

    methods = get_args(PersonalizationConfig.model_fields["method"].annotation)
    assert set(methods) == set(POLICIES)
    with pytest.raises(UserError, match="unknown"):
        make_policy("fedbn")


def test_fedavg_shares_everything_and_keeps_nothing() -> None:
    policy, split, train, out, delta = _fit("none")
    assert split == KeySplit(shared=frozenset(KEYS))
    assert all(torch.equal(d, torch.ones(2, 2)) for d in delta.values())
    assert out.personal is None and not policy.personalized
    assert train.calls[0]["start"][QA][0, 0] == 10.0  # starts from the global model


def test_local_uploads_nothing_and_continues_its_own_adapter() -> None:
    policy, split, train, out, delta = _fit("local")
    assert not policy.federated and delta == {} and split.personal == frozenset(KEYS)
    assert torch.equal(out.personal[QA], torch.ones(2, 2))  # initial (0) + 1, the global model ignored
    _, _, _, out2, _ = _fit("local", personal=out.personal)
    assert torch.equal(out2.personal[QA], torch.full((2, 2), 2.0))


def test_fedsa_shares_a_and_keeps_b() -> None:
    policy, split, train, out, delta = _fit("fedsa-lora")
    assert split.shared == {QA, VA} and split.personal == {QB, VB}
    assert set(delta) == {QA, VA}
    start = train.calls[0]["start"]
    assert start[QA][0, 0] == 10.0 and start[QB][0, 0] == 0.0  # global A, own (initial) B
    assert set(out.personal) == {QB, VB} and out.personal[QB][0, 0] == 1.0
    _, _, train2, _, _ = _fit("fedsa-lora", personal={QB: torch.full((2, 2), 5.0), VB: torch.full((2, 2), 5.0)})
    assert train2.calls[0]["start"][QB][0, 0] == 5.0


def test_ffa_trains_only_b_and_keeps_a_at_its_init() -> None:
    policy, split, train, out, delta = _fit("ffa-lora")
    assert split.shared == {QB, VB} and split.frozen == {QA, VA} and not split.personal
    assert train.calls[0]["keys"] == {QB, VB}
    assert out.state[QA][0, 0] == 0.0  # A from the init, whatever the server holds
    assert set(delta) == {QB, VB} and out.personal is None


def test_fedrep_split_by_pattern_and_fedrep_phases() -> None:
    settings = PersonalizationConfig(personal_patterns=("v_proj",))
    policy, split, train, out, delta = _fit("fedrep", settings=settings)
    assert split.personal == {VA, VB} and split.shared == {QA, QB}
    assert [c["keys"] for c in train.calls] == [{QA, QB, VA, VB}]  # FedPer: jointly
    assert set(delta) == {QA, QB} and set(out.personal) == {VA, VB}
    rep = PersonalizationConfig(personal_patterns=("v_proj",), head_steps=2)
    _, _, train, out, delta = _fit("fedrep", settings=rep)
    assert [(c["keys"], c["steps"], c["tag"]) for c in train.calls] == [({VA, VB}, 2, "head"), ({QA, QB}, 0, "body")]
    assert torch.equal(delta[QA], torch.ones(2, 2))  # the head phase leaves the shared part alone
    assert torch.equal(out.personal[VA], torch.ones(2, 2))


def test_ditto_trains_the_global_then_the_personal_adapter_with_the_pull() -> None:
    settings = PersonalizationConfig(ditto_lambda=0.7, personal_steps=4)
    own = {k: torch.full((2, 2), 3.0) for k in KEYS}
    policy, split, train, out, delta = _fit("ditto", personal=own, settings=settings)
    assert [c["tag"] for c in train.calls] == ["fit", "ditto"]
    g_call, p_call = train.calls
    assert g_call["start"][QA][0, 0] == 10.0 and g_call["mu"] == 0.0
    assert p_call["start"][QA][0, 0] == 3.0  # the personal adapter continues
    assert p_call["anchor"][QA][0, 0] == 10.0 and p_call["mu"] == 0.7 and p_call["steps"] == 4
    assert torch.equal(delta[QA], torch.ones(2, 2))  # the upload is the global model's update
    assert out.personal[QA][0, 0] == 4.0
    assert policy.personal_model(train, split, *_states(), out.personal)[QA][0, 0] == 4.0
    # first participation: the personal adapter starts from the global one
    _, _, train, _, _ = _fit("ditto", settings=settings)
    assert train.calls[1]["start"][QA][0, 0] == 10.0


def test_finetune_fine_tunes_the_new_global_model_for_evaluation() -> None:
    policy = make_policy("finetune", PersonalizationConfig(personal_steps=5))
    initial, g = _states()
    split = policy.split(KEYS)
    train = FakeTrainer()
    own = policy.personal_model(train, split, initial, g, None)
    assert own[QA][0, 0] == 11.0 and train.calls[0]["steps"] == 5 and train.calls[0]["tag"] == "finetune"
    assert make_policy("none").personal_model(train, split, initial, g, None) is None


def test_merged_deltas_pass_through_from_the_global_state() -> None:
    initial, g = _states()
    g[MERGED] = torch.ones(2, 2)
    for method in ("none", "fedsa-lora", "fedrep"):
        policy = make_policy(method, PersonalizationConfig(personal_patterns=("v_proj",)))
        split = policy.split([*KEYS, MERGED])
        assert MERGED not in split.shared | split.personal | split.frozen
        assert torch.equal(compose(split, initial, g, None)[MERGED], torch.ones(2, 2))


def test_check_split_refuses_bad_patterns() -> None:
    with pytest.raises(UserError, match="'k_proj' matches no LoRA parameter"):
        check_split(make_policy("fedrep", PersonalizationConfig(personal_patterns=("v_proj", "k_proj"))), KEYS)
    with pytest.raises(UserError, match="leaves no parameter shared"):
        check_split(make_policy("fedrep", PersonalizationConfig(personal_patterns=("lora",))), KEYS)
    assert check_split(make_policy("local"), KEYS).shared == frozenset()


# -- the client side on the tiny model ----------------------------------------------------------


@pytest.fixture(scope="module")
def shared() -> SharedModel:
    from openpfi.models.loader import load_model

    return SharedModel(load_model("tiny-random"), r=4, alpha=8.0, targets=["q_proj", "v_proj"], dropout=0.0, seed=0)


def _client(shared: SharedModel, method: str, tmp: Path | None = None, rank: int | None = None) -> FederatedClient:
    from openpfi.data.tokenize import encode_chat

    tok = shared.loaded.tokenizer
    data = [encode_chat(tok, f"hello {i}", f"answer number {i} is fine", 48) for i in range(8)]
    settings = ClientSettings(2, 0.0, _train(2, 2, 1, 1e-2), 4, 4)
    c = FederatedClient(
        "c0",
        data,
        data[:4],
        settings,
        store=ClientStore(tmp) if tmp else None,
        policy=make_policy(method, PersonalizationConfig(personal_patterns=("v_proj",))),
        rank=rank,
        model_rank=4,
    )
    return c


def _global(shared: SharedModel, policy: PersonalPolicy) -> dict[str, torch.Tensor]:
    split = policy.split(shared.params)
    return {k: shared.initial_state[k] for k in split.shared}


def test_ffa_client_leaves_a_frozen_and_restores_requires_grad(shared: SharedModel) -> None:
    c = _client(shared, "ffa-lora")
    upd = c.fit(shared, _global(shared, c.policy), 1, 0)
    assert upd.delta and all(k.endswith("lora_B.weight") for k in upd.delta)
    assert any(float(v.abs().sum()) > 0 for v in upd.delta.values())
    for k, p in shared.params.items():
        if k.endswith("lora_A.weight"):
            assert torch.equal(p.detach(), shared.initial_state[k])
        assert p.requires_grad


def test_fedsa_client_keeps_b_in_its_folder_and_reloads_it(shared: SharedModel, tmp_path: Path) -> None:
    c = _client(shared, "fedsa-lora", tmp_path)
    upd = c.fit(shared, _global(shared, c.policy), 1, 0)
    assert all(k.endswith("lora_A.weight") for k in upd.delta)
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert saved == ["figures.json", "personal-round-1"]
    again = _client(shared, "fedsa-lora", tmp_path)
    again.restore(1)
    assert set(again.personal) == set(c.personal)
    assert all(torch.equal(again.personal[k], c.personal[k]) for k in c.personal)
    res = c.evaluate(shared, _global(shared, c.policy))
    assert res.personal_loss is not None and res.personal_loss != res.loss
    # the client's own figures of round 1 stay in its folder (the simulation's per-client view)
    own = ClientStore(tmp_path).figures()[1]
    assert own == {"train_loss": upd.scalars["train_loss"], "tokens_per_s": upd.scalars["tokens_per_s"],
                   "eval_loss": res.loss, "eval_ppl": pytest.approx(res.perplexity),
                   "personal_loss": res.personal_loss}


def test_store_keeps_the_two_newest_versions(tmp_path: Path) -> None:
    store = ClientStore(tmp_path)
    layout = AdapterLayout(1, 2.0, ("q_proj",))
    shared_a = {"m.q_proj.lora_A.weight": torch.ones(1, 2)}
    for r in (2, 5, 9):
        store.save(r, {"m.q_proj.lora_B.weight": torch.tensor([[float(r)]])}, shared_a, layout)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["personal-round-5", "personal-round-9"]
    assert float(store.load(8)["m.q_proj.lora_B.weight"]) == 5.0  # a resume from round 8 still finds its state
    assert set(store.load(9)) == {"m.q_proj.lora_B.weight"}  # the shared A completes the folder, not the state


def test_low_rank_client_trains_only_its_components(shared: SharedModel) -> None:
    c = _client(shared, "none", rank=2)
    upd = c.fit(shared, dict(shared.initial_state), 1, 0)
    for k, d in upd.delta.items():
        assert (d.shape[0] if k.endswith("lora_A.weight") else d.shape[1]) == 2  # uploads rank-2 factors
    for k, p in shared.params.items():  # the components beyond rank 2 stayed exactly zero
        tail = p.detach()[2:] if k.endswith("lora_A.weight") else p.detach()[:, 2:]
        assert torch.count_nonzero(tail) == 0


def test_peft_scale_and_merged_delta_in_the_forward_pass(shared: SharedModel) -> None:
    # h = W0 x + D x + (alpha/r) B A x on one adapted module
    prefix = "model.layers.0.self_attn.q_proj"
    module = dict(shared.model.named_modules())[prefix]
    a_key, b_key = f"{prefix}.lora_A.weight", f"{prefix}.lora_B.weight"
    gen = torch.Generator().manual_seed(0)
    state = dict(shared.initial_state)
    state[b_key] = torch.randn(state[b_key].shape, generator=gen)
    d = torch.randn(state[b_key].shape[0], state[a_key].shape[1], generator=gen)
    x = torch.randn(3, state[a_key].shape[1], generator=gen)
    base = module.base_layer
    w0 = base.weight.float()
    with torch.no_grad():
        shared.set_state(state)
        y = module(x.to(w0.dtype if base.weight.dtype == torch.float32 else base.weight.dtype)).float()
        expected = x @ w0.T + (8.0 / 4) * x @ (state[b_key] @ state[a_key]).T
        assert torch.allclose(y, expected, atol=0.1, rtol=0.05)
        shared.set_state({**state, f"{prefix}.merged_delta": d})
        y2 = module(x.to(base.weight.dtype)).float()
        assert torch.allclose(y2 - y, x @ d.T, atol=0.1, rtol=0.05)
        shared.set_state(state)  # a state without merged deltas clears them
        assert torch.equal(module(x.to(base.weight.dtype)).float(), y)
