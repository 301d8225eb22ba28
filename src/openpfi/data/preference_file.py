"""Users' own preference pairs: ``alignment.data``, a JSONL file with one pair per line.

    {"client": "acme", "prompt": "...", "chosen": "...", "rejected": "...", "objective": "helpful"}

The file's clients are the run's clients (``data.num_clients`` must equal their number).
``objective`` names one of ``alignment.objectives``; the multi-objective methods (firm,
scalarized, fmgda) need it on every row, SFT and DPO train on the union and give a row
without it the first configured objective. Each client's pairs are ordered by a seeded hash
and ``floor(data.heldout_fraction * n)`` of them (at least 1, at most n - 1) are its held-out
pairs. Corrupt rows fail with file and line (``data.strict = false``: skipped and counted).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openpfi.data.partition import slug
from openpfi.data.preference import PreferencePair
from openpfi.data.preference_split import ClientPreferences
from openpfi.errors import UserError

MULTI_OBJECTIVE = ("firm", "scalarized", "fmgda")


@dataclass(frozen=True)
class UserPreferences:
    clients: list[ClientPreferences]
    path: str
    sha256: str
    pairs: int
    skipped_rows: int


def _row(raw: bytes, objectives: Sequence[str], need_objective: bool) -> tuple[str, dict[str, str]] | None:
    line = raw.decode("utf-8")  # UnicodeDecodeError is a ValueError: reported with the line
    if not line.strip():
        return None
    row: Any = json.loads(line)
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    out: dict[str, str] = {}
    for key in ("client", "prompt", "chosen", "rejected"):
        value = row.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and key == "client":
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"field '{key}' must be a non-empty string")
        out[key] = value.strip()
    objective = row.get("objective")
    if objective is None:
        if need_objective:
            raise ValueError(f"field 'objective' is missing; the multi-objective methods need one of {list(objectives)}")
        objective = objectives[0]
    if objective not in objectives:
        raise ValueError(f"objective {objective!r} is not in alignment.objectives = {list(objectives)}")
    out["objective"] = objective
    return out.pop("client"), out


def _read(file: Path, objectives: Sequence[str], need_objective: bool, strict: bool) -> tuple[dict[str, list[PreferencePair]], int]:
    by_client: dict[str, list[PreferencePair]] = {}
    skipped = 0
    with file.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                parsed = _row(raw, objectives, need_objective)
                if parsed is None:
                    continue
                client, r = parsed
                pair = PreferencePair(f"{slug(client)}:{lineno}", r["objective"], r["prompt"], r["chosen"],
                                      r["rejected"], file.name, heldout=False)
            except (ValueError, UserError) as err:
                if strict:
                    raise UserError(f"{file}, line {lineno}: {err}; fix the row, or set data.strict = false to "
                                    "skip corrupt rows") from None
                skipped += 1
                continue
            by_client.setdefault(client, []).append(pair)
    return by_client, skipped


def _split(client: str, pairs: list[PreferencePair], objectives: Sequence[str], seed: int,
           heldout_fraction: float) -> ClientPreferences:
    order = sorted(pairs, key=lambda p: hashlib.sha256(f"user-pairs-{seed}:{p.id}".encode()).digest())
    n_held = min(len(order) - 1, max(1, math.floor(heldout_fraction * len(order))))
    held, train = order[:n_held], order[n_held:]
    per = {m: [p for p in train if p.objective == m] for m in objectives}
    mix = tuple(len(ps) / len(train) for ps in per.values())
    return ClientPreferences(slug(client), mix, per, held)


def load_user_preferences(path: str, objectives: Sequence[str], method: str, num_clients: int, seed: int,
                          heldout_fraction: float, strict: bool = True) -> UserPreferences:
    """The clients of ``alignment.data`` (see the module docstring)."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise UserError(f"preference file not found: {file} (check alignment.data)")
    by_client, skipped = _read(file, objectives, method in MULTI_OBJECTIVE, strict)
    if not by_client:
        raise UserError(f"{file} has no usable preference pairs ({skipped} corrupt); each line needs client, "
                        "prompt, chosen and rejected")
    names = sorted(by_client)
    if len(names) != num_clients:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise UserError(f"alignment.data holds {len(names)} clients ({shown}) but data.num_clients = {num_clients}; "
                        f"set data.num_clients = {len(names)} (the file's clients are the run's clients)")
    small = [c for c in names if len(by_client[c]) < 2]
    if small:
        raise UserError(f"client {small[0]!r} in {file} has {len(by_client[small[0]])} pair; every client needs at "
                        "least 2 (1 to train on, 1 held out)")
    ids = [slug(c) for c in names]
    if len(set(ids)) != len(ids):
        raise UserError(f"{file}: client names {names} give the same folder name after lower-casing; rename one")
    clients = [_split(c, by_client[c], objectives, seed, heldout_fraction) for c in names]
    return UserPreferences(clients, str(file), hashlib.sha256(file.read_bytes()).hexdigest(),
                           sum(len(v) for v in by_client.values()), skipped)
