"""The Chit Chat Challenge dataset (package ``chitchat-dataset==0.9.0``).

``chitchat_dataset/dataset.json`` maps 7,168 conversation ids to
``{"prompt": topic question, "messages": [[{"sender", "text", "timestamp"}, ...], ...]}``:
each inner list is one turn (a burst of messages by one sender); 1,315 distinct
senders. Turns are the utterances joined by a space, stripped; empty turns are
dropped and consecutive turns by the same sender are merged. Each turn after
the first gives one example:

- prompt: the immediately preceding turn (the other participant's);
- response: this turn;
- group: the sender id of this turn (a UUID);
- label: the conversation's topic question (``"(no topic)"`` when missing).

With ``opening_turns`` the first turn of each conversation gives an example too: its
prompt is the conversation's topic question (``OPENING_PROMPT`` when it has none). Then
every one of the 1,315 senders has at least one example; without it the 202 senders who
only ever open conversations have none (1,113 senders reply).
"""

from __future__ import annotations

import functools
import itertools
import json
from typing import Any

from openpfi.assets import package_file
from openpfi.data.types import Example
from openpfi.errors import UserError

DIST = "chitchat-dataset"
RELATIVE_PATH = "chitchat_dataset/dataset.json"
NO_TOPIC = "(no topic)"
OPENING_PROMPT = "Start a conversation."
"""The prompt of an opening turn whose conversation has no topic question (``opening_turns``)."""


def _turns(messages: list[list[dict[str, Any]]]) -> list[tuple[str, str]]:
    """``(sender, text)`` per turn, empty turns dropped, same-sender turns merged."""
    turns: list[tuple[str, str]] = []
    for burst in messages:
        texts = [str(u.get("text", "")).strip() for u in burst]
        text = " ".join(t for t in texts if t)
        if not burst or not text:
            continue
        sender = str(burst[0].get("sender", "")).strip()
        if turns and turns[-1][0] == sender:
            turns[-1] = (sender, f"{turns[-1][1]} {text}")
        else:
            turns.append((sender, text))
    return turns


def conversation_examples(conversation: dict[str, Any], opening_turns: bool = False) -> list[Example]:
    """The examples of one conversation record (with ``opening_turns``, its first turn first)."""
    question = str(conversation.get("prompt") or "").strip()
    topic = question or NO_TOPIC
    turns = _turns(conversation.get("messages") or [])
    opening = [
        Example(prompt=question or OPENING_PROMPT, response=turns[0][1], group=turns[0][0], label=topic)
    ] if opening_turns and turns and turns[0][0] else []
    return opening + [
        Example(prompt=prev, response=text, group=sender, label=topic)
        for (_, prev), (sender, text) in itertools.pairwise(turns)
        if sender
    ]


@functools.lru_cache(maxsize=2)
def load(opening_turns: bool = False) -> tuple[tuple[Example, ...], tuple[str, ...]]:
    """All examples in file order (cached) and the file read."""
    path = package_file(DIST, RELATIVE_PATH, "data.source = \"chitchat\"")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); reinstall `{DIST}`") from None
    examples: list[Example] = []
    for conversation in data.values():
        examples.extend(conversation_examples(conversation, opening_turns))
    return tuple(examples), (str(path),)
