"""Client-side alignment on tiny-random: DPO maths, the adapter-free reference, FIRM, FMGDA uploads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from openpfi.algorithms.mgda import regularized_simplex_weights
from openpfi.algorithms.state import nbytes
from openpfi.client.align import AlignClient, AlignSettings, firm_weights, restricted_preference
from openpfi.client.dpo import (
    ReferenceCache,
    adapters_disabled,
    dpo_batch,
    dpo_loss,
    encode_pair,
    mixed_batch_loss,
    sequence_logprobs,
)
from openpfi.client.federated import ClientSettings, FederatedClient, SharedModel
from openpfi.client.train import TrainSettings, token_nll
from openpfi.config import ClientConfig
from openpfi.data.preference import PreferencePair
from openpfi.data.tokenize import collate
from openpfi.models.loader import load_model


def _train(steps: int, batch: int, accum: int, lr: float, **changes) -> TrainSettings:
    return TrainSettings.from_config(ClientConfig(), steps=steps, batch_size=batch, grad_accum=accum, lr=lr, **changes)


@pytest.fixture(scope="module")
def shared() -> SharedModel:
    return SharedModel(load_model("tiny-random"), r=4, alpha=8, targets=["q_proj", "v_proj"], dropout=0.0, seed=0)


def _pairs(shared: SharedModel, objective: str, n: int) -> list:
    tok = shared.loaded.tokenizer
    out = []
    for i in range(n):
        p = PreferencePair(f"{objective}-{i}", "harmless" if objective == "harmless" else "helpful",
                           f"Question {i} about {objective}?", f"Good answer {i}.", f"Bad answer number {i}!",
                           "test", False)
        out.append(encode_pair(tok, p, objective, 48))
    return out


def _settings(steps: int = 2, batch: int = 2) -> ClientSettings:
    return ClientSettings(steps, 0.0, _train(steps, batch, 1, 5e-3), eval_batch_size=8, max_eval_examples=8)


def _client(shared: SharedModel, method: str, pairs: dict, beta: float = 0.1, p=(0.5, 0.5)) -> AlignClient:
    align = AlignSettings(method, ("harmless", "helpful"), tuple(p), beta, 0.1)
    ref = ReferenceCache(shared.model, shared.pad_id)
    return AlignClient("c0", pairs, [], _settings(), align, ref)


def test_dpo_loss_hand_numbers() -> None:
    # Prepare: beta 0.5; r_c = 0.5 (-1 + 1.5) = 0.25, r_r = 0.5 (-2 + 1.5) = -0.25
    pc, pr, rc, rr = (torch.tensor([x]) for x in (-1.0, -2.0, -1.5, -1.5))
    # Execute
    loss, r_c, r_r = dpo_loss(pc, pr, rc, rr, beta=0.5)
    # Assert: -log sigmoid(0.5)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-0.5)), rel=1e-6)
    assert float(r_c) == pytest.approx(0.25) and float(r_r) == pytest.approx(-0.25)


def test_sequence_logprobs_is_minus_summed_token_nll(shared: SharedModel) -> None:
    pairs = _pairs(shared, "harmless", 2)
    seqs = [pairs[0].chosen, pairs[1].rejected]
    with torch.no_grad():
        both = sequence_logprobs(shared.model, seqs, shared.pad_id)
        singles = [float(token_nll(shared.model, collate([s], shared.pad_id), reduction="sum")) for s in seqs]
    np.testing.assert_allclose(both.numpy(), [-x for x in singles], rtol=2e-3)


def test_reference_is_the_base_model_with_adapters_off(shared: SharedModel) -> None:
    # Prepare: a non-zero adapter changes the policy
    seqs = [p.chosen for p in _pairs(shared, "harmless", 3)]
    shared.set_state(shared.initial_state)
    with torch.no_grad():
        base = sequence_logprobs(shared.model, seqs, shared.pad_id)
    bumped = {k: v + 0.05 for k, v in shared.initial_state.items()}
    shared.set_state(bumped)
    flags = [p.requires_grad for p in shared.model.parameters()]
    # Execute
    with torch.no_grad():
        policy = sequence_logprobs(shared.model, seqs, shared.pad_id)
        with adapters_disabled(shared.model):
            off = sequence_logprobs(shared.model, seqs, shared.pad_id)
    ref = ReferenceCache(shared.model, shared.pad_id).get(seqs)
    # Assert
    assert not torch.allclose(policy, base, atol=1e-3)
    torch.testing.assert_close(off, base)
    torch.testing.assert_close(ref, base.float())
    assert [p.requires_grad for p in shared.model.parameters()] == flags  # restored exactly
    assert shared.get_state().keys() == bumped.keys()  # adapter weights untouched
    shared.set_state(shared.initial_state)


def test_untrained_adapter_has_zero_margin(shared: SharedModel) -> None:
    shared.set_state(shared.initial_state)
    pairs = _pairs(shared, "helpful", 4)
    ref = ReferenceCache(shared.model, shared.pad_id)
    ref.fill([s for p in pairs for s in (p.chosen, p.rejected)])
    with torch.no_grad():
        out = dpo_batch(shared.model, pairs, ref, 0.1, shared.pad_id)
    assert float(out.loss) == pytest.approx(math.log(2), abs=1e-3)
    assert out.accuracy == pytest.approx(0.5, abs=0.26)  # ties count one half


def test_restricted_preference() -> None:
    np.testing.assert_allclose(restricted_preference([0.2, 0.8], [True, True]), [0.2, 0.8])
    np.testing.assert_allclose(restricted_preference([0.2, 0.3, 0.5], [True, False, True]), [2 / 7, 0, 5 / 7])
    np.testing.assert_allclose(restricted_preference([0.0, 1.0], [True, False]), [1.0, 0.0])  # p is 0 there


def test_firm_weights_match_the_solver() -> None:
    # g1 = (2, 0) on one tensor, g2 = (0, 1): G = diag(4, 1)
    g1 = [torch.tensor([2.0]), torch.tensor([0.0])]
    g2 = [torch.tensor([0.0]), torch.tensor([1.0])]
    p = np.array([0.7, 0.3])
    np.testing.assert_allclose(firm_weights([g1, g2], p, 0.0).weights, [0.2, 0.8], atol=1e-12)
    # beta is relative: 1.0 * tr(G) / M = 2.5
    np.testing.assert_allclose(firm_weights([g1, g2], p, 1.0).weights,
                               regularized_simplex_weights(np.diag([4.0, 1.0]), p, 2.5), atol=1e-12)


def test_firm_fit_uploads_one_adapter_and_fmgda_one_per_objective(shared: SharedModel) -> None:
    # Prepare
    pairs = {"harmless": _pairs(shared, "harmless", 4), "helpful": _pairs(shared, "helpful", 4)}
    start = shared.initial_state
    # Execute
    firm = _client(shared, "firm", pairs).fit(shared, start, 1, 0)
    fmgda = _client(shared, "fmgda", pairs).fit(shared, start, 1, 0)
    # Assert
    assert firm.extra == {} and set(firm.delta) == set(start)
    assert set(fmgda.extra) == {"harmless", "helpful"} and fmgda.delta == {}
    assert firm.bytes_up == nbytes(start) and fmgda.bytes_up == 2 * firm.bytes_up
    lam = firm.scalars["lambda_harmless"] + firm.scalars["lambda_helpful"]
    assert lam == pytest.approx(1.0) and -1 <= firm.scalars["grad_cosine"] <= 1
    assert fmgda.scalars["steps"] == 2 * firm.scalars["steps"]  # same forward/backward count
    assert any(float(v.abs().max()) > 0 for v in firm.delta.values())


def test_large_beta_is_scalarization(shared: SharedModel) -> None:
    pairs = {"harmless": _pairs(shared, "harmless", 4), "helpful": _pairs(shared, "helpful", 4)}
    start = shared.initial_state
    firm = _client(shared, "firm", pairs, beta=1e12, p=(0.8, 0.2)).fit(shared, start, 1, 0)
    scal = _client(shared, "scalarized", pairs, p=(0.8, 0.2)).fit(shared, start, 1, 0)
    assert firm.scalars["lambda_harmless"] == pytest.approx(0.8, abs=1e-6)
    for k in start:
        torch.testing.assert_close(firm.delta[k], scal.delta[k], atol=1e-4, rtol=1e-3)


def test_client_without_an_objective_trains_on_the_others(shared: SharedModel) -> None:
    pairs = {"harmless": _pairs(shared, "harmless", 4), "helpful": []}
    for method in ("firm", "scalarized", "dpo", "sft"):
        u = _client(shared, method, pairs).fit(shared, shared.initial_state, 1, 0)
        assert u.scalars["missing_helpful"] == 1.0 and u.scalars["missing_harmless"] == 0.0
        assert u.scalars["pairs_helpful"] == 0.0 and math.isfinite(u.scalars["train_loss"])
    u = _client(shared, "fmgda", pairs).fit(shared, shared.initial_state, 1, 0)
    assert set(u.extra) == {"harmless"}
    firm = _client(shared, "firm", pairs).fit(shared, shared.initial_state, 1, 0)
    assert firm.scalars["lambda_harmless"] == 1.0 and "lambda_helpful" not in firm.scalars


def test_fit_is_deterministic(shared: SharedModel) -> None:
    pairs = {"harmless": _pairs(shared, "harmless", 4), "helpful": _pairs(shared, "helpful", 4)}
    a = _client(shared, "firm", pairs).fit(shared, shared.initial_state, 2, 5)
    b = _client(shared, "firm", pairs).fit(shared, shared.initial_state, 2, 5)
    for k in a.delta:
        torch.testing.assert_close(a.delta[k], b.delta[k])


def test_mixed_batch_loss_is_the_count_weighted_mean_of_sft_and_dpo(shared: SharedModel) -> None:
    # Prepare: 1 SFT example and 2 pairs in one micro-batch
    shared.set_state({k: v + 0.03 for k, v in shared.initial_state.items()})
    pairs = _pairs(shared, "helpful", 2)
    example = _pairs(shared, "harmless", 1)[0].chosen
    ref = ReferenceCache(shared.model, shared.pad_id)
    # Execute
    with torch.no_grad():
        mixed, tokens, targets = mixed_batch_loss(shared.model, [example, *pairs], ref, 0.1, shared.pad_id)
        sft = token_nll(shared.model, collate([example], shared.pad_id))
        dpo = dpo_batch(shared.model, pairs, ref, 0.1, shared.pad_id)
    # Assert
    assert float(mixed) == pytest.approx((float(sft) + 2 * float(dpo.loss)) / 3, rel=1e-5)
    assert tokens == len(example.input_ids) + dpo.tokens
    assert targets == example.num_targets + sum(p.chosen.num_targets + p.rejected.num_targets for p in pairs)
    with pytest.raises(TypeError):
        mixed_batch_loss(shared.model, [example, "text"], ref, 0.1, shared.pad_id)
    shared.set_state(shared.initial_state)


def test_a_client_trains_its_preference_pairs_with_dpo(shared: SharedModel) -> None:
    """A plain FederatedClient whose data are pairs: after fit, chosen gains on rejected
    (r(chosen) - r(rejected) > 0 on every training pair), which SFT alone would not target."""
    # Prepare
    pairs = _pairs(shared, "helpful", 4)
    client = FederatedClient("c0", pairs, [], ClientSettings(6, 0.0, _train(6, 2, 1, 2e-2), 8, 8))
    # Execute
    update = client.fit(shared, shared.initial_state, 1, 0)
    shared.set_state({k: shared.initial_state[k] + update.delta[k] for k in update.delta})
    with torch.no_grad():
        out = dpo_batch(shared.model, pairs, ReferenceCache(shared.model, shared.pad_id), 0.1, shared.pad_id)
    # Assert
    assert update.scalars["train_loss"] < math.log(2)  # DPO starts at log 2 with a zero adapter
    assert out.accuracy == 1.0 and float(out.loss) < math.log(2)
    shared.set_state(shared.initial_state)
