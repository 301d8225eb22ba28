"""Where the clients' data comes from and how it is dealt: [data]."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from openpfi.config.section import Section


class DataConfig(Section):
    source: Literal["chitchat", "shakespeare", "chatterbot", "jsonl"] = "chitchat"
    path: str = ""
    """JSONL file (source = "jsonl")."""
    client_field: str = "client"
    prompt_field: str = "prompt"
    response_field: str = "response"
    label_field: str = ""
    strict: bool = True
    """Strict: a corrupt JSONL row fails with its line number. Lenient: skipped and counted."""
    partition: Literal["natural", "iid", "dirichlet", "quantity"] = "natural"
    num_clients: int = Field(8, ge=1, le=100_000)
    alpha: float = Field(0.5, gt=0)
    """Dirichlet concentration (partition = "dirichlet")."""
    quantity_sigma: float = Field(1.0, gt=0)
    heldout_fraction: float = Field(0.2, gt=0, lt=1)
    min_examples: int = Field(10, ge=2)
    max_examples: int = Field(200, ge=2)
    languages: list[str] = Field(default_factory=list)
    """chatterbot: restrict to these languages (empty = all)."""
