"""Client-local retrieval: chunking within the embedder's limit, search, incremental rebuild, token budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openpfi.client.retrieval import STATE, Chunk, Passage, RetrievalIndex, augment, chunk_document, within_budget
from openpfi.data.documents import Document, read_documents, training_documents
from openpfi.data.types import Example
from openpfi.errors import UserError
from openpfi.models.embedder import MAX_TOKENS

DOCS = [
    Document("pets.txt", "My dog Bruno is a four year old beagle who loves long walks in the park."),
    Document("car.md", "The car is a blue 2015 Toyota Corolla; its next service is due in March."),
    Document("work.txt", "I work as a nurse at the Riverside hospital, mostly on night shifts."),
]


def test_a_document_longer_than_the_embedder_limit_is_chunked_not_cut(embedder) -> None:
    # Prepare
    text = " ".join(f"sentence {i} tells about item number {i}." for i in range(120))
    doc = Document("long.txt", text)
    # Execute
    chunks = chunk_document(doc, embedder, size=64, overlap=16)
    # Assert
    assert len(embedder.token_spans(text)) > MAX_TOKENS and len(chunks) > 1
    assert all(len(embedder.token_spans(c.text)) <= 64 for c in chunks)
    assert chunks[0].text.startswith("sentence 0 ") and chunks[-1].text.endswith("item number 119.")
    for a, b in zip(chunks, chunks[1:], strict=False):  # consecutive chunks share their overlap
        assert a.text[-20:] in b.text
    assert [c.part for c in chunks] == list(range(len(chunks)))


def test_search_finds_the_document_that_answers(embedder, tmp_path: Path) -> None:
    index = RetrievalIndex(tmp_path / "r", embedder, 128, 32)
    index.build(DOCS)
    found, embed_s, search_s = index.search("When does my Toyota need servicing?", 2)
    assert [p.chunk.source for p in found][0] == "car.md"
    assert found[0].score > found[1].score and embed_s > 0 and search_s >= 0


def test_rebuild_embeds_only_changed_documents_and_reloads_from_the_store(embedder, tmp_path: Path) -> None:
    # Prepare
    folder = tmp_path / "r"
    first = RetrievalIndex(folder, embedder, 128, 32).build(DOCS)
    changed = [DOCS[0], Document("car.md", "The car is now a red bicycle."), Document("new.txt", "Fresh note.")]
    # Execute
    again = RetrievalIndex(folder, embedder, 128, 32).build(DOCS)
    second = RetrievalIndex(folder, embedder, 128, 32).build(changed)
    other_chunking = RetrievalIndex(folder, embedder, 64, 8).build(changed)
    # Assert
    assert (first.chunks, first.embedded, first.removed) == (3, 3, 0)
    assert (again.embedded, again.removed) == (0, 0)
    assert (second.chunks, second.embedded, second.removed) == (3, 2, 2)  # car and work gone, car and new in
    assert other_chunking.embedded == 3
    state = json.loads((folder / STATE).read_text())
    assert sorted(state["documents"]) == ["car.md", "new.txt", "pets.txt"]


def test_budget_keeps_the_best_passages_that_fit() -> None:
    # Prepare: a word counter; the head costs 10 words, each passage 1 + its words
    words = lambda s: len(s.split())  # noqa: E731
    ps = [Passage(Chunk("a", 0, "one two three four"), 0.9), Passage(Chunk("b", 0, "x " * 20), 0.8),
          Passage(Chunk("c", 0, "five six"), 0.7)]
    # Execute
    used = within_budget(ps, words, budget=10 + 5 + 3)
    # Assert: a (5) fits, b (21) does not, c (3) still fits
    assert [p.chunk.source for p in used] == ["a", "c"]
    assert augment("Q?", used) == ("Passages from your own documents (use them if they help):\n"
                                  "[1] one two three four\n[2] five six\n\nQ?")
    assert augment("Q?", []) == "Q?"


def test_documents_folder_formats(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("Alpha text.")
    (tmp_path / "sub" / "b.md").write_text("# Beta\nnotes")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "Gamma"}) + "\n\n" +
                                      json.dumps({"prompt": "Q", "response": "A"}) + "\n")
    (tmp_path / ".hidden").write_text("ignored")
    docs = read_documents(tmp_path)
    assert [(d.source, d.text) for d in docs] == [("a.txt", "Alpha text."), ("c.jsonl:1", "Gamma"),
                                                 ("c.jsonl:3", "Q\nA"), ("sub/b.md", "# Beta\nnotes")]
    assert training_documents([Example("Hi", "Hello", "g")]) == [Document("train:0", "Hi\nHello")]


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: None, "holds no documents (.txt, .md or .jsonl)"),
    (lambda d: (d / "x.bin").write_bytes(b"\x00\x01"), "is not a .txt, .md or .jsonl file"),
    (lambda d: (d / "x.txt").write_bytes(b"ab\x00cd"), "is a binary file, not text"),
    (lambda d: (d / "x.txt").write_bytes(b"caf\xe9"), "is not UTF-8 text (byte 3)"),
    (lambda d: (d / "x.txt").symlink_to(d / "gone.txt"), "cannot be read"),
    (lambda d: (d / "x.txt").write_text("  \n"), "x.txt is empty"),
    (lambda d: (d / "x.jsonl").write_text("{bad\n"), "x.jsonl, line 1: invalid JSON"),
])
def test_bad_document_folders_get_one_clear_line(tmp_path: Path, make, message: str) -> None:
    make(tmp_path)
    with pytest.raises(UserError) as info:
        read_documents(tmp_path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_folder_is_named() -> None:
    with pytest.raises(UserError, match="rag.documents: folder not found: /nonexistent"):
        read_documents("/nonexistent")
