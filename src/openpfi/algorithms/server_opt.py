"""Server optimizers on the mean client delta.

Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR), Algorithm 2.
Delta convention: ``delta_i = x_i - x`` (client params minus global params), and
``Delta`` is the (weighted) mean of the ``delta_i``. With ``Delta^2`` elementwise:

- fedavg / fedprox:  ``x <- x + lr * Delta``  (lr = 1 gives the weighted mean of
  the client params; FedProx differs only on the client, by its proximal term)
- fedavgm (Hsu et al. 2019):  ``m <- momentum * m + Delta``;  ``x <- x + lr * m``
- fedadam / fedyogi / fedadagrad:  ``m <- beta1 * m + (1 - beta1) * Delta`` and

  - fedadagrad:  ``v <- v + Delta^2``
  - fedyogi:     ``v <- v - (1 - beta2) * Delta^2 * sign(v - Delta^2)``
  - fedadam:     ``v <- beta2 * v + (1 - beta2) * Delta^2``

  then ``x <- x + lr * m / (sqrt(v) + tau)``; ``m`` starts at 0 and ``v`` at
  ``tau^2``; no bias correction, as in the paper.

The optimizer state is a flat dict of tensors (``"m::<key>"``, ``"v::<key>"``)
so that it saves as safetensors next to the adapter. Steps compute in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from openpfi.algorithms.state import StateDict, check_same_keys
from openpfi.errors import UserError

SERVER_OPTIMIZERS = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad")

_ADAPTIVE = ("fedadam", "fedyogi", "fedadagrad")


@dataclass(frozen=True)
class ServerOptConfig:
    """Hyperparameters of the server optimizer."""

    name: str
    """One of :data:`SERVER_OPTIMIZERS`."""
    lr: float = 1.0
    """Server learning rate eta (1.0 with fedavg reproduces plain FedAvg)."""
    momentum: float = 0.9
    """FedAvgM momentum, in [0, 1)."""
    beta1: float = 0.9
    """First-moment decay of fedadam / fedyogi / fedadagrad, in [0, 1)."""
    beta2: float = 0.99
    """Second-moment decay of fedadam / fedyogi, in [0, 1)."""
    tau: float = 1e-3
    """Adaptivity tau > 0: added to sqrt(v), and v starts at tau^2."""

    def __post_init__(self) -> None:
        if self.name not in SERVER_OPTIMIZERS:
            raise UserError(f"unknown server optimizer '{self.name}': choose one of {', '.join(SERVER_OPTIMIZERS)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"server lr must be a positive number, got {self.lr}")
        for field in ("momentum", "beta1", "beta2"):
            value = getattr(self, field)
            if not 0.0 <= value < 1.0:
                raise UserError(f"server optimizer {field} must be in [0, 1), got {value}")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise UserError(f"server optimizer tau must be positive, got {self.tau}")


def _state_dtype(t: torch.Tensor) -> torch.dtype:
    """Buffers are at least float32, even for bf16/fp16 parameters."""
    return torch.promote_types(t.dtype, torch.float32)


def _expected_state_keys(cfg: ServerOptConfig, keys: list[str]) -> set[str]:
    if cfg.name == "fedavgm":
        return {f"m::{k}" for k in keys}
    if cfg.name in _ADAPTIVE:
        return {f"m::{k}" for k in keys} | {f"v::{k}" for k in keys}
    return set()


def init_server_state(cfg: ServerOptConfig, params: StateDict) -> StateDict:
    """Initial optimizer state for ``params``.

    Empty for fedavg / fedprox; ``m::<key> = 0`` for fedavgm; ``m::<key> = 0``
    and ``v::<key> = tau^2`` for the adaptive optimizers (Reddi et al. 2021).
    """
    state: StateDict = {}
    if cfg.name == "fedavgm" or cfg.name in _ADAPTIVE:
        for k, p in params.items():
            state[f"m::{k}"] = torch.zeros(p.shape, dtype=_state_dtype(p), device=p.device)
    if cfg.name in _ADAPTIVE:
        for k, p in params.items():
            state[f"v::{k}"] = torch.full(p.shape, cfg.tau**2, dtype=_state_dtype(p), device=p.device)
    return state


def server_step(
    cfg: ServerOptConfig, params: StateDict, mean_delta: StateDict, state: StateDict
) -> tuple[StateDict, StateDict]:
    """One server update; returns ``(new_params, new_state)``, inputs untouched.

    See the module docstring for the update of each optimizer.
    """
    keys = check_same_keys([params, mean_delta])
    expected = _expected_state_keys(cfg, keys)
    if set(state) != expected:
        raise UserError(
            f"server optimizer state does not match '{cfg.name}' and these parameters "
            f"(got {len(state)} entries, expected {len(expected)}): initialise it with init_server_state"
        )
    for name in state:
        key = name.split("::", 1)[1]
        if state[name].shape != params[key].shape:
            raise UserError(
                f"server optimizer state '{name}' has shape {tuple(state[name].shape)}, "
                f"parameter has {tuple(params[key].shape)}"
            )
    new_params: StateDict = {}
    new_state: StateDict = {}
    for k in keys:
        x = params[k].detach().double()
        d = mean_delta[k].detach().to(x.device, torch.float64)
        if cfg.name in ("fedavg", "fedprox"):
            x = x + cfg.lr * d
        elif cfg.name == "fedavgm":
            m = cfg.momentum * state[f"m::{k}"].double() + d
            x = x + cfg.lr * m
            new_state[f"m::{k}"] = m.to(state[f"m::{k}"].dtype)
        else:
            m = cfg.beta1 * state[f"m::{k}"].double() + (1.0 - cfg.beta1) * d
            v = state[f"v::{k}"].double()
            d2 = d * d
            if cfg.name == "fedadagrad":
                v = v + d2
            elif cfg.name == "fedyogi":
                v = v - (1.0 - cfg.beta2) * d2 * torch.sign(v - d2)
            else:  # fedadam
                v = cfg.beta2 * v + (1.0 - cfg.beta2) * d2
            x = x + cfg.lr * m / (torch.sqrt(v) + cfg.tau)
            new_state[f"m::{k}"] = m.to(state[f"m::{k}"].dtype)
            new_state[f"v::{k}"] = v.to(state[f"v::{k}"].dtype)
        new_params[k] = x.to(params[k].dtype)
    return new_params, new_state
