"""Each client's documents for client-local retrieval (``[rag]``), read before anything is written.

In-process, ``rag.documents`` is a folder with one subfolder per client id; on Flower a node's
``rag-documents`` names that node's own folder; empty = each client's training texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openpfi.client.federated import FederatedClient
from openpfi.client.retrieval import Passage
from openpfi.client.retrieval_eval import ClientRetrieval, RetrievalSettings
from openpfi.config import Config
from openpfi.data.documents import Document, read_documents, training_documents
from openpfi.data.types import ClientData
from openpfi.errors import UserError


def client_documents(cfg: Config, client: ClientData, own_folder: str = "") -> list[Document]:
    """The documents of ``client``: ``own_folder`` (a Flower node's), ``rag.documents/<client id>``, or
    its training texts."""
    if own_folder:
        return read_documents(own_folder)
    if not cfg.rag.documents:
        return training_documents(client.train)
    root = Path(cfg.rag.documents).expanduser()
    if root.is_dir() and not (root / client.client_id).is_dir():
        raise UserError(f"rag.documents: {root} has no folder for client {client.client_id!r}; add "
                        f"{root / client.client_id}/ with its documents (one subfolder per client id)")
    return read_documents(root / client.client_id)


def attach_retrieval(cfg: Config, data: Sequence[ClientData], clients: Sequence[FederatedClient],
                     own_folder: str = "") -> None:
    """With ``rag.train`` or ``rag.evaluate``: give every client its documents, the training examples
    that get passages (``rag.train``) and the held-out ones scored with and without them (``rag.evaluate``)."""
    r = cfg.rag
    if not (r.train or r.evaluate):
        return
    settings = RetrievalSettings.from_config(cfg)
    for c, client in zip(data, clients, strict=True):
        docs = client_documents(cfg, c, own_folder)
        heldout = c.heldout[: cfg.client.max_eval_examples] if r.evaluate else []
        client.retrieval = ClientRetrieval(docs, settings, heldout, c.train if r.train else [])


@dataclass
class ChatRetrieval:
    """Retrieval for a chat with a client's model: its own documents, its index in its store.

    ``context_for(question)`` returns the passage texts for the prompt (best first, within
    ``rag.token_budget`` tokens); ``sources()`` says which were used for the last question."""

    retrieval: ClientRetrieval
    tokenizer: Any
    store_folder: Path | None
    last: list[Passage] = field(default_factory=list)

    def context_for(self, question: str) -> list[str]:
        self.last = self.retrieval.retrieve(question, self.tokenizer, self.store_folder)[0]
        return [p.chunk.text for p in self.last]

    def sources(self) -> str:
        if not self.last:
            return "sources: none retrieved"
        return "sources: " + "; ".join(f"[{i}] {p.chunk.label} ({p.score:.2f})" for i, p in enumerate(self.last, 1))


def chat_retrieval(cfg: Config, client_id: str, tokenizer: Any, store_folder: Path | None) -> ChatRetrieval:
    """The retrieval of ``client_id`` of a run with config ``cfg`` (its documents as the run defines them:
    ``rag.documents/<client id>`` or its training texts); the index is built or refreshed in ``store_folder``."""
    from openpfi.assembly.clients import load_clients

    data = {c.client_id: c for c in load_clients(cfg)[1]}
    if client_id not in data:
        raise UserError(f"client {client_id!r} is not in this run; its clients: {', '.join(sorted(data)[:8])}")
    settings = RetrievalSettings.from_config(cfg)
    retrieval = ClientRetrieval(client_documents(cfg, data[client_id]), settings)
    retrieval.open(store_folder)
    return ChatRetrieval(retrieval, tokenizer, store_folder)
