"""A client's own documents for retrieval: a folder of .txt, .md and .jsonl files.

- ``.txt`` / ``.md``: one document per file (UTF-8 text);
- ``.jsonl``: one document per line: ``{"text": "..."}``, or a conversation row in either
  training format (``prompt`` / ``response`` or ``messages``, see rows.py), whose turns are
  the document.

Subfolders are read too; hidden files and folders (a leading ``.``) are not. Bad input is one
clear line each: a missing or empty folder, a file of another kind, a file that cannot be read,
a binary (NUL bytes) or non-UTF-8 file, an empty document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from openpfi.data.rows import BadRow, Fields, parse_object
from openpfi.data.types import Example
from openpfi.errors import UserError

SUFFIXES = (".txt", ".md", ".jsonl")


@dataclass(frozen=True)
class Document:
    source: str
    """Where it comes from: a path relative to the folder (``notes/a.md``, ``chat.jsonl:3``), or
    ``train:<i>`` for a client's i-th training example."""
    text: str


def _read_text(file: Path) -> str:
    try:
        raw = file.read_bytes()
    except OSError as err:
        raise UserError(f"rag.documents: {file} cannot be read ({err.strerror or err}); fix its permissions "
                        "or remove it from the folder") from None
    if b"\x00" in raw:
        raise UserError(f"rag.documents: {file} is a binary file, not text; remove it or convert it to .txt")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"rag.documents: {file} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None


def _jsonl_documents(file: Path, rel: str) -> list[Document]:
    out = []
    for lineno, line in enumerate(_read_text(file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if isinstance(row, dict) and isinstance(row.get("text"), str) and row["text"].strip():
                text = row["text"].strip()
            else:
                text = parse_object(row, Fields(client="")).text()
        except (json.JSONDecodeError, BadRow) as err:
            why = f"invalid JSON ({err.msg})" if isinstance(err, json.JSONDecodeError) else str(err)
            raise UserError(f"rag.documents: {file}, line {lineno}: {why}; a line needs a non-empty \"text\", "
                            "or prompt/response or messages") from None
        out.append(Document(f"{rel}:{lineno}", text))
    return out


def read_documents(folder: str | Path) -> list[Document]:
    """Every document under ``folder``, in path order (see the module docstring)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"rag.documents: folder not found: {root}; create it with this client's .txt / .md / "
                        ".jsonl files or set rag.documents = \"\" (the client's training texts)")
    docs: list[Document] = []
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root).as_posix()
        if any(part.startswith(".") for part in file.relative_to(root).parts) or file.is_dir():
            continue
        if file.suffix.lower() not in SUFFIXES:
            raise UserError(f"rag.documents: {file} is not a .txt, .md or .jsonl file; remove it or convert it")
        if file.suffix.lower() == ".jsonl":
            docs += _jsonl_documents(file, rel)
            continue
        text = _read_text(file).strip()
        if not text:
            raise UserError(f"rag.documents: {file} is empty; remove it or write the document into it")
        docs.append(Document(rel, text))
    if not docs:
        raise UserError(f"rag.documents: {root} holds no documents (.txt, .md or .jsonl); add this client's "
                        "documents or set rag.documents = \"\" (the client's training texts)")
    return docs


def training_documents(examples: list[Example]) -> list[Document]:
    """A client's training examples as its default documents (``train:<i>``)."""
    return [Document(f"train:{i}", e.text()) for i, e in enumerate(examples)]
