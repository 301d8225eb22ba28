"""From a config to the federated server: server optimizer, sampling, LoRA-aware aggregation, trust rules."""

from __future__ import annotations

from typing import Any

from openpfi.algorithms.server_opt import ServerOptConfig
from openpfi.assembly.clients import Prepared
from openpfi.assembly.personalization import PersonalSetup
from openpfi.assembly.trust import server_trust
from openpfi.config import Config
from openpfi.strategies.server import FedServer, SamplingConfig


def make_server(cfg: Config, personal: PersonalSetup | None = None, engine: str = "inprocess") -> FedServer:
    """``engine``: "inprocess" or "flower" (where the DP noise of the updates is added differs)."""
    f = cfg.federation
    opt = ServerOptConfig(f.strategy, f.server_lr, f.server_momentum, f.beta1, f.beta2, f.tau)
    aggregation = personal.make_aggregation() if personal is not None else None
    sampling = SamplingConfig(f.clients_per_round, f.min_fit_clients, cfg.seed)
    return FedServer(opt, sampling, aggregation, **server_trust(cfg, engine))


def server_start(prep: Prepared) -> dict[str, Any]:
    """The server's first global state: only what the method shares (personal parts stay with clients)."""
    return prep.personal.server_start(prep.start_adapter) if prep.personal is not None else prep.start_adapter
