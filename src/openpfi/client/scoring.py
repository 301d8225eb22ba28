"""Continuation log-likelihoods on the shared model: the monitor's ``Scorer``.

For an item (prompt x, continuation c):  log p(c | x) = sum_j log p(c_j | x, c_<j).

Speed (DESIGN.md "Models and compute"): no grad, bf16 autocast where the frozen base is
bf16, and the LM head only on continuation positions. Items that share a prompt are
packed into ONE row: the prompt once, then every continuation, with a 4-D attention mask
so that a continuation sees the prompt and its own earlier tokens only, and position ids
that restart after the prompt for each continuation::

    row   x1 .. xm | a1 .. aA | b1 .. bB          (continuations a and b of prompt x)
    pos   0 .. m-1 | m .. m+A-1 | m .. m+B-1
    mask  b_j attends to x and b_<=j, never to a

so the result equals scoring ``x + a`` and ``x + b`` separately, at the cost of m + A + B
tokens instead of 2m + A + B (a BBQ question with three options: ~120 tokens instead of
~330). Rows are sorted by length and batched up to ``max_batch_tokens`` padded tokens.

chat=True renders the prompt as the user turn with the model's chat template (generation
prompt included) and the continuation as the start of the assistant turn; chat=False is
plain text. An empty plain-text prompt is replaced by one document-separator token so the
first continuation token has a context (as lm-evaluation-harness does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from openpfi.monitor.types import ScoreItem

MAX_ROW_TOKENS = 1024
"""A prompt is cut from the left so that its row stays within this many tokens."""


@dataclass
class _Row:
    prompt: list[int]
    conts: list[tuple[int, list[int]]]  # (item index, continuation ids)

    @property
    def length(self) -> int:
        return len(self.prompt) + sum(len(c) for _, c in self.conts)


def _autocast(model: Any) -> Any:
    dtype = next(p for p in model.parameters() if not p.requires_grad).dtype
    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


class ModelScorer:
    """``Scorer`` over a causal LM with the adapter weights it currently holds.

    ``model``: a transformers causal LM (LoRA layers injected or not); ``tokenizer`` its
    tokenizer. Token ids of prompts and continuations are cached (the probe texts repeat
    every round).
    """

    def __init__(self, model: Any, tokenizer: Any, max_batch_tokens: int = 4096):
        if max_batch_tokens < MAX_ROW_TOKENS:
            raise ValueError(f"max_batch_tokens must be >= {MAX_ROW_TOKENS}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self._ids: dict[tuple[str, bool, bool], list[int]] = {}
        sep = tokenizer.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in tokenizer.get_vocab() else None
        self.separator = int(sep if sep is not None else (tokenizer.eos_token_id or 0))
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.separator)

    # -- tokenization -------------------------------------------------------------------------
    def _encode(self, text: str, chat: bool, is_prompt: bool) -> list[int]:
        key = (text, chat, is_prompt)
        ids = self._ids.get(key)
        if ids is None:
            if is_prompt and chat:
                out = self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": text}], tokenize=True, add_generation_prompt=True
                )
                ids = list(out["input_ids"] if hasattr(out, "keys") else out)
            else:
                ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                if is_prompt and not ids:
                    ids = [self.separator]
            self._ids[key] = ids
        return ids

    def _rows(self, items: Sequence[ScoreItem]) -> list[_Row]:
        rows: dict[tuple[str, bool], _Row] = {}
        out: list[_Row] = []
        for i, it in enumerate(items):
            cont = self._encode(it.continuation, it.chat, False)
            if not cont:
                raise ValueError(f"continuation {it.continuation!r} has no tokens")
            key = (it.prompt, it.chat)
            row = rows.get(key)
            if row is not None and row.length + len(cont) > MAX_ROW_TOKENS:
                out.append(row)
                row = None
            if row is None:
                prompt = self._encode(it.prompt, it.chat, True)
                keep = max(1, MAX_ROW_TOKENS - len(cont))
                row = rows[key] = _Row(prompt[-keep:], [])
            row.conts.append((i, cont))
        return out + list(rows.values())

    # -- scoring ------------------------------------------------------------------------------
    def logprobs(self, items: Sequence[ScoreItem]) -> list[tuple[float, int]]:
        """(sum of log p of the continuation tokens, number of continuation tokens) per item."""
        if not items:
            return []
        rows = sorted(self._rows(items), key=lambda r: r.length)
        sums = torch.zeros(len(items), dtype=torch.float64)
        counts = [0] * len(items)
        batch: list[_Row] = []
        for row in rows:  # ascending length: the newest row sets the batch width
            if batch and (len(batch) + 1) * row.length > self.max_batch_tokens:
                self._score_batch(batch, sums, counts)
                batch = []
            batch.append(row)
        if batch:
            self._score_batch(batch, sums, counts)
        return [(float(sums[i]), counts[i]) for i in range(len(items))]

    @torch.no_grad()
    def _score_batch(self, batch: Sequence[_Row], sums: torch.Tensor, counts: list[int]) -> None:
        device = next(self.model.parameters()).device
        width = max(r.length for r in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        pos = torch.zeros((len(batch), width), dtype=torch.long)
        seg = torch.full((len(batch), width), -1, dtype=torch.long)  # -1 padding, 0 prompt, k continuation k
        b_idx: list[int] = []
        src: list[int] = []  # position whose output predicts the target token
        tgt: list[int] = []
        owner: list[int] = []
        for b, row in enumerate(batch):
            m = len(row.prompt)
            ids[b, :m] = torch.tensor(row.prompt)
            pos[b, :m] = torch.arange(m)
            seg[b, :m] = 0
            at = m
            for k, (item, cont) in enumerate(row.conts, start=1):
                n = len(cont)
                ids[b, at : at + n] = torch.tensor(cont)
                pos[b, at : at + n] = torch.arange(m, m + n)
                seg[b, at : at + n] = k
                b_idx += [b] * n
                src += [m - 1] + list(range(at, at + n - 1))
                tgt += cont
                owner += [item] * n
                counts[item] = n
                at += n
        # attend(q, k): k is a prompt token or in q's own continuation, and k's position <= q's
        same = (seg[:, :, None] == seg[:, None, :]) | (seg[:, None, :] == 0)
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        allowed = same & causal & (seg[:, None, :] >= 0)
        allowed |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves (no NaN)
        mask = self._mask(allowed[:, None].to(device))  # (B, 1, T, T)
        with _autocast(self.model):
            out = self.model.get_decoder()(input_ids=ids.to(device), attention_mask=mask, position_ids=pos.to(device))
            h = out.last_hidden_state[torch.tensor(b_idx, device=device), torch.tensor(src, device=device)]  # (N, C)
            logits = self.model.get_output_embeddings()(h)  # (N, V): the LM head on continuation tokens only
        logp = torch.log_softmax(logits.float(), dim=-1)
        picked = logp.gather(1, torch.tensor(tgt, device=device)[:, None])[:, 0].double().cpu()
        sums.index_add_(0, torch.tensor(owner), picked)

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """Boolean for SDPA / flex; an additive float mask (0 or dtype min) for eager attention."""
        impl = getattr(self.model.config, "_attn_implementation", "sdpa")
        if impl == "eager":
            dtype = next(p for p in self.model.parameters() if not p.requires_grad).dtype
            zero = torch.zeros((), dtype=dtype, device=allowed.device)
            return torch.where(allowed, zero, torch.finfo(dtype).min)
        return allowed


def shared_scorer(shared: Any, max_batch_tokens: int = 4096) -> ModelScorer:
    """A scorer over a ``SharedModel``: whatever adapter the shared model holds when called."""
    return ModelScorer(shared.model, shared.loaded.tokenizer, max_batch_tokens)
