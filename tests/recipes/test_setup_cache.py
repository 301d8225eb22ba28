"""The round-0 evaluation cache: reused for the same inputs, recomputed for any other."""

import torch

from openpfi.assembly.setup_cache import cached_setup, setup_key

MODEL = {"name": "m", "sha256": "ab", "dtype": "bfloat16"}
SUITES = {"server:bbq": "11", "client:bbq": "22"}
SETTINGS = {"ood_max_nll": 8.0}


def _state(x: float) -> dict[str, torch.Tensor]:
    return {"a": torch.full((2, 2), x)}


def test_same_inputs_reuse_the_result_and_any_change_recomputes(tmp_path, monkeypatch):
    # Prepare
    monkeypatch.setenv("OPENPFI_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls), "nan": float("nan")}

    key = setup_key(MODEL, _state(0), _state(1), SUITES, SETTINGS)
    # Act
    first = cached_setup(key, compute)
    again = cached_setup(setup_key(MODEL, _state(0), _state(1), dict(reversed(SUITES.items())), SETTINGS), compute)
    # Assert: computed once; the key ignores dict order
    assert first["value"] == again["value"] == 1 and len(calls) == 1
    # Assert: a different start adapter, model, suite or setting gives another key
    others = [
        setup_key(MODEL, _state(0), _state(2), SUITES, SETTINGS),
        setup_key({**MODEL, "dtype": "float32"}, _state(0), _state(1), SUITES, SETTINGS),
        setup_key(MODEL, _state(0), _state(1), {**SUITES, "server:bbq": "12"}, SETTINGS),
        setup_key(MODEL, _state(0), _state(1), SUITES, {"ood_max_nll": 6.0}),
    ]
    assert len({key, *others}) == 5


def test_unreadable_entry_is_recomputed_and_rewritten(tmp_path, monkeypatch):
    # Prepare: a truncated cache file
    monkeypatch.setenv("OPENPFI_CACHE", str(tmp_path))
    key = setup_key(MODEL, _state(0), _state(0), SUITES, SETTINGS)
    path = tmp_path / "monitor-setup" / f"{key}.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"value": ')
    # Act
    out = cached_setup(key, lambda: {"value": 7})
    # Assert
    assert out == {"value": 7} and cached_setup(key, lambda: {"value": 8}) == {"value": 7}
