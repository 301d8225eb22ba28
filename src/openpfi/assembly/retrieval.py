"""Each client's documents for client-local retrieval (``[rag]``), read before anything is written.

In-process, ``rag.documents`` is a folder with one subfolder per client id; on Flower a node's
``rag-documents`` names that node's own folder; empty = each client's training texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from openpfi.client.federated import FederatedClient
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
    """With ``rag.evaluate``: give every client its documents and its retrieval evaluation."""
    if not cfg.rag.evaluate:
        return
    settings = RetrievalSettings.from_config(cfg)
    for c, client in zip(data, clients, strict=True):
        docs = client_documents(cfg, c, own_folder)
        client.retrieval = ClientRetrieval(docs, settings, c.heldout[: cfg.client.max_eval_examples])
