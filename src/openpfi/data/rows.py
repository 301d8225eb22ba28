"""One row of users' own data (a JSONL line or a Hugging Face dataset row) as an :class:`Example`.

Two row formats, told apart by their keys (field names are configurable):

- single-turn: ``{"client": "alice", "prompt": "Hi!", "response": "Hello, how can I help?"}``;
- multi-turn: ``{"client": "alice", "messages": [{"role": "system", "content": "..."},
  {"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}, ...]}``:
  roles ``system``, ``user``, ``assistant``; at least one user and one assistant turn;
  training has loss on the assistant turns only. Turns after the last assistant turn carry
  no loss and are not kept.

A row is corrupt when it is not an object, misses the fields of both formats, has a field
of the wrong type (texts must be strings; client / label strings or integers) or an empty
text. :class:`BadRow` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openpfi.data.types import Example

DEFAULT_GROUP = "all"
"""Group of every row when no client field is used (``client_field=""``)."""
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Fields:
    """Names of the fields to read; an empty client / label / messages field is not read."""

    prompt: str = "prompt"
    response: str = "response"
    client: str = "client"
    label: str = ""
    messages: str = "messages"


class BadRow(Exception):
    """A corrupt row; the message says why."""


def _text(row: dict[str, Any], name: str, key: str) -> str:
    if name not in row:
        raise BadRow(f"field '{name}' ({key}) is missing")
    value = row[name]
    if not isinstance(value, str):
        raise BadRow(f"field '{name}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise BadRow(f"field '{name}' is empty")
    return value.strip()


def _key(row: dict[str, Any], name: str, key: str) -> str:
    if name not in row:
        raise BadRow(f"field '{name}' ({key}) is missing")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRow(f"field '{name}' must be a string or an integer, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise BadRow(f"field '{name}' is empty")
    return text


def parse_turns(value: Any, name: str = "messages") -> tuple[tuple[str, str], ...]:
    """A ``messages`` list as (role, content) pairs up to its last assistant turn."""
    if not isinstance(value, list) or not value:
        raise BadRow(f"field '{name}' must be a non-empty list of {{role, content}} objects")
    turns: list[tuple[str, str]] = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BadRow(f"{name}[{i}] must be an object with string 'role' and 'content'")
        if m["role"] not in ROLES:
            raise BadRow(f"{name}[{i}] has role {m['role']!r}; use one of {', '.join(ROLES)}")
        if not m["content"].strip():
            raise BadRow(f"{name}[{i}] has an empty content")
        turns.append((m["role"], m["content"].strip()))
    roles = [r for r, _ in turns]
    if "assistant" not in roles or "user" not in roles[: roles.index("assistant")]:
        raise BadRow(f"field '{name}' needs a user turn followed by an assistant turn (the assistant turns are learnt)")
    last = len(roles) - 1 - roles[::-1].index("assistant")
    return tuple(turns[: last + 1])


def _keys(row: dict[str, Any], fields: Fields) -> tuple[str, str]:
    group = _key(row, fields.client, "data.client_field") if fields.client else DEFAULT_GROUP
    return group, (_key(row, fields.label, "data.label_field") if fields.label else "")


def parse_object(row: Any, fields: Fields) -> Example:
    """One decoded row as an Example; raises :class:`BadRow` when it is corrupt."""
    if not isinstance(row, dict):
        raise BadRow(f"expected a JSON object, got {type(row).__name__}")
    if fields.messages and row.get(fields.messages) is not None:
        turns = parse_turns(row[fields.messages], fields.messages)
        prompt = next(c for r, c in reversed(turns) if r == "user")
        group, label = _keys(row, fields)
        return Example(prompt=prompt, response=turns[-1][1], group=group, label=label, turns=turns)
    if fields.prompt not in row and fields.response not in row:
        alt = f" or '{fields.messages}' (data.messages_field)" if fields.messages else ""
        raise BadRow(
            f"the row has neither '{fields.prompt}' and '{fields.response}' (data.prompt_field, "
            f"data.response_field){alt}; its keys are {sorted(row)[:8]}"
        )
    prompt = _text(row, fields.prompt, "data.prompt_field")
    response = _text(row, fields.response, "data.response_field")
    group, label = _keys(row, fields)
    return Example(prompt=prompt, response=response, group=group, label=label)
