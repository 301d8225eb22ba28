from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from openpfi.client.train import TrainSettings, evaluate_loss, lr_factor, token_nll, train_local
from openpfi.config import ClientConfig
from openpfi.data.tokenize import IGNORE, collate, encode_chat
from openpfi.models.loader import load_model
from openpfi.models.lora import adapter_state, attach_lora, load_adapter_state, lora_parameters


def _train(steps: int, batch: int, accum: int, lr: float, **changes) -> TrainSettings:
    return TrainSettings.from_config(ClientConfig(), steps=steps, batch_size=batch, grad_accum=accum, lr=lr, **changes)


@pytest.fixture(scope="module")
def lm():
    lm = load_model("tiny-random")
    attach_lora(lm.model, 4, 8, ["q_proj", "v_proj"], 0.0, seed=0)
    return lm


@pytest.fixture(scope="module")
def data(lm):
    pairs = [("hello there", "general kenobi"), ("what is two plus two", "four"), ("name a colour", "blue")]
    return [encode_chat(lm.tokenizer, p, r, 48) for p, r in pairs]


def test_lr_schedule_cases():
    # 1. warm-up, 2. constant, 3. linear, 4. cosine
    assert lr_factor(0, 10, "constant", 3) == pytest.approx(0.25)
    assert lr_factor(2, 10, "constant", 3) == pytest.approx(0.75)
    assert lr_factor(5, 10, "constant", 0) == 1.0
    assert lr_factor(5, 10, "linear", 0) == pytest.approx(0.5)
    assert lr_factor(0, 10, "cosine", 0) == pytest.approx(1.0)
    assert lr_factor(5, 10, "cosine", 0) == pytest.approx(0.5)
    assert lr_factor(10, 10, "cosine", 0) == pytest.approx(0.0, abs=1e-12)


def test_target_only_head_equals_full_loss(lm, data):
    batch = collate(data, lm.tokenizer.pad_token_id)
    ours = token_nll(lm.model, batch)
    with torch.no_grad():
        logits = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE)
    assert float(ours.detach()) == pytest.approx(float(ref), rel=1e-5)


def test_training_lowers_loss_and_is_seeded(lm, data):
    start = adapter_state(lm.model)
    params = lora_parameters(lm.model)
    settings = _train(15, 3, 1, 5e-3)
    before, _ = evaluate_loss(lm.model, data, 4, lm.tokenizer.pad_token_id)
    r1 = train_local(lm.model, params, data, settings, lm.tokenizer.pad_token_id, seed=7)
    after, n = evaluate_loss(lm.model, data, 4, lm.tokenizer.pad_token_id)
    assert after < before - 0.05
    assert n == sum(e.num_targets - (e.labels[0] != IGNORE) for e in data)
    assert r1.steps == 15 and r1.tokens > 0 and 0 < r1.compute_seconds <= r1.seconds
    first = adapter_state(lm.model)
    load_adapter_state(lm.model, start)
    train_local(lm.model, params, data, settings, lm.tokenizer.pad_token_id, seed=7)
    again = adapter_state(lm.model)
    assert all(torch.equal(first[k], again[k]) for k in first)
    load_adapter_state(lm.model, start)


def test_grad_accum_matches_bigger_batch_loss_scale(lm, data):
    start = adapter_state(lm.model)
    params = lora_parameters(lm.model)
    res = train_local(lm.model, params, data, _train(1, 1, 3, 1e-3, max_grad_norm=0), lm.tokenizer.pad_token_id, 0)
    assert math.isfinite(res.mean_loss) and res.tokens == sum(len(e.input_ids) for e in data)
    load_adapter_state(lm.model, start)
