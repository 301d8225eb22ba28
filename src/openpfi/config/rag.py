"""Client-local retrieval over each client's own documents: [rag]."""

from __future__ import annotations

from pydantic import Field, model_validator

from openpfi.config.section import Section


class RagConfig(Section):
    """Each client indexes its own documents in its own store (client/retrieval.py); nothing of it
    crosses to the server. Local training (`train`), the held-out evaluation with retrieval
    (`evaluate`) and `openpfi chat --rag` put the passages into the prompt in one format."""

    documents: str = ""
    """Empty = each client's own training texts. Else a folder of .txt / .md / .jsonl files with one
    subfolder per client, named by its client id; on Flower a node's `rag-documents` node config
    names that node's own folder instead."""
    top_k: int = Field(3, ge=1, le=50)
    """Passages retrieved per query (fewer when the token budget is reached first)."""
    token_budget: int = Field(192, ge=16)
    """At most this many model tokens of retrieved passages go into a prompt; passages are
    added best first while they fit."""
    chunk_tokens: int = Field(128, ge=16, le=256)
    """Chunk length in embedder tokens (all-MiniLM-L6-v2 reads at most 256): a longer document
    is split into overlapping chunks, never cut off."""
    chunk_overlap: int = Field(32, ge=0)
    """Embedder tokens shared by consecutive chunks of a document."""
    train: bool = False
    """Retrieval-augmented local training: each training example carries the top `top_k` passages
    retrieved for its prompt from the client's own store, within `token_budget`, in front of its
    user turn: the prompt format of the evaluation and of `openpfi chat --rag`, so the model learns
    to read passages. RAFT (Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific
    RAG", arXiv:2403.10131) trains on the relevant document among distractors; here the passages
    are what retrieval ranks best, as at chat time, so the relevant one is among them wherever
    retrieval finds it. A passage that is the example itself is left out (with the training texts
    as documents it would hand over the answer). Retrieved and tokenized once per client (the
    index is in the client's store); training sequences grow by up to `token_budget` tokens.
    Federated SFT only (refused with an alignment.method)."""
    evaluate: bool = False
    """Each evaluated client also scores its held-out examples with retrieved passages in the prompt
    (loss, and exact match when exact_match is on), beside the same figures without retrieval."""
    exact_match: bool = False
    """QA-style data: greedy answers to the held-out prompts are compared with the references
    (normalised exact match), with and without retrieval. Costs one generation per example."""
    max_new_tokens: int = Field(24, ge=1)
    """Tokens generated per held-out answer for exact match."""

    @model_validator(mode="after")
    def _check(self) -> RagConfig:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"rag.chunk_overlap ({self.chunk_overlap}) must be smaller than rag.chunk_tokens "
                f"({self.chunk_tokens}); lower the overlap"
            )
        if self.exact_match and not self.evaluate:
            raise ValueError("rag.exact_match needs rag.evaluate = true (it is part of the retrieval evaluation)")
        return self
