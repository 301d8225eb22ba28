"""The retrieval data set: the answer of every question is in its client's notes and in no prompt."""

from __future__ import annotations

import json
from pathlib import Path

from openpfi.bench.rag_data import build_memory_set
from openpfi.data.documents import read_documents


def test_memory_set_answers_live_only_in_the_clients_notes(tmp_path: Path) -> None:
    # Execute
    data, docs = build_memory_set(tmp_path, categories=("Age", "Religion"))
    # Assert
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    assert {r["client"] for r in rows} == {"Age", "Religion"} and len(rows) == 50  # 25 templates each
    for client, folder in (("Age", "age"), ("Religion", "religion")):
        notes = [d.text for d in read_documents(docs / folder)]
        assert len(notes) == 25
        for r in (r for r in rows if r["client"] == client):
            assert r["response"] in r["prompt"]  # one of the three options offered
            assert not any(n.strip() in r["prompt"] for n in notes)  # the context is never in a prompt
    again, _ = build_memory_set(tmp_path / "again", categories=("Age", "Religion"))
    assert again.read_text() == data.read_text()  # deterministic
