from __future__ import annotations

import pytest
import torch

from openpfi.errors import UserError
from openpfi.models.loader import load_model, pick_dtype, sha256_state
from openpfi.models.registry import resolve


@pytest.mark.parametrize("name", ["gpt-4o", "claude-3-opus", "openai/gpt-4"])
def test_api_only_models_are_refused(name: str):
    with pytest.raises(UserError, match="open weights"):
        resolve(name)


def test_unknown_remote_id_is_refused():
    with pytest.raises(UserError, match="no hub downloads"):
        resolve("HuggingFaceTB/SmolLM2-360M-Instruct")


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        resolve(str(tmp_path))


def test_tiny_random_is_deterministic_and_hashed():
    a = load_model("tiny-random")
    b = load_model("tiny-random")
    assert a.info.sha256 == b.info.sha256
    assert len(a.info.sha256) == 64
    assert a.info.num_parameters < 5_000_000
    assert a.model.config.num_hidden_layers == 2
    assert not any(p.requires_grad for p in a.model.parameters())
    assert sha256_state(a.model.state_dict()) == sha256_state(b.model.state_dict())
    # the SmolLM2 tokenizer and its chat template
    assert "<|im_start|>" in a.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_dtype_policy():
    assert pick_dtype("float32", "cpu") == torch.float32
    assert pick_dtype("bfloat16", "cpu", 64) == torch.bfloat16
    assert pick_dtype("auto", "cpu", 64) == torch.float32  # small matrices: bf16 kernels are slower


def test_sha256_state_changes_with_values():
    s = {"w": torch.zeros(3)}
    t = {"w": torch.tensor([0.0, 0.0, 1e-7])}
    assert sha256_state(s) != sha256_state(t)


def test_a_file_that_is_not_gguf_is_one_clear_error(tmp_path):
    from openpfi.models.loader import load_tokenizer

    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(UserError, match=r"cannot load the tokenizer of .*model.gguf: .*GGUF magic bytes"):
        load_tokenizer(str(bad))


def test_a_folder_without_usable_weights_is_one_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(UserError, match=r"cannot load the tokenizer of "):
        load_model(str(tmp_path))
