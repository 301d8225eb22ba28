"""Plain data records shared by sources, partitioners and the client."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Example:
    """One supervised turn: the model sees ``prompt`` and learns ``response``."""

    prompt: str
    """The user turn (context); no loss is computed on its tokens."""
    response: str
    """The assistant turn; the loss is computed on these tokens only."""
    group: str
    """Natural client key: chitchat sender id, ``"play::CHARACTER"``,
    chatterbot language, or the JSONL client field."""
    label: str = ""
    """Label for Dirichlet label-skew partitions: chitchat conversation topic,
    shakespeare play, chatterbot topic file, or the JSONL label field.
    Empty means "use ``group``"."""
    turns: tuple[tuple[str, str], ...] = ()
    """A multi-turn conversation as (role, content) pairs, system turns included (JSONL
    ``messages`` rows); empty for a single turn. When set, ``prompt`` and ``response`` are its
    last user and assistant turns, and training has loss on every assistant turn."""

    def messages(self) -> list[dict[str, str]]:
        """The example as chat messages (``{"role", "content"}``)."""
        if self.turns:
            return [{"role": r, "content": c} for r, c in self.turns]
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.response}]

    def text(self) -> str:
        """Every turn's content, one per line (what retrieval indexes of a training example)."""
        return "\n".join(m["content"] for m in self.messages())


@dataclass
class ClientData:
    """One client's private data: a training split and a held-out split."""

    client_id: str
    """Stable, folder-safe identifier (``[a-z0-9._-]``)."""
    train: list[Example]
    heldout: list[Example]


@dataclass
class LoadResult:
    """What a source loader returns."""

    examples: list[Example]
    skipped_rows: int = 0
    """Lenient JSONL only: corrupt rows skipped."""
    source_files: list[str] = field(default_factory=list)
    """Absolute paths read, in a stable order (hashed into manifest.json)."""
