"""Users' own data: a JSONL file, one JSON object per line.

Each line needs a prompt, a response and a client key (field names are
configurable); an optional label field feeds Dirichlet partitions. Blank lines
are ignored. A row is corrupt when it is not valid UTF-8 / JSON, is not an
object, misses a field, has a field of the wrong type (prompt / response must
be strings; client / label strings or integers) or an empty prompt / response.
Strict loading raises on the first corrupt row, naming the file and line;
lenient loading skips corrupt rows and counts them.

Example line::

    {"client": "alice", "prompt": "Hi!", "response": "Hello, how can I help?"}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openpfi.data.types import Example, LoadResult
from openpfi.errors import UserError

DEFAULT_GROUP = "all"
"""Group of every row when no client field is used (``client_field=""``)."""


@dataclass(frozen=True)
class Fields:
    """Names of the JSON fields to read; an empty client / label field is not read."""

    prompt: str = "prompt"
    response: str = "response"
    client: str = "client"
    label: str = ""


class _BadRow(Exception):
    """A corrupt row; the message says why."""


def _text(row: dict[str, Any], name: str) -> str:
    if name not in row:
        raise _BadRow(f"field '{name}' is missing")
    value = row[name]
    if not isinstance(value, str):
        raise _BadRow(f"field '{name}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise _BadRow(f"field '{name}' is empty")
    return value.strip()


def _key(row: dict[str, Any], name: str) -> str:
    if name not in row:
        raise _BadRow(f"field '{name}' is missing")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _BadRow(
            f"field '{name}' must be a string or an integer, got {type(value).__name__}"
        )
    key = str(value).strip()
    if not key:
        raise _BadRow(f"field '{name}' is empty")
    return key


def parse_row(raw: bytes, fields: Fields) -> Example | None:
    """One line as an Example; None for a blank line; raises _BadRow if corrupt."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _BadRow("not valid UTF-8") from None
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise _BadRow(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise _BadRow(f"expected a JSON object, got {type(row).__name__}")
    return Example(
        prompt=_text(row, fields.prompt),
        response=_text(row, fields.response),
        group=_key(row, fields.client) if fields.client else DEFAULT_GROUP,
        label=_key(row, fields.label) if fields.label else "",
    )


def load(path: str, fields: Fields, *, strict: bool = True) -> LoadResult:
    """Read ``path``; see the module docstring for what makes a row corrupt."""
    if not path:
        raise UserError(
            "source 'jsonl' needs a path: set data.path to your .jsonl file"
        )
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise UserError(f"data file not found: {file} (check data.path)")
    examples: list[Example] = []
    skipped = 0
    with file.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                example = parse_row(raw, fields)
            except _BadRow as e:
                if strict:
                    raise UserError(
                        f"{file}, line {lineno}: {e}; fix the row or load leniently "
                        "(strict = false) to skip corrupt rows"
                    ) from None
                skipped += 1
                continue
            if example is not None:
                examples.append(example)
    if not examples:
        raise UserError(
            f"{file} has no usable rows ({skipped} corrupt); each line needs a JSON object with "
            f"non-empty '{fields.prompt}' and '{fields.response}' strings"
        )
    return LoadResult(examples=examples, skipped_rows=skipped, source_files=[str(file)])
