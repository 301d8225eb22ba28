"""Adapter folders in peft's format: names, merged deltas as extra rank, exact read-back."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from openpfi.runfolder import completion
from openpfi.runfolder.adapter import AdapterLayout, encode, read_adapter_folder, write_adapter_folder

LAYOUT = AdapterLayout(r=1, alpha=2.0, targets=("q_proj",), base_model="/base", base_name="tiny", base_sha256="ab")
A = "m.q_proj.lora_A.weight"
B = "m.q_proj.lora_B.weight"


def test_peft_names_and_config(tmp_path: Path) -> None:
    # Prepare
    state = {A: torch.tensor([[1.0, 2.0]]), B: torch.tensor([[3.0], [4.0]])}
    # Execute
    write_adapter_folder(tmp_path / "f", state, LAYOUT)
    # Assert
    saved = load_file(str(tmp_path / "f" / "adapter_model.safetensors"))
    assert sorted(saved) == ["base_model.model." + A, "base_model.model." + B]
    cfg = json.loads((tmp_path / "f" / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["target_modules"], cfg["task_type"]) == (1, 2.0, ["q_proj"], "CAUSAL_LM")
    assert cfg["base_model_name_or_path"] == "/base" and cfg["rank_pattern"] == {}
    back = read_adapter_folder(tmp_path / "f")
    assert all(torch.equal(back.state[k], state[k]) for k in state) and back.layout == LAYOUT


def test_merged_delta_rides_as_extra_rank_with_the_same_scale() -> None:
    # Prepare: s = alpha / r = 2; a (out 2, in 3) delta, so in > out: A' = [A; D / s], B' = [B, I_2]
    a, b = torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([[1.0], [2.0]])
    d = torch.tensor([[2.0, 4.0, 6.0], [0.0, 2.0, -2.0]])
    # Execute
    cfg, tensors, merged = encode({A: a, B: b, "m.q_proj.merged_delta": d}, LAYOUT)
    a2, b2 = tensors["base_model.model." + A], tensors["base_model.model." + B]
    # Assert
    assert torch.equal(a2, torch.tensor([[1.0, 0.0, 1.0], [1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]))
    assert torch.equal(b2, torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 1.0]]))
    key = r"m\.q_proj"
    assert cfg["rank_pattern"] == {key: 3} and cfg["alpha_pattern"] == {key: 6.0}  # scale 6 / 3 = 2 kept
    assert torch.equal(2.0 * b2 @ a2, 2.0 * b @ a + d)
    assert torch.equal(merged["m.q_proj"], d)


def test_tall_delta_uses_an_identity_a_and_reads_back_exactly(tmp_path: Path) -> None:
    # Prepare: (out 3, in 2): in <= out, so A' = [A; I_2], B' = [B, D / s]
    state = {A: torch.tensor([[0.5, -1.0]]), B: torch.tensor([[1.0], [0.0], [3.0]]),
             "m.q_proj.merged_delta": torch.tensor([[2.0, 0.0], [0.0, 4.0], [1.0, 1.0]])}
    # Execute
    write_adapter_folder(tmp_path / "f", state, LAYOUT)
    back = read_adapter_folder(tmp_path / "f")
    raw = load_file(str(tmp_path / "f" / "adapter_model.safetensors"))
    # Assert
    assert torch.equal(raw["base_model.model." + A][1:], torch.eye(2))
    assert torch.equal(raw["base_model.model." + B][:, 1:], state["m.q_proj.merged_delta"] / 2.0)
    assert sorted(back.state) == sorted(state)
    assert all(torch.equal(back.state[k], state[k]) for k in state)  # bit for bit (resume)


def test_own_keys_and_completion() -> None:
    # Prepare: FFA-like (B trained, A frozen at a non-zero init) and FedSA-like (A trained, B zero)
    start = {A: torch.ones(1, 2), B: torch.zeros(2, 1), "n.v_proj.lora_A.weight": torch.ones(1, 2),
             "n.v_proj.lora_B.weight": torch.zeros(2, 1)}
    ffa = {B: torch.ones(2, 1), "n.v_proj.lora_B.weight": torch.ones(2, 1)}
    fedsa = {A: torch.full((1, 2), 3.0), "n.v_proj.lora_A.weight": torch.full((1, 2), 3.0)}
    # Execute / Assert: the frozen A completes FFA; FedSA's zero B is left out (peft starts B at 0)
    assert sorted(completion(start, ffa)) == sorted([A, "n.v_proj.lora_A.weight"])
    assert completion(start, fedsa) == {}
    assert completion(start, {}) == {}  # local: nothing the server trains, every B zero
