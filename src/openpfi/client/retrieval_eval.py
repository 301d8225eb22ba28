"""A client's retrieval over its own documents: its training examples with passages (``rag.train``),
and whether retrieval helps it (``rag.evaluate``: held-out evaluation with and without passages).

For each example the query is its (last) user turn; the client's index (its own documents,
client/retrieval.py) gives the top ``rag.top_k`` passages that fit ``rag.token_budget`` model
tokens, and they go in front of the user turn (``with_passages``: ``encode_with_passages`` encodes
training and held-out examples alike, in the format ``openpfi chat --rag`` uses). A training
example never gets itself as a passage (``is_part_of``: with the training texts as documents it
would hand the model its own answer); otherwise it gets what retrieval ranks best, the passage
that holds its answer among distractors where the documents have one, as at evaluation and in
chat. Figures of the evaluation, kept in the client's store only:

- ``rag_loss`` / ``norag_loss``: mean NLL of the held-out responses of the client's own model
  (personal where it has one, else the global model it was sent) with and without the passages
  (the prompt may grow by the token budget, so the same response tokens are scored);
- ``rag_exact_match`` / ``exact_match`` (``rag.exact_match``): share of greedy answers to the
  user turn equal to the reference after SQuAD normalisation (``normalize_answer``);
- ``retrieval_embed_ms``, ``retrieval_search_ms``: per query; ``index_build_s``, ``index_chunks``,
  ``index_embedded`` (chunks embedded in this build; the rest were reused from the store).
"""

from __future__ import annotations

import re
import statistics
import string
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from openpfi.algorithms.state import StateDict
from openpfi.client.retrieval import BuildStats, Passage, RetrievalIndex, augment, is_part_of, within_budget
from openpfi.client.scoring import generate_chat
from openpfi.client.train import evaluate_loss
from openpfi.data.documents import Document
from openpfi.data.lazy import LazyEncoded
from openpfi.data.tokenize import Encoded, encode_example
from openpfi.data.types import Example
from openpfi.models.embedder import load_embedder

INDEX_FOLDER = "retrieval"
"""The index's folder inside a client's store."""
SPARE = 8
"""Extra passages searched for a training example, so that ``top_k`` remain after its own text is left out."""


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference after ``normalize_answer``."""
    hits = [normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references, strict=True)]
    return sum(hits) / len(hits) if hits else float("nan")


@dataclass(frozen=True)
class RetrievalSettings:
    top_k: int
    token_budget: int
    chunk_tokens: int
    chunk_overlap: int
    max_length: int
    eval_batch_size: int
    exact_match: bool = False
    max_new_tokens: int = 24
    evaluate: bool = True
    """Score the held-out examples with and without passages (``rag.evaluate``)."""
    train: bool = False
    """Train on the examples with their passages (``rag.train``)."""

    @classmethod
    def from_config(cls, cfg: Any) -> RetrievalSettings:
        r = cfg.rag
        return cls(r.top_k, r.token_budget, r.chunk_tokens, r.chunk_overlap, cfg.client.max_length,
                   cfg.client.eval_batch_size, r.exact_match, r.max_new_tokens, r.evaluate, r.train)


def encode_with_passages(tokenizer: Any, e: Example, passages: Sequence[Passage], settings: RetrievalSettings) -> Encoded:
    """``e`` with ``passages`` in front of its last user turn, tokenized for training or scoring: the
    prompt may grow by the token budget, so the response is cut no more than without passages."""
    return encode_example(tokenizer, _augmented(e, passages), settings.max_length + settings.token_budget)


class ClientRetrieval:
    """One client's documents and the retrieval over them; the index is built in its store on first use."""

    def __init__(self, documents: Sequence[Document], settings: RetrievalSettings, heldout: Sequence[Example] = (),
                 train: Sequence[Example] = ()):
        """``train``: the training examples that get passages (``settings.train``), in training order."""
        self.documents = list(documents)
        self.settings = settings
        self.heldout = list(heldout)
        self.train = list(train)
        self.index: RetrievalIndex | None = None
        self.build: BuildStats | None = None
        self._augmented: tuple[list[Encoded], list[list[Passage]], float, float] | None = None
        self._train_set: LazyEncoded | None = None

    def use_documents(self, documents: Sequence[Document]) -> None:
        """Retrieve from ``documents`` from now on (the index is brought up to date on next use)."""
        if list(documents) != self.documents:
            self.documents, self.index, self.build = list(documents), None, None
            self._augmented = self._train_set = None

    def open(self, store_folder: Path | None) -> RetrievalIndex:
        """The index, brought up to date with the documents (in ``store_folder/retrieval``)."""
        if self.index is None:
            s = self.settings
            folder = None if store_folder is None else Path(store_folder) / INDEX_FOLDER
            self.index = RetrievalIndex(folder, load_embedder(), s.chunk_tokens, s.chunk_overlap)
            self.build = self.index.build(self.documents)
        return self.index

    def retrieve(self, query: str, tokenizer: Any, store_folder: Path | None,
                 leave_out: str = "") -> tuple[list[Passage], float, float]:
        """The passages for ``query`` within the token budget, and the embed / search seconds; none
        that is part of ``leave_out`` (a training example's own text)."""
        k = self.settings.top_k
        found, embed_s, search_s = self.open(store_folder).search(query, k + SPARE if leave_out else k)
        found = [p for p in found if not (leave_out and is_part_of(p, leave_out))][:k]
        count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        return within_budget(found, count, self.settings.token_budget), embed_s, search_s

    def training_set(self, tokenizer: Any, store_folder: Path | None) -> LazyEncoded:
        """The training examples, each with the passages retrieved for its prompt (never itself), encoded
        as the held-out ones are. The passages are retrieved once (again only when the documents
        change); each example is tokenized when first read and kept until ``release``."""
        if self._train_set is None:
            found = [self.retrieve(e.prompt, tokenizer, store_folder, e.text())[0] for e in self.train]
            settings = self.settings
            self._train_set = LazyEncoded(list(zip(self.train, found, strict=True)),
                                          lambda pair: encode_with_passages(tokenizer, pair[0], pair[1], settings))
        return self._train_set

    def release(self) -> None:
        """Drop the training encodings (``FederatedClient.release``, after a round); the passages stay."""
        if self._train_set is not None:
            self._train_set.release()

    def _with_passages(self, tokenizer: Any, store_folder: Path | None) -> tuple[list[Encoded], list[list[Passage]],
                                                                                 float, float]:
        """The held-out examples with their passages (retrieved once: the documents do not change
        within a run), and the mean embed / search seconds per query."""
        if self._augmented is None:
            encoded, passages, embed, search = [], [], [], []
            for e in self.heldout:
                used, t_embed, t_search = self.retrieve(e.prompt, tokenizer, store_folder)
                encoded.append(encode_with_passages(tokenizer, e, used, self.settings))
                passages.append(used)
                embed.append(t_embed)
                search.append(t_search)
            self._augmented = (encoded, passages, statistics.fmean(embed or [0.0]), statistics.fmean(search or [0.0]))
        return self._augmented

    def evaluate(self, shared: Any, state: StateDict, store_folder: Path | None) -> dict[str, float]:
        """The figures of the module docstring for the model ``state`` (loaded into ``shared``)."""
        tok, s = shared.loaded.tokenizer, self.settings
        plain = [encode_example(tok, e, s.max_length) for e in self.heldout]
        augmented, passages, embed_s, search_s = self._with_passages(tok, store_folder)
        shared.set_state(state)
        out = {
            "norag_loss": evaluate_loss(shared.model, plain, s.eval_batch_size, shared.pad_id)[0],
            "rag_loss": evaluate_loss(shared.model, augmented, s.eval_batch_size, shared.pad_id)[0],
            "retrieval_embed_ms": 1000 * embed_s,
            "retrieval_search_ms": 1000 * search_s,
        }
        if self.build is not None:
            out.update(index_build_s=self.build.seconds, index_chunks=float(self.build.chunks),
                       index_embedded=float(self.build.embedded))
        if s.exact_match:
            refs = [e.response for e in self.heldout]
            with_context = [augment(e.prompt, ps) for e, ps in zip(self.heldout, passages, strict=True)]
            asked = generate_chat(shared.model, tok, [e.prompt for e in self.heldout], s.max_new_tokens, shared.pad_id)
            helped = generate_chat(shared.model, tok, with_context, s.max_new_tokens, shared.pad_id)
            out.update(exact_match=exact_match(asked, refs), rag_exact_match=exact_match(helped, refs))
        return out


def _augmented(e: Example, passages: Sequence[Passage]) -> Example:
    """``e`` with the passages in front of its last user turn."""
    text = augment(e.prompt, passages)
    if not e.turns:
        return replace(e, prompt=text)
    last_user = max(i for i, (r, _) in enumerate(e.turns) if r == "user")
    turns = tuple((r, text if i == last_user else c) for i, (r, c) in enumerate(e.turns))
    return replace(e, prompt=text, turns=turns)
