from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from openpfi.errors import UserError
from openpfi.models.loader import load_model
from openpfi.models.lora import adapter_state, attach_lora, load_adapter_state, lora_parameters, read_adapter_file


@pytest.fixture(scope="module")
def model():
    lm = load_model("tiny-random")
    attach_lora(lm.model, 4, 8, ["q_proj", "v_proj"], 0.0, seed=1)
    return lm.model


def test_adapter_keys_shapes_and_dtype(model):
    state = adapter_state(model)
    assert len(state) == 2 * 2 * 2  # layers x targets x (A, B)
    a = state["model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = state["model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert a.shape == (4, 64) and b.shape[1] == 4
    assert a.dtype == torch.float32
    assert torch.count_nonzero(b) == 0  # B starts at zero: the adapter starts as the identity
    params = lora_parameters(model)
    assert set(params) == set(state)
    assert all(p.requires_grad and p.dtype == torch.float32 for p in params.values())


def test_load_roundtrip_and_bad_shapes(model):
    state = adapter_state(model)
    changed = {k: v + 1.0 for k, v in state.items()}
    load_adapter_state(model, changed)
    assert all(torch.equal(adapter_state(model)[k], changed[k]) for k in state)
    bad = dict(changed)
    key = next(iter(bad))
    bad[key] = torch.zeros(3, 3)
    with pytest.raises(UserError, match="shape"):
        load_adapter_state(model, bad)
    with pytest.raises(UserError, match="does not have"):
        load_adapter_state(model, {"nonexistent.lora_A.weight": torch.zeros(1)})
    load_adapter_state(model, state)


def test_unknown_target_is_refused():
    lm = load_model("tiny-random")
    with pytest.raises(UserError, match="lora.targets"):
        attach_lora(lm.model, 4, 8, ["nope_proj"], 0.0, seed=0)


def test_read_adapter_file(tmp_path, model):
    with pytest.raises(UserError, match="not found"):
        read_adapter_file(str(tmp_path / "missing.safetensors"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a readable"):
        read_adapter_file(str(junk))
    good = tmp_path / "adapter_model.safetensors"
    state = adapter_state(model)
    save_file({"base_model.model." + k: v for k, v in state.items()}, str(good))
    loaded = read_adapter_file(str(tmp_path))
    assert set(loaded) == set(state)
