"""DPO on the shared base model; the reference is the SAME model with its adapters disabled.

Direct Preference Optimization (Rafailov et al. 2023, "Direct Preference Optimization:
Your Language Model is Secretly a Reward Model")::

    r(x, y)  = beta * (log pi(y | x) - log pi_ref(y | x))          implicit reward
    L_DPO    = -log sigmoid(r(x, y_chosen) - r(x, y_rejected))

``log pi(y | x)`` is the sum of the response tokens' log-probabilities (the chat template's
end-of-turn token included), computed with the LM head on target tokens only
(``client.train.token_nll``). ``pi_ref`` is the frozen base: peft's per-layer
``enable_adapters(False)`` switches the LoRA branch off, so no second copy of the model
exists. The reference never changes, so its log-probabilities are computed once per
sequence and cached (``ReferenceCache``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer

from openpfi.client.train import sft_loss, token_nll
from openpfi.data.preference import PreferencePair
from openpfi.data.tokenize import IGNORE, Encoded, collate, encode_chat


@dataclass(frozen=True)
class EncodedPair:
    """A tokenized preference pair (same prompt, two responses)."""

    chosen: Encoded
    rejected: Encoded
    objective: str


def encode_pair(tokenizer: Any, pair: PreferencePair, objective: str, max_length: int) -> EncodedPair:
    return EncodedPair(
        encode_chat(tokenizer, pair.prompt, pair.chosen, max_length),
        encode_chat(tokenizer, pair.prompt, pair.rejected, max_length),
        objective,
    )


@contextmanager
def adapters_disabled(model: Any) -> Iterator[None]:
    """Run ``model`` as its frozen base: every LoRA layer's adapter branch switched off.

    peft's ``enable_adapters(False)`` also clears ``requires_grad`` of the adapter weights;
    the flags are restored exactly on exit.
    """
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    flags = {id(p): p.requires_grad for p in model.parameters()}
    try:
        for layer in layers:
            layer.enable_adapters(False)
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])


def sequence_logprobs(model: Any, seqs: Sequence[Encoded], pad_id: int) -> torch.Tensor:
    """Sum of target-token log-probabilities per sequence: (B,) float32, differentiable."""
    batch = collate(seqs, pad_id)
    nll = token_nll(model, batch, reduction="none")  # (N,) in row-major order of the target mask
    rows = (batch["labels"][:, 1:] != IGNORE).nonzero()[:, 0].to(nll.device)
    return torch.zeros(len(seqs), dtype=nll.dtype, device=nll.device).index_add(0, rows, -nll)


class ReferenceCache:
    """log pi_ref(y | x) of each sequence, computed once with adapters disabled."""

    def __init__(self, model: Any, pad_id: int, batch_size: int = 16):
        self.model = model
        self.pad_id = pad_id
        self.batch_size = batch_size
        self._values: dict[Encoded, float] = {}

    def __len__(self) -> int:
        return len(self._values)

    @torch.no_grad()
    def fill(self, seqs: Sequence[Encoded]) -> None:
        """Compute the missing values in a deterministic order (by length, then tokens).

        Filling a run's whole set up front makes the values independent of the order in
        which training asks for them (bf16 results can depend on the batch's shape), so a
        resumed run reproduces an uninterrupted one.
        """
        missing = sorted({s for s in seqs if s not in self._values}, key=lambda e: (len(e.input_ids), e.input_ids))
        if not missing:
            return
        was_training = self.model.training
        self.model.eval()
        with adapters_disabled(self.model):
            for i in range(0, len(missing), self.batch_size):
                chunk = missing[i : i + self.batch_size]
                for s, v in zip(chunk, sequence_logprobs(self.model, chunk, self.pad_id).tolist(), strict=True):
                    self._values[s] = v
        self.model.train(was_training)

    def get(self, seqs: Sequence[Encoded]) -> torch.Tensor:
        self.fill(seqs)
        return torch.tensor([self._values[s] for s in seqs], dtype=torch.float32)


@dataclass
class DPOOutput:
    loss: torch.Tensor  # scalar, differentiable
    reward_chosen: torch.Tensor  # (B,) detached
    reward_rejected: torch.Tensor  # (B,) detached
    tokens: int

    @property
    def accuracy(self) -> float:
        """Share of pairs with r(chosen) > r(rejected); ties count one half."""
        diff = self.reward_chosen - self.reward_rejected
        return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss, rewards chosen, rewards rejected) from (B,) sequence log-probabilities."""
    r_c = beta * (policy_chosen - ref_chosen.to(policy_chosen))
    r_r = beta * (policy_rejected - ref_rejected.to(policy_rejected))
    return -F.logsigmoid(r_c - r_r).mean(), r_c.detach(), r_r.detach()


def dpo_batch(model: Any, pairs: Sequence[EncodedPair], ref: ReferenceCache, beta: float, pad_id: int) -> DPOOutput:
    """DPO loss of a batch; chosen and rejected go through the model in one forward pass."""
    seqs = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    logp = sequence_logprobs(model, seqs, pad_id)  # (2B,)
    ref_logp = ref.get(seqs)
    b = len(pairs)
    loss, r_c, r_r = dpo_loss(logp[:b], logp[b:], ref_logp[:b], ref_logp[b:], beta)
    return DPOOutput(loss, r_c, r_r, sum(len(s.input_ids) for s in seqs))


def mixed_batch_loss(model: Any, batch: Sequence[Encoded | EncodedPair], ref: ReferenceCache, beta: float,
                     pad_id: int) -> tuple[torch.Tensor, int, int]:
    """Loss of a micro-batch mixing SFT examples and preference pairs: the mean over its items of
    the SFT loss (mean target-token NLL of the ``Encoded`` ones) and the DPO loss (of the pairs),
    weighted by their counts; with (tokens, target tokens) seen (``client.train.BatchLoss``)."""
    examples = [e for e in batch if isinstance(e, Encoded)]
    pairs = [e for e in batch if isinstance(e, EncodedPair)]
    if len(examples) + len(pairs) != len(batch) or not batch:
        raise TypeError("a training batch holds only Encoded examples and EncodedPair preference pairs")
    parts: list[torch.Tensor] = []
    tokens = targets = 0
    if examples:
        loss, tokens, targets = sft_loss(model, examples, pad_id)
        parts.append(loss * len(examples))
    if pairs:
        out = dpo_batch(model, pairs, ref, beta, pad_id)
        parts.append(out.loss * len(pairs))
        tokens += out.tokens
        targets += sum(p.chosen.num_targets + p.rejected.num_targets for p in pairs)
    return sum(parts) / len(batch), tokens, targets  # type: ignore[return-value]


def sft_batch(model: Any, pairs: Sequence[EncodedPair], pad_id: int) -> tuple[torch.Tensor, int]:
    """Mean NLL of the chosen answers (SFT on preferred responses)."""
    seqs = [p.chosen for p in pairs]
    return token_nll(model, collate(seqs, pad_id)), sum(len(s.input_ids) for s in seqs)
