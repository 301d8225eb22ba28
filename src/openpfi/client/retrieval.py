"""Client-local retrieval: a client's own documents, chunked, embedded and indexed in its own store.

    documents --chunk--> chunks (<= rag.chunk_tokens word pieces, rag.chunk_overlap shared)
              --embed--> unit vectors (all-MiniLM-L6-v2, models/embedder.py)
              --faiss--> IndexFlatIP: top-k by cosine similarity of a query's embedding

The index lives in the client's store folder (``retrieval/``: ``state.json`` with every
document's content hash and its chunks, ``vectors.safetensors``) and is rebuilt incrementally:
a document whose sha256 is unchanged keeps its chunks, a chunk whose text was embedded before
keeps its vector; only new text is embedded. An index of another embedder or chunking is
rebuilt whole. Nothing here is sent anywhere: the server has no handle on it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from openpfi.data.documents import Document
from openpfi.models.chat import CONTEXT_HEADER, passage_line, with_passages
from openpfi.models.embedder import DIM, Embedder

STATE = "state.json"
VECTORS = "vectors.safetensors"
VERSION = 1


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Chunk:
    source: str
    part: int
    """Index of the chunk within its document."""
    text: str

    @property
    def sha256(self) -> str:
        return _sha(self.text)

    @property
    def label(self) -> str:
        return self.source if self.part == 0 else f"{self.source}#{self.part + 1}"


@dataclass(frozen=True)
class Passage:
    chunk: Chunk
    score: float
    """Cosine similarity to the query."""


@dataclass(frozen=True)
class BuildStats:
    chunks: int
    embedded: int
    """Chunks whose vectors were computed in this build (the rest were reused)."""
    removed: int
    seconds: float


def chunk_document(doc: Document, embedder: Embedder, size: int, overlap: int) -> list[Chunk]:
    """Windows of ``size`` word pieces (``overlap`` shared) over the document's own characters:
    a document longer than the embedder's limit becomes several chunks, none of it dropped."""
    size = min(size, embedder.max_text_tokens)
    spans = embedder.token_spans(doc.text)
    if len(spans) <= size:
        return [Chunk(doc.source, 0, doc.text)]
    step = size - overlap
    chunks, start = [], 0
    while True:
        window = spans[start : start + size]
        chunks.append(Chunk(doc.source, len(chunks), doc.text[window[0][0] : window[-1][1]]))
        if start + size >= len(spans):
            return chunks
        start += step


class RetrievalIndex:
    """One client's index over its documents (see the module docstring)."""

    def __init__(self, folder: Path | None, embedder: Embedder, chunk_tokens: int, chunk_overlap: int):
        """``folder``: where the index is kept (None: in memory only, rebuilt each time)."""
        self.folder = None if folder is None else Path(folder)
        self.embedder = embedder
        self.settings = {"version": VERSION, "embedder": embedder.sha256, "chunk_tokens": chunk_tokens,
                         "chunk_overlap": chunk_overlap}
        self.chunks: list[Chunk] = []
        self.index = faiss.IndexFlatIP(DIM)

    def _load(self) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
        """The stored documents and vectors by chunk hash ({} when absent, stale or torn)."""
        if self.folder is None:
            return {}, {}
        try:
            state = json.loads((self.folder / STATE).read_text())
            vectors = load_file(str(self.folder / VECTORS))["vectors"]
        except (OSError, ValueError, KeyError):
            return {}, {}
        order = state.get("order", [])
        if {k: state.get(k) for k in self.settings} != self.settings or len(order) != len(vectors):
            return {}, {}
        return state["documents"], dict(zip(order, vectors, strict=True))

    def build(self, docs: Sequence[Document]) -> BuildStats:
        """Bring the index up to date with ``docs``: chunk and embed only what changed."""
        t0 = time.perf_counter()
        old_docs, old_vectors = self._load()
        documents: dict[str, dict] = {}
        chunks: list[Chunk] = []
        for doc in docs:
            digest, prev = _sha(doc.text), old_docs.get(doc.source)
            if prev is not None and prev["sha256"] == digest:
                got = [Chunk(doc.source, i, t) for i, t in enumerate(prev["chunks"])]
            else:
                got = chunk_document(doc, self.embedder, self.settings["chunk_tokens"], self.settings["chunk_overlap"])
            documents[doc.source] = {"sha256": digest, "chunks": [c.text for c in got]}
            chunks += got
        order = list(dict.fromkeys(c.sha256 for c in chunks))
        text_of = {c.sha256: c.text for c in chunks}
        new = [h for h in order if h not in old_vectors]
        fresh = dict(zip(new, self.embedder.embed([text_of[h] for h in new]), strict=True)) if new else {}
        table = np.stack([fresh[h] if h in fresh else old_vectors[h] for h in order]).astype(np.float32)
        self._save(documents, order, table)
        row = {h: i for i, h in enumerate(order)}
        self.chunks = chunks
        self.index = faiss.IndexFlatIP(DIM)
        self.index.add(table[[row[c.sha256] for c in chunks]])
        removed = len(set(old_vectors) - set(order))
        return BuildStats(len(chunks), len(new), removed, time.perf_counter() - t0)

    def _save(self, documents: dict[str, dict], order: list[str], table: np.ndarray) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{VECTORS}.tmp"
        save_file({"vectors": table}, str(tmp))
        tmp.replace(self.folder / VECTORS)
        text = json.dumps({**self.settings, "order": order, "documents": documents}, sort_keys=True)
        tmp = self.folder / f".{STATE}.tmp"
        tmp.write_text(text)
        tmp.replace(self.folder / STATE)

    def search(self, query: str, k: int) -> tuple[list[Passage], float, float]:
        """The ``k`` best passages for ``query``, with the seconds spent embedding and searching."""
        t0 = time.perf_counter()
        q = self.embedder.embed([query])
        t1 = time.perf_counter()
        faiss.omp_set_num_threads(max(1, torch.get_num_threads()))
        scores, ids = self.index.search(q, min(k, len(self.chunks)))
        t2 = time.perf_counter()
        found = [Passage(self.chunks[i], float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
        return found, t1 - t0, t2 - t1


def _words(text: str) -> str:
    return " ".join(text.split())


def is_part_of(passage: Passage, text: str) -> bool:
    """Whether the passage is (a part of) ``text``, whitespace aside: a training example's own text,
    or a copy of it, found in the client's store."""
    return _words(passage.chunk.text) in _words(text)


def within_budget(passages: Sequence[Passage], count_tokens: Callable[[str], int], budget: int) -> list[Passage]:
    """Passages, best first, while they fit ``budget`` model tokens as ``augment`` writes them (header
    and numbered lines); a passage that does not fit is skipped and a shorter later one may still go in."""
    used: list[Passage] = []
    total = count_tokens(CONTEXT_HEADER)
    for p in passages:
        n = count_tokens(passage_line(len(used) + 1, p.chunk.text) + "\n")
        if total + n <= budget:
            used.append(p)
            total += n
    return used


def augment(prompt: str, passages: Sequence[Passage]) -> str:
    """The user turn with the retrieved passages in front of it (``models.chat.with_passages``: the
    format chat uses too; unchanged when there are none)."""
    return with_passages(prompt, [p.chunk.text for p in passages])
