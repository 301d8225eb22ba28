"""One client's local LoRA training and held-out evaluation on the shared base model.

Speed (DESIGN.md "Models and compute"): the frozen base is already bf16, the
step runs under bf16 autocast, and the LM head and loss are computed only on
target (response) tokens: ``lm_head(h[mask])`` instead of ``lm_head(h)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from openpfi.config import AlignmentConfig, ClientConfig
from openpfi.data.tokenize import IGNORE, Encoded, collate

StepCallback = Callable[[int, int, float, float], None]
"""on_step(step, total_steps, loss, tokens_per_s)"""
ExtraLoss = Callable[[], torch.Tensor]
BatchLoss = Callable[[list[Any]], tuple[torch.Tensor, int, int]]
"""batch_loss(micro-batch) -> (mean loss, tokens, target tokens); SFT on ``Encoded`` when not given."""


@dataclass(frozen=True)
class TrainSettings:
    """One local training run: the ``[client]`` keys it reads (``config.ClientConfig``, where their
    defaults live) at a given number of steps. Build it with :meth:`from_config`."""

    steps: int
    batch_size: int
    grad_accum: int
    lr: float
    schedule: str
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    dpo_beta: float
    """DPO temperature for preference pairs among the training data (``client.dpo``)."""

    @classmethod
    def from_config(cls, client: ClientConfig, dpo_beta: float | None = None, **changes: Any) -> TrainSettings:
        """The settings of ``client`` (steps = ``local_steps``), ``alignment.dpo_beta`` (its default when
        None), then ``changes`` (e.g. ``steps=``, ``lr=``)."""
        return replace(
            cls(client.local_steps, client.batch_size, client.grad_accum, client.lr, client.lr_schedule,
                client.warmup_steps, client.weight_decay, client.max_grad_norm,
                AlignmentConfig().dpo_beta if dpo_beta is None else dpo_beta),
            **changes,
        )


@dataclass
class TrainResult:
    steps: int
    mean_loss: float
    tokens: int
    target_tokens: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    compute_seconds: float = 0.0
    """Time inside forward and backward passes only (the rest is optimizer, collation, callbacks)."""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def lr_factor(step: int, total: int, schedule: str, warmup: int) -> float:
    """Multiplier of the base learning rate at 0-based ``step``.

    1. warm-up: linear from 1/(warmup+1) to 1 over ``warmup`` steps;
    2. constant: 1;
    3. linear: decays to 0 at ``total``;
    4. cosine: 0.5 (1 + cos(pi t)) with t the post-warm-up progress.
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant" or total <= warmup:
        return 1.0
    t = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - t)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def _autocast(model: Any) -> Any:
    dtype = next(p for p in model.parameters() if not p.requires_grad).dtype
    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


def token_nll(model: Any, batch: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """Next-token NLL on target tokens only; the LM head sees only those positions.

    input_ids, attention_mask, labels: (B, T). Returns a scalar ('mean'/'sum') or (N,) ('none').
    """
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    labels = batch["labels"].to(device)
    with _autocast(model):
        hidden = model.get_decoder()(input_ids=ids, attention_mask=batch["attention_mask"].to(device))
        h = hidden.last_hidden_state[:, :-1]  # (B, T-1, C): position t predicts token t+1
        target = labels[:, 1:]  # (B, T-1)
        mask = target != IGNORE
        logits = model.get_output_embeddings()(h[mask])  # (N, V)
    return F.cross_entropy(logits.float(), target[mask], reduction=reduction)


def sft_loss(model: Any, examples: Sequence[Encoded], pad_id: int) -> tuple[torch.Tensor, int, int]:
    """Mean target-token NLL of ``examples``, with (tokens, target tokens): a ``BatchLoss``."""
    batch = collate(examples, pad_id)
    return token_nll(model, batch), int(batch["attention_mask"].sum()), int((batch["labels"] != IGNORE).sum())


def _batches(data: Sequence[Any], batch_size: int, count: int, gen: torch.Generator) -> list[list[Any]]:
    """``count`` batches drawn by seeded reshuffled passes over the data."""
    out: list[list[Any]] = []
    order: list[int] = []
    while len(out) < count:
        if len(order) < batch_size:
            order += torch.randperm(len(data), generator=gen).tolist()
        take, order = order[:batch_size], order[batch_size:]
        out.append([data[i] for i in take])
    return out


StepFn = Callable[[int], tuple[float, int, int]]
"""step(i) -> (loss, tokens, target tokens); leaves step i's gradient in ``.grad`` of the parameters."""


def optimize(params: dict[str, torch.nn.Parameter], settings: TrainSettings, step_fn: StepFn,
             on_step: StepCallback | None = None) -> TrainResult:
    """AdamW on ``params`` (float32) for ``settings.steps`` optimizer steps, each along the gradient
    that ``step_fn`` leaves: learning-rate schedule, gradient clipping, callback. Every local
    trainer (SFT, DPO, multi-objective alignment) runs this loop."""
    trainable = list(params.values())
    opt = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    losses: list[float] = []
    tokens = targets = 0
    start = time.perf_counter()
    for step in range(settings.steps):
        for group in opt.param_groups:
            group["lr"] = settings.lr * lr_factor(step, settings.steps, settings.schedule, settings.warmup_steps)
        step_loss, n_tokens, n_targets = step_fn(step)
        tokens += n_tokens
        targets += n_targets
        if settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(step_loss)
        if on_step is not None:
            elapsed = time.perf_counter() - start
            on_step(step + 1, settings.steps, step_loss, tokens / elapsed if elapsed > 0 else 0.0)
    seconds = time.perf_counter() - start
    mean = sum(losses) / len(losses) if losses else float("nan")
    return TrainResult(settings.steps, mean, tokens, targets, seconds, losses)


def train_local(
    model: Any,
    params: dict[str, torch.nn.Parameter],
    data: Sequence[Any],
    settings: TrainSettings,
    pad_id: int,
    seed: int,
    extra_loss: ExtraLoss | None = None,
    on_step: StepCallback | None = None,
    batch_loss: BatchLoss | None = None,
) -> TrainResult:
    """:func:`optimize` over seeded micro-batches of ``data`` (``grad_accum`` per step).

    ``extra_loss`` adds a differentiable term (FedProx / Ditto proximal pull) to each step;
    ``batch_loss`` replaces the SFT loss of a micro-batch (e.g. ``client.dpo.mixed_batch_loss``).
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout, if any
    micro = _batches(data, settings.batch_size, settings.steps * settings.grad_accum, gen)
    compute = 0.0

    def step(i: int) -> tuple[float, int, int]:
        nonlocal compute
        step_loss, tokens, targets = 0.0, 0, 0
        for k in range(settings.grad_accum):
            chunk = micro[i * settings.grad_accum + k]
            t_c = time.perf_counter()
            loss, n_tokens, n_targets = sft_loss(model, chunk, pad_id) if batch_loss is None else batch_loss(chunk)
            loss = loss / settings.grad_accum
            if extra_loss is not None:
                loss = loss + extra_loss() / settings.grad_accum
            loss.backward()
            compute += time.perf_counter() - t_c
            step_loss += float(loss.detach())
            tokens += n_tokens
            targets += n_targets
        return step_loss, tokens, targets

    model.train()
    result = optimize(params, settings, step, on_step)
    model.eval()
    result.compute_seconds = compute
    return result


@torch.no_grad()
def evaluate_loss(model: Any, data: Sequence[Encoded], batch_size: int, pad_id: int) -> tuple[float, int]:
    """Mean next-token NLL over all target tokens of ``data``; returns (loss, target tokens)."""
    total, count = 0.0, 0
    ordered = sorted(data, key=lambda e: len(e.input_ids))  # less padding
    for i in range(0, len(ordered), batch_size):
        batch = collate(ordered[i : i + batch_size], pad_id)
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        if n == 0:
            continue
        total += float(token_nll(model, batch, reduction="sum"))
        count += n
    return (total / count if count else float("nan")), count
