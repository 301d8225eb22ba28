"""From a config to the federated server: server optimizer, sampling, LoRA-aware aggregation."""

from __future__ import annotations

from typing import Any

from openpfi.algorithms.server_opt import ServerOptConfig
from openpfi.assembly.clients import Prepared
from openpfi.assembly.personalization import PersonalSetup
from openpfi.config import Config
from openpfi.strategies.server import FedServer, SamplingConfig


def make_server(cfg: Config, personal: PersonalSetup | None = None) -> FedServer:
    f = cfg.federation
    opt = ServerOptConfig(f.strategy, f.server_lr, f.server_momentum, f.beta1, f.beta2, f.tau)
    aggregation = personal.make_aggregation() if personal is not None else None
    return FedServer(opt, SamplingConfig(f.clients_per_round, f.min_fit_clients, cfg.seed), aggregation)


def server_start(prep: Prepared) -> dict[str, Any]:
    """The server's first global state: only what the method shares (personal parts stay with clients)."""
    return prep.personal.server_start(prep.start_adapter) if prep.personal is not None else prep.start_adapter
