"""The federation and each client's local training: [federation] and [client]."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from openpfi.config.section import Section


class FederationConfig(Section):
    rounds: int = Field(3, ge=1, le=100_000)
    """Federated rounds."""
    clients_per_round: int = Field(8, ge=1)
    """Clients sampled each round (at most data.num_clients)."""
    strategy: Literal["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"] = "fedavg"
    """Server aggregation: weighted mean (fedavg, fedprox) or a server optimizer on the mean delta."""
    server_lr: float = Field(1.0, gt=0)
    """Server learning rate on the mean delta (fedavgm, fedadam, fedyogi, fedadagrad; 1 = plain FedAvg)."""
    server_momentum: float = Field(0.9, ge=0, lt=1)
    """fedavgm: server momentum."""
    beta1: float = Field(0.9, ge=0, lt=1)
    """fedadam / fedyogi / fedadagrad: first-moment decay."""
    beta2: float = Field(0.99, ge=0, lt=1)
    """fedadam / fedyogi: second-moment decay."""
    tau: float = Field(1e-3, gt=0)
    """fedadam / fedyogi / fedadagrad: adaptivity, added to sqrt(v)."""
    proximal_mu: float = Field(0.01, ge=0)
    """FedProx: mu/2 ||w - w_global||^2 added to each client's loss."""
    min_fit_clients: int = Field(1, ge=1)
    """A round goes on when at least this many sampled clients answered."""
    eval_every: int = Field(1, ge=1)
    """Evaluate the trained clients on their held-out data every this many rounds and always at the last
    round; rounds in between carry no held-out figures (saves time in long benchmarks)."""
    aggregator: Literal["mean", "median", "trimmed_mean", "krum", "multi_krum"] = "mean"
    """How the server combines the clients' deltas before its optimizer steps: the example-weighted
    mean (FedAvg), or a Byzantine-robust rule (strategies/robust.py): coordinate median, trimmed mean
    (federation.trim_fraction), Krum or Multi-Krum (federation.byzantine_clients)."""
    trim_fraction: float = Field(0.1, ge=0)
    """trimmed_mean: each coordinate drops its floor(trim_fraction * n) largest and smallest values
    across the n valid updates; must be below 0.5 (at 0.5 no client is left)."""
    byzantine_clients: int = Field(0, ge=0)
    """krum / multi_krum: f, the number of Byzantine clients tolerated; a round needs more than
    2f + 2 valid updates. Multi-Krum averages the n - f best-scored clients."""
    max_update_norm: float = Field(1000.0, ge=0)
    """The server rejects a client update whose L2 norm exceeds this before aggregation (0 = no bound).
    Honest LoRA deltas stay far below it (each entry moves at most lr per Adam step)."""
    compression: Literal["none", "fp16", "int8", "topk"] = "none"
    """Upload compression of the client delta (algorithms/compress.py), with error feedback kept in the
    client's store: float16, symmetric per-tensor int8, or per-tensor top-k (federation.topk_fraction)."""
    topk_fraction: float = Field(0.1, gt=0, le=1)
    """topk: share of each tensor's entries sent (values + int32 indices)."""


class ClientConfig(Section):
    local_steps: int = Field(10, ge=0)
    """Optimizer steps per round (0 = use local_epochs)."""
    local_epochs: float = Field(0.0, ge=0)
    """Passes over the client's training data per round when local_steps = 0."""
    batch_size: int = Field(4, ge=1)
    """Examples per micro-batch."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches accumulated per optimizer step."""
    max_length: int = Field(256, ge=8)
    """Tokens per example (chat template included); longer ones lose context from the left, then response from the right."""
    lr: float = Field(2e-4, gt=0)
    """AdamW learning rate of the LoRA parameters."""
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning-rate schedule over a round's local steps."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps at the start of each round's schedule."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(1.0, ge=0)
    """Gradient clipping norm (0 = none)."""
    eval_batch_size: int = Field(8, ge=1)
    """Examples per batch of held-out evaluation."""
    max_eval_examples: int = Field(32, ge=1)
    """Held-out examples each client evaluates on."""
    timeout_s: float = Field(0.0, ge=0)
    """In-process engine: a client whose fit takes longer than this many seconds is stopped and dropped
    for the round (0 = no limit). The Flower engine waits flower.reply_timeout instead."""
