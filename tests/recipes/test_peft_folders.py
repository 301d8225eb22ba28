"""Every adapter a run writes loads with plain transformers + peft and gives openpfi's own logits.

Global checkpoints, each client's personal folder, and ``openpfi export`` of a personal model,
for every personalization method (FedRep / FedSA-LoRA combine shared and personal parts) and for
the aggregations that keep dense merged deltas (stack; product with keep_merged).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from openpfi.assembly.clients import load_shared
from openpfi.assembly.run_model import choose_model, global_state, model_state, run_clients
from openpfi.config import load_config
from openpfi.recipes import federated_sft
from openpfi.recipes.export import export
from openpfi.runfolder.adapter import read_adapter_folder

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.toml"
TINY = [
    "model.name=tiny-random", "data.num_clients=2", "federation.clients_per_round=2", "federation.rounds=1",
    "client.local_steps=2", "client.max_length=48", "client.batch_size=2", "monitor.enabled=false",
    "data.max_examples=24", "data.min_examples=10", "client.max_eval_examples=4", "lora.r=4", "client.lr=0.01",
]  # fmt: skip
CASES = {
    "none": [], "local": [], "finetune": [], "ditto": [], "fedrep": ['personalization.personal_patterns=["v_proj"]'],
    "fedsa-lora": [], "ffa-lora": [],
    "stack": ['lora.aggregation="stack"', 'personalization.method="fedrep"', 'personalization.personal_patterns=["layers\\\\.1\\\\."]'],
    "product-merged": ['lora.aggregation="product"', "lora.keep_merged=true"],
}  # fmt: skip


@pytest.fixture(scope="module")
def models():
    """openpfi's model (tiny-random + LoRA r=4) and the same base as plain transformers loads it."""
    cfg = load_config(DEMO, TINY)
    shared, _ = load_shared(cfg)
    base = AutoModelForCausalLM.from_pretrained(shared.loaded.info.folder, dtype=torch.float32).eval()
    ids = shared.loaded.tokenizer("Hello, how are you? I cook pasta tonight.", return_tensors="pt").input_ids
    return shared, base, ids


def _ours(shared, state, ids) -> torch.Tensor:
    shared.set_state(state)
    with torch.no_grad():
        return shared.model(ids).logits


def _peft(base, folder: Path, ids) -> torch.Tensor:
    model = PeftModel.from_pretrained(copy.deepcopy(base), str(folder)).eval()
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.filterwarnings("ignore:Found missing adapter keys")  # a B left out of a checkpoint is zero, as peft sets it
@pytest.mark.parametrize("case", list(CASES))
def test_run_adapters_load_with_plain_peft(models, tmp_path: Path, case: str) -> None:
    # Prepare
    shared, base, ids = models
    method = [f'personalization.method="{case}"'] if case in ("none", "local", "finetune", "ditto", "fedrep",
                                                               "fedsa-lora", "ffa-lora") else []
    run = federated_sft.start(load_config(DEMO, [*TINY, *method, *CASES[case]]), tmp_path / "run")
    with torch.no_grad():
        plain = base(ids).logits
    start = read_adapter_folder(run.path / "start").state
    # Execute / Assert: the global checkpoint
    glob = global_state(choose_model(run.path, 1))
    assert (_peft(base, run.checkpoint_folder(1), ids) - _ours(shared, glob, ids)).abs().max() < 1e-5
    if case in ("stack", "product-merged"):
        assert any(k.endswith(".merged_delta") and v.abs().max() > 0 for k, v in glob.items())
    # ... every personal folder a client keeps
    folders = sorted(run.clients_dir.glob("*/personal-round-1"))
    assert bool(folders) == (case not in ("none", "ffa-lora", "product-merged"))
    for f in folders:
        ours = _ours(shared, {**start, **read_adapter_folder(f).state}, ids)
        assert (_peft(base, f, ids) - ours).abs().max() < 1e-5
        assert (ours - plain).abs().max() > 1e-4  # a trained model, not the base
    # ... and the exported personal model (latest global parts + the client's own)
    client = run_clients(run)[0]
    out = export(run.path, tmp_path / "export", "peft", client=client)
    ours = _ours(shared, model_state(choose_model(run.path, client=client), shared), ids)
    assert (_peft(base, out, ids) - ours).abs().max() < 1e-5
    info = json.loads((out / "openpfi-adapter.json").read_text())
    assert info["client"] == client and info["base_sha256"] == shared.layout.base_sha256
