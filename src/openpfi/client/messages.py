"""What crosses the privacy boundary from a client to the server, and nothing more.

A client answers a fit request with a ``ClientUpdate``: the shared part of its adapter delta,
its example count, the training scalars of ``UPDATE_SCALARS`` (nothing else: every engine
checks the names, the in-process engine after each fit, Flower when it turns a reply back into
an update) and, when the run is monitored, a ``MonitorReport``: the fixed-length vector the
client monitor (client/monitor_client.py) encoded, clipped and noised. An evaluate request is
answered with an ``EvalResult`` (the held-out loss of the model it was sent, on the client's
own data). Per-client figures beyond these stay with the client (``ClientStore``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import get_args

import numpy as np
import torch

from openpfi.algorithms.state import StateDict, nbytes
from openpfi.client.objective_report import CAP_HITS, OBJECTIVE_SCALARS
from openpfi.config.methods import Objective
from openpfi.errors import UserError

UPDATE_SCALARS = frozenset({
    "train_loss", "steps", "tokens", "target_tokens", "train_seconds", "compute_seconds", "tokens_per_s",
    "monitor_seconds",  # the client's probing time (the monitor's cost)
    "grad_cosine", "train_reward_acc",  # alignment: mean cosine of the objectives' gradients, DPO reward accuracy
    CAP_HITS,  # alignment: FIRM steps whose weight solver stopped at its cap (client/objective_report.py)
    "secagg_clipped", "flower_process_s", "flower_import_s", "flower_prepare_s",  # Flower node costs
    "flower_channel_s", "flower_slot_wait_s",  # ... its wait for a compute slot (several nodes on one host)
    "flower_peak_rss_bytes", "flower_budget_bytes",  # ... and its node worker's memory
})
"""The training scalars a ``ClientUpdate`` may carry."""
# Per alignment objective m, the scalars ``<name>_<m>`` of OBJECTIVE_SCALARS (client/objective_report.py).
_PER_OBJECTIVE = frozenset(f"{name}_{m}" for name in OBJECTIVE_SCALARS for m in get_args(Objective))


def check_scalars(client_id: str, scalars: Mapping[str, float]) -> None:
    """Refuse a scalar outside the allow-list (``UPDATE_SCALARS`` and ``OBJECTIVE_SCALARS``)."""
    unknown = sorted(k for k in scalars if k not in UPDATE_SCALARS and k not in _PER_OBJECTIVE)
    if unknown:
        raise UserError(
            f"client {client_id} sent scalar(s) {unknown} that a ClientUpdate may not carry "
            "(client/messages.py UPDATE_SCALARS); update rejected"
        )


@dataclass(frozen=True, eq=False)
class MonitorReport:
    """A client's monitor report: a fixed-length vector of bounded counts and sums (per probe
    suite, per group, per histogram bin; the layout is ``monitor.schema.ReportSchema``), already
    clipped and noised on the client. Only the client monitor builds one from a model's probe
    outputs (``ClientMonitor.run``); the Flower record conversion rebuilds it from the wire.

    ``values`` is a read-only float64 copy of the vector it is given, so no caller keeps a
    handle that could change it after it was sent.
    """

    values: np.ndarray

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64).reshape(-1)
        values.setflags(write=False)
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return int(self.values.size)

    @property
    def nbytes(self) -> int:
        """Bytes on the wire at float32."""
        return int(self.values.size) * 4


@dataclass
class ClientUpdate:
    """A client's answer to a fit request.

    ``delta`` holds the SHARED adapter tensors only (client minus global), so
    personal parameters never leave the client. ``scalars`` are training figures
    from the allow-list ``UPDATE_SCALARS`` (checked here and again by the engine).
    """

    client_id: str
    num_examples: int
    delta: StateDict
    scalars: dict[str, float] = field(default_factory=dict)
    extra: dict[str, StateDict] = field(default_factory=dict)
    """Additional uploads some algorithms need (e.g. FMGDA's per-objective deltas)."""
    monitor: MonitorReport | None = None
    """The client's clipped, noised monitor report (None when the monitor is off)."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """What an engine calls on an update it receives (the scalars may have grown since)."""
        check_scalars(self.client_id, self.scalars)
        if self.monitor is not None and not isinstance(self.monitor, MonitorReport):
            raise UserError(f"client {self.client_id} sent a monitor report that is not a MonitorReport")

    @property
    def bytes_up(self) -> int:
        extra = sum(nbytes(s) for s in self.extra.values())
        mon = 0 if self.monitor is None else self.monitor.nbytes
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
