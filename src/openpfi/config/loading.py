"""Read, override, validate and write the TOML config; bad input is one line naming the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from openpfi.config.root import Config
from openpfi.errors import UserError


def _parse_value(text: str) -> Any:
    """Parse the right side of ``--set key=value`` as a TOML value, else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a raw config dict (copy)."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected section.key=value, e.g. --set federation.rounds=5")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise UserError(f"--set {key}: {p!r} is not a section")
            node[p] = dict(nxt)
            node = node[p]
        node[parts[-1]] = _parse_value(value.strip())
    return out


def _format_error(err: ValidationError, origin: str) -> str:
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"] if not isinstance(x, int)) or "config"
    if e["type"] == "extra_forbidden":
        return f"{origin}: unknown key '{loc}'; remove it or check its spelling (the keys: src/openpfi/config/)"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "value_error":
        return f"{origin}: {msg}"
    got = e.get("input")
    return f"{origin}: {loc} = {got!r} is invalid ({msg}); fix the value in the file or with --set {loc}=..."


def from_dict(raw: dict[str, Any], origin: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(_format_error(err, origin)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a TOML config (or only defaults when path is None) and apply overrides."""
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        p = Path(path)
        origin = str(p)
        if not p.is_file():
            raise UserError(f"config file not found: {p}; pass an existing .toml file (e.g. examples/demo.toml)")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise UserError(f"{p}: not valid TOML ({err}); fix the syntax at that line") from None
        except UnicodeDecodeError:
            raise UserError(f"{p}: not a UTF-8 text file; pass a TOML config") from None
    if overrides:
        raw = apply_overrides(raw, overrides)
        origin = f"{origin} (with --set)"
    return from_dict(raw, origin)


def dump_toml(cfg: Config) -> str:
    """The resolved config (all defaults filled in) as TOML."""
    return tomli_w.dumps(cfg.model_dump(mode="json"))
