"""Where the clients' data comes from and how it is dealt: [data]."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from openpfi.config.section import Section


class DataConfig(Section):
    source: Literal["chitchat", "shakespeare", "chatterbot", "jsonl", "hf"] = "chitchat"
    """chitchat (client = sender), shakespeare (play x character), chatterbot (language), or users' own
    data: jsonl (a .jsonl file) or hf (a Hugging Face datasets folder written by save_to_disk)."""
    path: str = ""
    """The .jsonl file (source = "jsonl") or the datasets folder (source = "hf")."""
    client_field: str = "client"
    """jsonl / hf: the field naming each row's client ("" = every row in one client)."""
    prompt_field: str = "prompt"
    """jsonl / hf: the user turn of a single-turn row."""
    response_field: str = "response"
    """jsonl / hf: the assistant turn of a single-turn row (the loss is on it)."""
    messages_field: str = "messages"
    """jsonl / hf: a multi-turn row's list of {role, content} turns (system / user / assistant);
    the loss is on the assistant turns. A row with this field is read as multi-turn ("" = never)."""
    label_field: str = ""
    """jsonl / hf: an optional label for Dirichlet label-skew partitions ("" = the client)."""
    split: str = ""
    """hf: the split of a DatasetDict folder to read (required when it has several)."""
    strict: bool = True
    """Strict: a corrupt JSONL / dataset row fails with its line number. Lenient: skipped and counted."""
    partition: Literal["natural", "iid", "dirichlet", "quantity"] = "natural"
    """natural = one client per natural group (sampled); iid; dirichlet = label skew; quantity = size skew."""
    num_clients: int = Field(8, ge=1, le=100_000)
    """Clients of the run."""
    alpha: float = Field(0.5, gt=0)
    """Dirichlet concentration (partition = "dirichlet")."""
    quantity_sigma: float = Field(1.0, gt=0)
    """partition = "quantity": log-normal sigma of the client sizes."""
    heldout_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of each client's examples held out for its evaluation."""
    min_examples: int = Field(10, ge=1)
    """partition = "natural": only groups with at least this many examples become clients (SFT data; the
    alignment methods deal preference pairs by alignment.pairs_per_client or take alignment.data whole).
    1 takes every group: a client with a single example trains on it and holds nothing out, so it has
    no held-out loss and is left out of the round's evaluation."""
    max_examples: int = Field(200, ge=2)
    """Each client keeps at most this many examples (a seeded sample; SFT data)."""
    opening_turns: bool = False
    """chitchat: also the first turn of each conversation, as the answer to the conversation's topic
    question, so that every one of the 1,315 senders has an example (1,113 reply to someone)."""
    languages: list[str] = Field(default_factory=list)
    """chatterbot: restrict to these languages (empty = all)."""
