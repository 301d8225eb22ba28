"""One round on the real bundled SmolLM2-135M-Instruct (dequantized GGUF, cached as safetensors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openpfi.config import load_config
from openpfi.recipes import federated_sft

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_one_round_on_bundled_model(tmp_path: Path):
    cfg = load_config(
        ROOT / "examples" / "demo.toml",
        [
            "data.num_clients=2", "federation.clients_per_round=2", "federation.rounds=1", "client.local_steps=2",
            "client.max_length=64", "client.batch_size=2", "data.max_examples=40", "client.max_eval_examples=8",
            "monitor.enabled=false",
        ],
    )
    run = federated_sft.start(cfg, tmp_path / "run")
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["model"]["name"] == "smollm2-135m-instruct"
    assert manifest["model"]["licence"] == "Apache-2.0"
    assert manifest["model"]["num_parameters"] > 100_000_000
    row = run.read_metrics()[-1]
    # a pretrained instruct model predicts chat replies far better than chance (ln 49152 = 10.8)
    assert 1.0 < row["eval_loss_mean"] < 7.0
    assert row["global_delta_norm"] > 0
