"""Export and chat on the real bundled SmolLM2-135M-Instruct (a dequantized GGUF base)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openpfi.assembly.run_model import load_run_model, run_clients
from openpfi.config import load_config
from openpfi.recipes import federated_sft
from openpfi.recipes.chat import open_session
from openpfi.recipes.export import export

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bundled_run_exports_merged_and_chats(tmp_path: Path) -> None:
    # Prepare: one Ditto round of two clients
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = load_config(ROOT / "examples" / "demo.toml", [
        "data.num_clients=2", "federation.clients_per_round=2", "federation.rounds=1", "client.local_steps=2",
        "client.max_length=64", "client.batch_size=2", "data.max_examples=40", "client.max_eval_examples=4",
        "monitor.enabled=false", 'personalization.method="ditto"', "personalization.personal_steps=2",
    ])  # fmt: skip
    run = federated_sft.start(cfg, tmp_path / "run")
    client = run_clients(run)[0]
    # Execute
    out = export(run.path, tmp_path / "merged", "merged", client=client)
    session = open_session(run.path, client, max_new_tokens=12, temperature=0.0)
    answer = "".join(session.reply("What is the capital of France?"))
    # Assert: the merged folder is a plain float32 model with openpfi's float32 logits
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert "quantization_config" not in (out / "config.json").read_text()
    ours = load_run_model(run.path, client=client, dtype="float32").shared.model
    ids = AutoTokenizer.from_pretrained(out)("Hello, how are you?", return_tensors="pt").input_ids
    with torch.no_grad():
        assert (merged(ids).logits - ours(ids).logits).abs().max() < 1e-3
    assert answer.strip() and session.last.new_tokens > 0
