"""Chat with a loaded model: prompt messages through the model's chat template, streamed replies.

:func:`build_messages` is the one place a chat turn's prompt is assembled (system turn, earlier
turns, the new user turn with any retrieved passages in front of it: :func:`with_passages`, the
one format of passages in a prompt, which training with ``rag.train`` and the retrieval
evaluation use too); :func:`stream_reply` generates in a background thread and yields text as
transformers' ``TextIteratorStreamer`` decodes it, timing the first token and the rest (``ReplyStats``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

CONTEXT_HEADER = "Passages from your own documents (use them if they help):"


@dataclass(frozen=True)
class Turn:
    user: str
    assistant: str


def passage_line(number: int, text: str) -> str:
    """One retrieved passage as it stands in a prompt: ``[number] text``."""
    return f"[{number}] {text.strip()}"


def with_passages(user: str, passages: Sequence[str]) -> str:
    """The user turn with the numbered passages in front of it under a one-line header (``user``
    unchanged when there are none). The one format of retrieved passages in a prompt: local
    training with ``rag.train``, the retrieval evaluation and ``openpfi chat --rag`` all build it here."""
    if not passages:
        return user
    lines = [CONTEXT_HEADER, *(passage_line(i, p) for i, p in enumerate(passages, 1))]
    return "\n".join(lines) + "\n\n" + user


def build_messages(history: Sequence[Turn], user: str, system: str = "", context: Sequence[str] = ()) -> list[dict[str, str]]:
    """Chat-template messages: a system turn (``system``, if any), the earlier turns, then ``user``
    with the ``context`` passages in front of it (``with_passages``). Without a system turn the
    template's own default applies, as in training."""
    messages = [{"role": "system", "content": system.strip()}] if system.strip() else []
    for t in history:
        messages += [{"role": "user", "content": t.user}, {"role": "assistant", "content": t.assistant}]
    messages.append({"role": "user", "content": with_passages(user, context)})
    return messages


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]], max_tokens: int) -> torch.Tensor:
    """Token ids (1, T) of the messages with the generation prompt; the oldest turns (after any
    system turn) are dropped until the prompt fits in ``max_tokens``."""
    msgs = list(messages)
    while True:
        ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ids = ids["input_ids"]
        first = 1 if msgs and msgs[0]["role"] == "system" else 0
        if ids.shape[1] <= max_tokens or len(msgs) - first <= 1:
            return ids[:, -max_tokens:]
        msgs = msgs[:first] + msgs[first + 2:]


@dataclass
class ReplyStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    first_token_s: float = float("nan")
    """Seconds from the call to the first new token (prompt processing + one decoding step)."""
    total_s: float = float("nan")
    text: str = ""
    pieces: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        """Decoding speed after the first token: (new tokens - 1) / (total - first token time)."""
        rest = self.total_s - self.first_token_s
        return (self.new_tokens - 1) / rest if self.new_tokens > 1 and rest > 0 else float("nan")


def stream_reply(model: Any, tokenizer: Any, messages: list[dict[str, str]], max_new_tokens: int = 128,
                 temperature: float = 0.7, seed: int = 0, stats: ReplyStats | None = None) -> Iterator[str]:
    """Yield the reply's text piece by piece; ``temperature`` 0 decodes greedily. ``stats`` is filled in."""
    from transformers import TextIteratorStreamer

    class TimedStreamer(TextIteratorStreamer):
        first_at: float | None = None

        def put(self, value: torch.Tensor) -> None:
            if self.first_at is None and not (self.skip_prompt and self.next_tokens_are_prompt):
                self.first_at = time.perf_counter()
            super().put(value)

    st = stats if stats is not None else ReplyStats()
    limit = int(getattr(model.config, "max_position_embeddings", 2048))
    ids = prompt_ids(tokenizer, messages, max(1, limit - max_new_tokens)).to(model.device)
    st.prompt_tokens = int(ids.shape[1])
    streamer = TimedStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sample = temperature > 0
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "max_new_tokens": max_new_tokens,
                              "streamer": streamer, "do_sample": sample, "pad_token_id": tokenizer.pad_token_id}
    kwargs.update({"temperature": temperature, "top_p": 1.0, "top_k": 0} if sample else {"temperature": None,
                                                                                         "top_p": None, "top_k": None})
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            with torch.no_grad():
                out["seq"] = model.generate(**kwargs)
        except BaseException as err:  # surfaced in the caller's thread
            out["error"] = err
            streamer.end()

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    for piece in streamer:
        st.pieces.append(piece)
        yield piece
    worker.join()
    st.total_s = time.perf_counter() - t0
    if streamer.first_at is not None:
        st.first_token_s = streamer.first_at - t0
    if "error" in out:
        raise out["error"]
    st.new_tokens = int(out["seq"].shape[1] - ids.shape[1])
    st.text = "".join(st.pieces)
