"""Chat-template tokenization with loss on response tokens only, and collation.

    ids    = template(user: prompt, assistant: ) + response tokens + end-of-turn
    labels = -100 ...                             + response tokens + end-of-turn

A multi-turn conversation (``encode_messages``) has loss on every assistant turn and none
on system or user turns; a single turn encodes exactly as ``encode_chat``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def num_targets(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def _template_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def encode_chat(tokenizer: Any, prompt: str, response: str, max_length: int) -> Encoded:
    """Encode one (prompt, response) turn; truncate the prompt from the left, then the response."""
    user = [{"role": "user", "content": prompt}]
    head = _template_ids(tokenizer, user, add_generation_prompt=True)
    full = _template_ids(tokenizer, [*user, {"role": "assistant", "content": response}], False)
    if full[: len(head)] != head:  # template renders the turn differently: fall back to plain tokens
        full = head + tokenizer(response + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"]
    tail = full[len(head) :]
    # The template ends with "<|im_end|>\n": the newline after the end-of-turn is not a target.
    if len(tail) > 1 and tokenizer.decode(tail[-1:]).strip() == "":
        tail = tail[:-1]
    budget_prompt = max(max_length // 2, max_length - len(tail))
    if len(head) > budget_prompt:
        head = head[-budget_prompt:]
    tail = tail[: max(1, max_length - len(head))]
    ids = head + tail
    labels = [IGNORE] * len(head) + tail
    return Encoded(tuple(ids), tuple(labels))


def _assistant_tail(tokenizer: Any, tail: list[int]) -> tuple[list[int], list[int]]:
    """An assistant turn's tokens split into targets and the trailing whitespace after its end-of-turn."""
    if len(tail) > 1 and tokenizer.decode(tail[-1:]).strip() == "":
        return tail[:-1], tail[-1:]
    return tail, []


def encode_messages(tokenizer: Any, messages: list[dict[str, str]], max_length: int) -> Encoded:
    """Encode a conversation ending with an assistant turn; loss on the assistant turns only.

    Each assistant turn's tokens are the difference between the template of the turns up to it
    and that of the turns before it with the generation prompt. Truncation as ``encode_chat``:
    the context before the last assistant turn from the left, then that turn from the right.
    """
    ids: list[int] = []
    labels: list[int] = []
    head: list[int] = []
    tail: list[int] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head = _template_ids(tokenizer, messages[:i], add_generation_prompt=True)
        full = _template_ids(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if head[: len(ids)] != ids or full[: len(head)] != head:  # a template that rewrites earlier turns
            user = [t["content"] for t in messages[:i] if t["role"] != "assistant"]
            return encode_chat(tokenizer, "\n".join(user[-1:]), m["content"], max_length)
        labels += [IGNORE] * (len(head) - len(ids))
        tail, after = _assistant_tail(tokenizer, full[len(head) :])
        ids, labels = head + tail + after, labels + tail + [IGNORE] * len(after)
    context, context_labels = ids[: len(head)], labels[: len(head)]
    budget = max(max_length // 2, max_length - len(tail))
    if len(context) > budget:
        context, context_labels = context[-budget:], context_labels[-budget:]
    tail = tail[: max(1, max_length - len(context))]
    return Encoded(tuple(context + tail), tuple(context_labels + tail))


def encode_example(tokenizer: Any, example: Any, max_length: int) -> Encoded:
    """An ``Example``: multi-turn when it has turns, else its single prompt / response turn."""
    if example.turns:
        return encode_messages(tokenizer, example.messages(), max_length)
    return encode_chat(tokenizer, example.prompt, example.response, max_length)


def encode_text(tokenizer: Any, text: str, max_length: int) -> Encoded:
    """Plain language-modelling example (loss on every token after the first)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
    return Encoded(tuple(ids), tuple(ids))


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence: input_ids, attention_mask, labels (B, T)."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
