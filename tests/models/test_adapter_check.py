"""model.adapter and adapter folders: a mismatch of base, rank, scale or keys is named, never loaded as zeros."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from openpfi.client.federated import SharedModel
from openpfi.errors import UserError
from openpfi.models.adapter_check import read_checked_adapter
from openpfi.models.loader import load_model
from openpfi.runfolder.adapter import AdapterLayout, write_adapter_folder


@pytest.fixture(scope="module")
def shared() -> SharedModel:
    return SharedModel(load_model("tiny-random"), 4, 8.0, ["q_proj", "v_proj"], 0.0, 0)


def _trained(shared: SharedModel) -> dict[str, torch.Tensor]:
    return {k: v + 0.5 if "lora_B" in k else v for k, v in shared.initial_state.items()}


def test_an_openpfi_peft_folder_loads_as_it_was_written(shared: SharedModel, tmp_path: Path) -> None:
    state = _trained(shared)
    write_adapter_folder(tmp_path / "a", state, shared.layout)
    got = read_checked_adapter(str(tmp_path / "a"), shared.layout, shared.params)
    assert sorted(got) == sorted(state) and all(torch.equal(got[k], state[k]) for k in state)


def test_another_base_is_named(shared: SharedModel, tmp_path: Path) -> None:
    other = AdapterLayout(4, 8.0, ("q_proj", "v_proj"), base_name="smollm2-135m-instruct", base_sha256="f" * 64)
    write_adapter_folder(tmp_path / "a", _trained(shared), other)
    with pytest.raises(UserError, match="belongs to base model 'smollm2-135m-instruct'.*this run's model is 'tiny-random'"):
        read_checked_adapter(str(tmp_path / "a"), shared.layout, shared.params)


def test_a_hub_config_for_another_base_is_named(shared: SharedModel, tmp_path: Path) -> None:
    write_adapter_folder(tmp_path / "a", _trained(shared), AdapterLayout(4, 8.0, ("q_proj",), base_model="org/other-model"))
    (tmp_path / "a" / "openpfi-adapter.json").unlink()  # as peft itself writes a folder
    with pytest.raises(UserError, match="trained on base model 'org/other-model'"):
        read_checked_adapter(str(tmp_path / "a"), shared.layout, shared.params)


def test_another_rank_and_alpha_are_named(shared: SharedModel, tmp_path: Path) -> None:
    write_adapter_folder(tmp_path / "r8", {}, AdapterLayout(8, 8.0, ("q_proj",), base_name="tiny-random"))
    with pytest.raises(UserError, match="rank r = 8, but lora.r = 4; set lora.r = 8"):
        read_checked_adapter(str(tmp_path / "r8"), shared.layout, shared.params)
    write_adapter_folder(tmp_path / "a32", {}, AdapterLayout(4, 32.0, ("q_proj",), base_name="tiny-random"))
    with pytest.raises(UserError, match="lora_alpha = 32, but lora.alpha = 8"):
        read_checked_adapter(str(tmp_path / "a32"), shared.layout, shared.params)


def test_hand_written_folder_whose_names_match_nothing_is_refused(shared: SharedModel, tmp_path: Path) -> None:
    # Prepare: the names one level too shallow (no "model." inside peft's prefix): peft would load
    # nothing and warn "missing adapter keys", leaving every B at zero
    folder = tmp_path / "hand"
    folder.mkdir()
    save_file({"base_model.model." + k.removeprefix("model."): v.contiguous() for k, v in _trained(shared).items()},
              str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                            "target_modules": ["q_proj", "v_proj"]}))
    # Execute / Assert
    with pytest.raises(UserError, match="holds none of this model's LoRA tensors"):
        read_checked_adapter(str(folder), shared.layout, shared.params)


def test_missing_b_and_wrong_shape_are_refused(shared: SharedModel, tmp_path: Path) -> None:
    state = {k: v for k, v in _trained(shared).items() if "lora_A" in k}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "a.safetensors"))
    with pytest.raises(UserError, match="without its lora_B"):
        read_checked_adapter(str(tmp_path / "a.safetensors"), shared.layout, shared.params)
    wide = {k: torch.zeros(4, 99) if "lora_A" in k else v for k, v in _trained(shared).items()}
    save_file({k: v.contiguous() for k, v in wide.items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(UserError, match="another base model"):
        read_checked_adapter(str(tmp_path / "w.safetensors"), shared.layout, shared.params)
