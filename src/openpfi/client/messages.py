"""What crosses the privacy boundary from a client to the server, and nothing more."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from openpfi.algorithms.state import StateDict, nbytes


@dataclass
class ClientUpdate:
    """A client's answer to a fit request.

    ``delta`` holds the SHARED adapter tensors only (client minus global), so
    personal parameters never leave the client. ``scalars`` are the training
    figures the config allows to be reported (loss, tokens, timings).
    """

    client_id: str
    num_examples: int
    delta: StateDict
    scalars: dict[str, float] = field(default_factory=dict)
    extra: dict[str, StateDict] = field(default_factory=dict)
    """Additional uploads some algorithms need (e.g. FMGDA's per-objective deltas)."""
    monitor: np.ndarray | None = None
    """The client's clipped, noised MonitorReport vector (None when the monitor is off)."""

    @property
    def bytes_up(self) -> int:
        extra = sum(nbytes(s) for s in self.extra.values())
        mon = 0 if self.monitor is None else int(self.monitor.astype(np.float32).nbytes)
        return nbytes(self.delta) + extra + mon


@dataclass
class EvalResult:
    """Held-out evaluation of a model on one client's own data."""

    client_id: str
    num_examples: int
    loss: float
    target_tokens: int
    personal_loss: float | None = None
    """Loss of the client's own (personalized) model, when it has one."""

    @property
    def perplexity(self) -> float:
        return float(torch.tensor(self.loss).exp())
