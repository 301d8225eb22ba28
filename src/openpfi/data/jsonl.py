"""Users' own data: a JSONL file, one JSON object per line.

Each line is a single-turn row (``prompt`` / ``response``) or a multi-turn row
(``messages``), with a client key; an optional label field feeds Dirichlet
partitions (row formats and field names: ``rows.py``). Blank lines are ignored.
A row is corrupt when it is not valid UTF-8 / JSON or ``rows.parse_object``
refuses it. Strict loading (``data.strict = true``) raises on the first corrupt
row, naming the file and line; lenient loading skips corrupt rows and counts them.

Example lines::

    {"client": "alice", "prompt": "Hi!", "response": "Hello, how can I help?"}
    {"client": "bob", "messages": [{"role": "user", "content": "Hi!"},
                                   {"role": "assistant", "content": "Hello!"}]}
"""

from __future__ import annotations

import json
from pathlib import Path

from openpfi.data.rows import DEFAULT_GROUP, BadRow, Fields, parse_object
from openpfi.data.types import Example, LoadResult
from openpfi.errors import UserError

__all__ = ["DEFAULT_GROUP", "Fields", "load", "parse_row", "strict_hint"]


def parse_row(raw: bytes, fields: Fields) -> Example | None:
    """One line as an Example; None for a blank line; raises ``BadRow`` if corrupt."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRow("not valid UTF-8") from None
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadRow(f"invalid JSON ({e.msg} at column {e.colno})") from None
    return parse_object(row, fields)


def strict_hint() -> str:
    return "fix the row, or set data.strict = false to skip corrupt rows (counted in manifest.json)"


def no_rows(where: str, skipped: int, fields: Fields) -> UserError:
    return UserError(
        f"{where} has no usable rows ({skipped} corrupt); each row needs non-empty '{fields.prompt}' and "
        f"'{fields.response}' strings (data.prompt_field, data.response_field) or a '{fields.messages}' list "
        "(data.messages_field)"
    )


def load(path: str, fields: Fields, *, strict: bool = True) -> LoadResult:
    """Read ``path``; see the module docstring for what makes a row corrupt."""
    if not path:
        raise UserError("source 'jsonl' needs a path: set data.path to your .jsonl file")
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise UserError(f"data file not found: {file} (check data.path)")
    examples: list[Example] = []
    skipped = 0
    with file.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                example = parse_row(raw, fields)
            except BadRow as e:
                if strict:
                    raise UserError(f"{file}, line {lineno}: {e}; {strict_hint()}") from None
                skipped += 1
                continue
            if example is not None:
                examples.append(example)
    if not examples:
        raise no_rows(str(file), skipped, fields)
    return LoadResult(examples=examples, skipped_rows=skipped, source_files=[str(file)])
