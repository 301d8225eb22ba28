"""The safety-tuned starting adapter: built once, cached with its hash, loadable as model.adapter."""

from __future__ import annotations

from pathlib import Path

from openpfi.models.loader import sha256_file
from openpfi.models.lora import read_adapter_file
from openpfi.recipes.safety_adapter import SafetySettings, build_safety_adapter


def test_build_caches_and_reports_rates(tmp_path: Path) -> None:
    # Prepare
    s = SafetySettings(model="tiny-random", steps=2, batch_size=2, max_length=48, eval_pairs=4, eval_prompts=4)
    # Execute
    path, digest, rates = build_safety_adapter(s, cache=tmp_path / "adapters")
    again = build_safety_adapter(s, cache=tmp_path / "adapters")
    # Assert
    assert path.is_file() and path.parent.parent == tmp_path / "adapters"
    assert sha256_file(path) == digest and again == (path, digest, rates)
    for who in ("base", "adapter"):
        assert 0 <= rates[who]["refusal_rate"] <= 1 and 0 <= rates[who]["over_refusal_rate"] <= 1
    # every prompt of the monitor's harmful and benign suites (their whole pools at the defaults) is left out of training
    assert rates["excluded_probe_prompts"] == sum(s.probe_sizes.values()) == 367 and rates["train_pairs"]["harmless"] > 50
    assert rates["refusal_judge"]["detector_precision"] is not None
    state = read_adapter_file(str(path))
    assert any("lora_B" in k and float(v.abs().max()) > 0 for k, v in state.items())
