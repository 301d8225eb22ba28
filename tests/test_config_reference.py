"""docs/CONFIG.md lists every config key and is what the field docstrings generate now."""

from __future__ import annotations

from pathlib import Path

from openpfi.config import Config, dump_toml
from openpfi.config.reference import keys, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"


TABLES = ("suite_sizes", "client_items", "server_items", "server_margins")
"""Keys whose value is a table (one key each, not a section)."""


def _leaves(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        section = isinstance(v, dict) and k not in TABLES
        out += _leaves(v, f"{prefix}{k}.") if section else [f"{prefix}{k}"]
    return out


def test_config_md_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/CONFIG.md is stale: run `python -m openpfi.config.reference docs/CONFIG.md`"
    )


def test_every_key_of_the_resolved_config_is_listed_with_a_description() -> None:
    import tomllib

    resolved = _leaves(tomllib.loads(dump_toml(Config())))
    text = DOC.read_text(encoding="utf-8")
    assert resolved and all(f"| `{k}` |" in text for k in resolved), [k for k in resolved if f"`{k}`" not in text]
    assert sorted(resolved) == sorted(k for k, _, _ in keys())
    assert [k for k, info, _ in keys() if not (info.description or "").strip()] == []
