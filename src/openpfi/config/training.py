"""The federation and each client's local training: [federation] and [client]."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from openpfi.config.section import Section


class FederationConfig(Section):
    rounds: int = Field(3, ge=1, le=100_000)
    clients_per_round: int = Field(8, ge=1)
    strategy: Literal["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"] = "fedavg"
    server_lr: float = Field(1.0, gt=0)
    server_momentum: float = Field(0.9, ge=0, lt=1)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)
    proximal_mu: float = Field(0.01, ge=0)
    """FedProx: mu/2 ||w - w_global||^2 added to each client's loss."""
    min_fit_clients: int = Field(1, ge=1)
    """A round goes on when at least this many sampled clients answered."""
    eval_every: int = Field(1, ge=1)
    """Evaluate the trained clients on their held-out data every this many rounds and always at the last
    round; rounds in between carry no held-out figures (saves time in long benchmarks)."""


class ClientConfig(Section):
    local_steps: int = Field(10, ge=0)
    """Optimizer steps per round (0 = use local_epochs)."""
    local_epochs: float = Field(0.0, ge=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(256, ge=8)
    lr: float = Field(2e-4, gt=0)
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    eval_batch_size: int = Field(8, ge=1)
    max_eval_examples: int = Field(32, ge=1)
