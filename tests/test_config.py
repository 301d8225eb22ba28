from __future__ import annotations

from pathlib import Path

import pytest

from openpfi.config import Config, apply_overrides, dump_toml, load_config
from openpfi.errors import UserError


def test_defaults_match_design_keys():
    cfg = load_config(None)
    assert cfg.model.name == "smollm2-135m-instruct"
    assert cfg.lora.r == 8 and cfg.lora.alpha == 16 and cfg.lora.targets == ["q_proj", "v_proj"]
    assert cfg.data.source == "chitchat" and cfg.data.partition == "natural" and cfg.data.num_clients == 8
    assert cfg.federation.rounds == 3 and cfg.federation.strategy == "fedavg"
    assert cfg.client.local_steps == 10 and cfg.client.batch_size == 4 and cfg.client.max_length == 256
    assert cfg.personalization.method == "none" and cfg.alignment.method == "none"


def test_set_overrides_parse_toml_values(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text("seed = 3\n[federation]\nrounds = 5\n")
    cfg = load_config(f, ["federation.rounds=7", "lora.targets=['q_proj']", "model.name=tiny-random"])
    assert cfg.seed == 3
    assert cfg.federation.rounds == 7
    assert cfg.lora.targets == ["q_proj"]
    assert cfg.model.name == "tiny-random"


def test_overrides_do_not_mutate_input():
    raw = {"federation": {"rounds": 1}}
    apply_overrides(raw, ["federation.rounds=2"])
    assert raw == {"federation": {"rounds": 1}}


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["federation.bogus_key=1"], "bogus_key"),
        (["federation.rounds=-3"], "federation.rounds"),
        (["federation.rounds='many'"], "federation.rounds"),
        (["data.partition=random"], "data.partition"),
        (["federation.clients_per_round=20"], "clients_per_round"),
        (["data.source=jsonl"], "data.path"),
        (["noequals"], "section.key=value"),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], needle: str):
    with pytest.raises(UserError) as err:
        load_config(None, overrides)
    msg = str(err.value)
    assert needle in msg
    assert "\n" not in msg


def test_missing_and_invalid_files(tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[federation\nrounds = 2\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(bad)


def test_dump_roundtrip(tmp_path: Path):
    cfg = load_config(None, ["seed=4", "client.lr=0.001"])
    f = tmp_path / "resolved.toml"
    f.write_text(dump_toml(cfg))
    assert load_config(f) == cfg
    assert isinstance(cfg, Config)


def test_a_partial_probe_table_changes_only_the_suites_it_names():
    from openpfi.config import MonitorConfig

    default = MonitorConfig().suite_sizes
    cfg = load_config(None, ["monitor.suite_sizes.bbq=0", "monitor.server_items={crows = 10}"])
    assert cfg.monitor.suite_sizes == {**default, "bbq": 0} and len(default) == 6
    assert cfg.monitor.server_items == {**MonitorConfig().server_items, "crows": 10}
    with pytest.raises(UserError, match=r"unknown probe suites \['nope'\]"):
        load_config(None, ["monitor.client_items={nope = 1}"])
