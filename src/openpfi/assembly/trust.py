"""Trustworthy adaptation, wired from the config: DP of the updates, robust aggregation, validation, compression.

    plan_update_privacy(cfg)   the DP plan (noise multiplier from a target epsilon, sampling rate,
                               where the noise is added); an unreachable target is refused here,
                               before anything is written
    server_trust(cfg, ...)     the server's screening rules, robust rule and DP part
    make_uplink(cfg, engine)   what each client does to its update before upload (client/uplink.py)
    attach_run(server, run)    the server's secret from beside the run folder; the hook that keeps
                               privacy.json's "updates" section in step with the checkpoints

Every engine (in-process, Flower) builds these from the same config with these functions.
"""

from __future__ import annotations

from typing import Any

from openpfi.algorithms.privacy import epsilon_after, noise_multiplier_for
from openpfi.client.uplink import Uplink
from openpfi.config import Config
from openpfi.errors import UserError
from openpfi.monitor.update_ledger import save_update_ledger
from openpfi.runfolder import RunFolder
from openpfi.strategies.robust import RobustRule
from openpfi.strategies.screening import ScreenRules
from openpfi.strategies.update_privacy import UpdateDP, UpdatePrivacy


def check_trust(cfg: Config, engine: str = "inprocess") -> None:
    """Everything about trust that needs more than the config's own checks, before any work:
    the DP plan of the updates and the audit signing key."""
    plan_update_privacy(cfg, engine)
    if cfg.output.audit_signing_key:
        from openpfi.monitor.audit_sign import load_private

        load_private(cfg.output.audit_signing_key)


def noise_mode(cfg: Config, engine: str = "inprocess") -> str:
    """local (robust aggregator), distributed (Flower with SecAgg+ of the updates) or central."""
    if cfg.federation.aggregator != "mean":
        return "local"
    if engine == "flower" and cfg.flower.secagg == "updates":
        return "distributed"
    return "central"


def plan_update_privacy(cfg: Config, engine: str = "inprocess") -> UpdateDP | None:
    """None when privacy.update_clip = 0; ``UserError`` when the target epsilon is out of reach."""
    p, f = cfg.privacy, cfg.federation
    if p.update_clip <= 0:
        return None
    q = min(1.0, f.clients_per_round / cfg.data.num_clients)
    mode = noise_mode(cfg, engine)
    z = p.update_noise_multiplier
    if p.update_target_epsilon > 0:
        cap = p.update_max_noise_multiplier
        floor = epsilon_after(cap, f.rounds, p.delta, sampling_rate=q, local=mode == "local")
        if floor > p.update_target_epsilon:
            raise UserError(
                f"privacy.update_target_epsilon = {p.update_target_epsilon:g} over federation.rounds = {f.rounds} "
                f"(sampling rate {q:g}, {mode} noise) needs a noise multiplier above "
                f"privacy.update_max_noise_multiplier = {cap:g}; raise the target to at least {floor:.3g}, raise the "
                "cap, or use fewer rounds"
            )
        z = min(cap, noise_multiplier_for(p.update_target_epsilon, f.rounds, p.delta, sampling_rate=q,
                                          local=mode == "local"))
    return UpdateDP(clip=p.update_clip, noise_multiplier=z, sampling_rate=q, expected_clients=float(f.clients_per_round),
                    mode=mode, delta=p.delta)


def screen_rules(cfg: Config, dp: UpdateDP | None, bound_examples: bool = True) -> ScreenRules:
    f = cfg.federation
    return ScreenRules(
        compression=f.compression,
        topk_fraction=f.topk_fraction,
        max_update_norm=f.max_update_norm,
        max_examples=cfg.data.max_examples if bound_examples else 0,
        noise_std=dp.noise_std if dp is not None and dp.mode == "local" else 0.0,
    )


def robust_rule(cfg: Config) -> RobustRule:
    f = cfg.federation
    return RobustRule(f.aggregator, f.trim_fraction, f.byzantine_clients)


def server_trust(cfg: Config, engine: str = "inprocess", bound_examples: bool = True) -> dict[str, Any]:
    """Keyword arguments of ``FedServer``: ``rules``, ``robust``, ``privacy``."""
    dp = plan_update_privacy(cfg, engine)
    return {
        "rules": screen_rules(cfg, dp, bound_examples),
        "robust": robust_rule(cfg),
        "privacy": UpdatePrivacy(dp) if dp is not None else None,
    }


def make_uplink(cfg: Config, engine: str = "inprocess") -> Uplink | None:
    dp = plan_update_privacy(cfg, engine)
    f = cfg.federation
    uplink = Uplink(
        compression=f.compression,
        topk_fraction=f.topk_fraction,
        clip=dp.clip if dp is not None else 0.0,
        noise_std_sum=dp.noise_std if dp is not None else 0.0,
        mode=dp.mode if dp is not None else "central",
    )
    return uplink if uplink.active else None


def attach_run(server: Any, run: RunFolder) -> list[Any]:
    """Give the server its run's secret; return the round hooks that write the updates' ledger."""
    privacy: UpdatePrivacy | None = getattr(server, "privacy", None)
    if privacy is None:
        return []
    if privacy.dp.mode == "central" or privacy.dp.sampling_rate < 1:  # the server draws noise or a sample
        privacy.secret = run.server_secret()

    def write_ledger(result: Any) -> None:
        save_update_ledger(run.path, privacy.ledger)

    save_update_ledger(run.path, privacy.ledger)  # a resumed run drops the rounds past its checkpoint
    return [write_ledger]
