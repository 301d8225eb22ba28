"""Chat-template tokenization with loss on response tokens only, and collation.

    ids    = template(user: prompt, assistant: ) + response tokens + end-of-turn
    labels = -100 ...                             + response tokens + end-of-turn
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
