"""Continuation log-likelihoods on the shared model: the monitor's ``Scorer``.

For an item (prompt x, continuation c):  log p(c | x) = sum_j log p(c_j | x, c_<j).

Speed (DESIGN.md "Models and compute"): no grad, bf16 autocast where the frozen base is
bf16, the LM head only on continuation positions, and no padding to speak of:

1. Items that share a prompt form a GROUP: the prompt once, then every continuation.
2. Groups are packed first-fit-decreasing into physical rows of up to ``pack_tokens``.
3. One 4-D attention mask keeps everything apart: a token attends only to earlier
   tokens of its own group's prompt and of its own continuation; position ids restart
   at every group's prompt and after the prompt for every continuation::

       row   x1 .. xm | a1 .. aA | b1 .. bB || y1 .. yn | c1 .. cC || pad
       pos   0 .. m-1 | m .. m+A-1 | m .. m+B-1 || 0 .. n-1 | n .. n+C-1
       b_j sees x and b_<=j;  c_j sees y and c_<=j;  nothing crosses "||"

So the result equals scoring each ``x + a`` alone (tested against a plain forward), at
the cost of m + A + B tokens instead of 2m + A + B (a BBQ question with three options:
~120 tokens instead of ~330), with rows nearly full. ``score`` also takes tokenized
held-out examples (``data.tokenize.Encoded``) and scores their target tokens in the same
packed pass (the client's utility in the monitor report).

chat=True renders the prompt as the user turn with the model's chat template (generation
prompt included) and the continuation as the start of the assistant turn; chat=False is
plain text. An empty plain-text prompt is replaced by one document-separator token so the
first continuation token has a context (as lm-evaluation-harness does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from openpfi.data.tokenize import IGNORE, Encoded
from openpfi.monitor.types import ScoreItem

PACK_TOKENS = 256
"""Length of a packed row; a longer group gets a row of its own (its prompt cut from the left
to ``MAX_GROUP_TOKENS``). Attention costs width^2 per row whatever the mask hides, so per token
it grows with the width: the server's probe pass of the silent benchmark (15.3k tokens) took
~15 s at 256 against ~18 s at 512 (2-core AMD EPYC, 2026-11-30); narrower rows gained nothing."""
MAX_GROUP_TOKENS = 1024


@dataclass
class _Group:
    prompt: list[int]
    conts: list[tuple[int, list[int]]] = field(default_factory=list)  # (output index, continuation ids)

    @property
    def length(self) -> int:
        return len(self.prompt) + sum(len(c) for _, c in self.conts)


def _autocast(model: Any) -> Any:
    dtype = next(p for p in model.parameters() if not p.requires_grad).dtype
    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


def _pack(groups: Sequence[_Group], width: int) -> list[list[_Group]]:
    """First-fit decreasing bin packing of groups into rows of at most ``width`` tokens."""
    rows: list[list[_Group]] = []
    room: list[int] = []
    for g in sorted(groups, key=lambda g: -g.length):
        for i, free in enumerate(room):
            if g.length <= free:
                rows[i].append(g)
                room[i] -= g.length
                break
        else:
            rows.append([g])
            room.append(width - g.length)
    return rows


class ModelScorer:
    """``Scorer`` over a causal LM with the adapter weights it currently holds.

    ``model``: a transformers causal LM (LoRA layers injected or not); ``tokenizer`` its
    tokenizer. Token ids of prompts and continuations are cached (the probe texts repeat
    every round). ``max_batch_tokens``: padded tokens per forward pass.
    """

    def __init__(self, model: Any, tokenizer: Any, max_batch_tokens: int = 4096, pack_tokens: int = PACK_TOKENS):
        if max_batch_tokens < MAX_GROUP_TOKENS or pack_tokens < 16:
            raise ValueError(f"max_batch_tokens must be >= {MAX_GROUP_TOKENS} and pack_tokens >= 16")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.pack_tokens = min(pack_tokens, max_batch_tokens)
        self._ids: dict[tuple[str, bool, bool], list[int]] = {}
        vocab = tokenizer.get_vocab()
        sep = vocab.get("<|endoftext|>", tokenizer.eos_token_id)
        self.separator = int(sep if sep is not None else 0)
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

    def _groups(self, items: Sequence[ScoreItem], examples: Sequence[Encoded]) -> list[_Group]:
        by_prompt: dict[tuple[str, bool], _Group] = {}
        out: list[_Group] = []
        for i, it in enumerate(items):
            cont = self._encode(it.continuation, it.chat, False)
            if not cont:
                raise ValueError(f"continuation {it.continuation!r} has no tokens")
            key = (it.prompt, it.chat)
            g = by_prompt.get(key)
            if g is not None and g.length + len(cont) > MAX_GROUP_TOKENS:
                out.append(by_prompt.pop(key))
                g = None
            if g is None:
                prompt = self._encode(it.prompt, it.chat, True)
                g = by_prompt[key] = _Group(prompt[-max(1, MAX_GROUP_TOKENS - len(cont)) :])
            g.conts.append((i, cont))
        for j, e in enumerate(examples):  # target tokens = the labelled suffix (data/tokenize.py)
            k = next((t for t, lab in enumerate(e.labels) if lab != IGNORE), len(e.labels))
            k = max(k, 1)
            if k < len(e.input_ids):
                out.append(_Group(list(e.input_ids[:k]), [(len(items) + j, list(e.input_ids[k:]))]))
        return out + list(by_prompt.values())

    # -- scoring ------------------------------------------------------------------------------
    def logprobs(self, items: Sequence[ScoreItem]) -> list[tuple[float, int]]:
        """(sum of log p of the continuation tokens, number of continuation tokens) per item."""
        return self.score(items)[0]

    def score(
        self, items: Sequence[ScoreItem], examples: Sequence[Encoded] = ()
    ) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
        """``logprobs`` of ``items`` and, in the same packed passes, (sum of log p, count) of
        the target tokens of each tokenized example (its loss is -sum / count)."""
        total = len(items) + len(examples)
        if total == 0:
            return [], []
        sums = torch.zeros(total, dtype=torch.float64)
        counts = [0] * total
        rows = _pack(self._groups(items, examples), self.pack_tokens)
        rows.sort(key=lambda r: sum(g.length for g in r))
        batch: list[list[_Group]] = []
        for row in rows:  # ascending length: the newest row sets the batch width
            if batch and (len(batch) + 1) * sum(g.length for g in row) > self.max_batch_tokens:
                self._score_batch(batch, sums, counts)
                batch = []
            batch.append(row)
        if batch:
            self._score_batch(batch, sums, counts)
        out = [(float(sums[i]), counts[i]) for i in range(total)]
        return out[: len(items)], out[len(items) :]

    @torch.no_grad()
    def _score_batch(self, batch: Sequence[Sequence[_Group]], sums: torch.Tensor, counts: list[int]) -> None:
        device = next(self.model.parameters()).device
        width = max(sum(g.length for g in row) for row in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        pos = torch.zeros((len(batch), width), dtype=torch.long)
        grp = torch.full((len(batch), width), -1, dtype=torch.long)  # -1 = padding
        seg = torch.zeros((len(batch), width), dtype=torch.long)  # 0 = prompt, k = continuation k
        b_idx: list[int] = []
        src: list[int] = []  # the position whose output predicts the target token
        tgt: list[int] = []
        owner: list[int] = []
        for b, row in enumerate(batch):
            at = 0
            for gi, g in enumerate(row):
                m = len(g.prompt)
                ids[b, at : at + m] = torch.tensor(g.prompt)
                pos[b, at : at + m] = torch.arange(m)
                grp[b, at : at + m] = gi
                last_prompt = at + m - 1
                at += m
                for k, (item, cont) in enumerate(g.conts, start=1):
                    n = len(cont)
                    ids[b, at : at + n] = torch.tensor(cont)
                    pos[b, at : at + n] = torch.arange(m, m + n)
                    grp[b, at : at + n] = gi
                    seg[b, at : at + n] = k
                    b_idx += [b] * n
                    src += [last_prompt] + list(range(at, at + n - 1))
                    tgt += cont
                    owner += [item] * n
                    counts[item] = n
                    at += n
        # attend(q, k): same group, k in the prompt or in q's own continuation, k at or before q
        same_group = (grp[:, :, None] == grp[:, None, :]) & (grp[:, None, :] >= 0)
        same_seg = (seg[:, :, None] == seg[:, None, :]) | (seg[:, None, :] == 0)
        allowed = same_group & same_seg & torch.ones(width, width, dtype=torch.bool).tril()
        allowed |= torch.eye(width, dtype=torch.bool)  # padding attends to itself (no NaN rows)
        mask = self._mask(allowed[:, None].to(device))  # (B, 1, T, T)
        with _autocast(self.model):
            out = self.model.get_decoder()(input_ids=ids.to(device), attention_mask=mask, position_ids=pos.to(device))
            h = out.last_hidden_state[torch.tensor(b_idx, device=device), torch.tensor(src, device=device)]  # (N, C)
            logits = self.model.get_output_embeddings()(h)  # (N, V): the LM head on continuation tokens only
        logits = logits.float()
        target = torch.tensor(tgt, device=device)
        picked = logits.gather(1, target[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)  # log p(target)
        sums.index_add_(0, torch.tensor(owner), picked.double().cpu())

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """Boolean for SDPA / flex; an additive float mask (0 or dtype min) for eager attention."""
        impl = getattr(self.model.config, "_attn_implementation", "sdpa")
        if impl == "eager":
            dtype = next(p for p in self.model.parameters() if not p.requires_grad).dtype
            zero = torch.zeros((), dtype=dtype, device=allowed.device)
            return torch.where(allowed, zero, torch.finfo(dtype).min)
        return allowed


@torch.no_grad()
def generate_chat(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, pad_id: int,
                  batch: int = 8) -> list[str]:
    """Greedy answers of ``model`` (with the adapter it holds) to ``prompts`` as user turns,
    rendered with the chat template as ``ModelScorer`` renders chat prompts.

    Eval mode (no dropout) and no sampling, so no random state is drawn; the model's training
    flag and the tokenizer's padding side are restored afterwards.
    """
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts]
    side, training = tokenizer.padding_side, model.training
    device = next(model.parameters()).device
    out: list[str] = []
    try:
        tokenizer.padding_side = "left"
        model.eval()
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            with _autocast(model):
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(training)
    return out


def shared_scorer(shared: Any, max_batch_tokens: int = 4096) -> ModelScorer:
    """A scorer over a ``SharedModel``: whatever adapter the shared model holds when called."""
    return ModelScorer(shared.model, shared.loaded.tokenizer, max_batch_tokens)
