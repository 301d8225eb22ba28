"""Recipe: chat with a run's model (``openpfi chat``): one session, turn by turn, replies streamed.

The session keeps the conversation; each turn's prompt comes from ``models.chat.build_messages``
with the passages ``context_for(question)`` returns (none by default: the seam where retrieval
over the client's own documents adds them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from openpfi.assembly.run_model import RunModel, choose_model, load_run_model
from openpfi.models.chat import ReplyStats, Turn, build_messages, stream_reply


@dataclass
class ChatSession:
    model: RunModel
    max_new_tokens: int = 128
    temperature: float = 0.7
    system: str = ""
    seed: int = 0
    context_for: Callable[[str], Sequence[str]] = lambda question: ()
    """Extra passages for a question (e.g. retrieved from the client's documents)."""
    history: list[Turn] = field(default_factory=list)
    last: ReplyStats = field(default_factory=ReplyStats)
    last_context: list[str] = field(default_factory=list)

    def messages(self, user: str) -> list[dict[str, str]]:
        self.last_context = list(self.context_for(user))
        return build_messages(self.history, user, self.system, self.last_context)

    def reply(self, user: str) -> Iterator[str]:
        """Stream the answer to ``user``; the turn joins the history once it is complete."""
        self.last = ReplyStats()
        lm = self.model.shared.loaded
        seed = self.seed + len(self.history)
        yield from stream_reply(lm.model, lm.tokenizer, self.messages(user), self.max_new_tokens, self.temperature,
                                seed, self.last)
        self.history.append(Turn(user, self.last.text.strip()))

    def reset(self) -> None:
        self.history.clear()


def open_session(run_dir: Path, client: str | None = None, round_num: int | None = None, store: Path | None = None,
                 **settings: object) -> ChatSession:
    """Check the choice (bad round / client refused before loading), load the model, start a session."""
    choose_model(run_dir, round_num, client, store)
    return ChatSession(load_run_model(run_dir, round_num, client, store), **settings)  # type: ignore[arg-type]
