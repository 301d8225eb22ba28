"""Cross-section checks of trustworthy adaptation: robust aggregation, DP of the updates, compression.

Each check refuses, with one line naming the keys and the fix, a combination whose maths do
not hold: a robust rule needs every client's update (SecAgg+ hides them; LoRA product / stack /
zero-pad aggregation replace the per-coordinate votes); client-level DP bounds a sum of
clipped factor deltas; compression changes what one upload carries. Whether a target epsilon
is reachable needs the accountant (algorithms/privacy.py) and is checked in
``assembly.trust.plan_update_privacy``, also before anything is written.
"""

from __future__ import annotations

from typing import Any


def robust_problems(cfg: Any) -> str | None:
    """Why ``federation.aggregator`` cannot run with this config (None when it can)."""
    f = cfg.federation
    if f.trim_fraction >= 0.5:
        return (
            f"federation.trim_fraction = {f.trim_fraction:g} leaves no client (each coordinate drops that share "
            "of the updates from each end); use a value below 0.5"
        )
    if f.aggregator == "mean":
        return None
    agg = f'federation.aggregator = "{f.aggregator}"'
    if cfg.flower.secagg == "updates":
        return (
            f'{agg} needs each client\'s update, which flower.secagg = "updates" hides from the server '
            '(it sees only the sum); use federation.aggregator = "mean" or flower.secagg = "monitor"'
        )
    if cfg.lora.aggregation != "naive":
        return (
            f'{agg} votes per coordinate on the clients\' factor deltas, which lora.aggregation = '
            f'"{cfg.lora.aggregation}" replaces (re-factored products, stacked or zero-padded factors); '
            'use lora.aggregation = "naive"'
        )
    if cfg.alignment.method == "fmgda":
        return f'{agg} does not apply to alignment.method = "fmgda" (per-objective deltas solved by MGDA); use "mean"'
    if f.aggregator in ("krum", "multi_krum") and f.clients_per_round <= 2 * f.byzantine_clients + 2:
        need = 2 * f.byzantine_clients + 3
        return (
            f"{agg} with federation.byzantine_clients = {f.byzantine_clients} needs at least {need} clients per "
            f"round (n > 2f + 2, Blanchard et al. 2017); federation.clients_per_round is {f.clients_per_round}: "
            "raise it or lower byzantine_clients"
        )
    return None


def dp_problems(cfg: Any) -> str | None:
    """Why the update-DP settings are inconsistent (None when they are off or consistent)."""
    p, f = cfg.privacy, cfg.federation
    if p.update_clip == 0:
        for key in ("update_noise_multiplier", "update_target_epsilon"):
            if getattr(p, key) > 0:
                return f"privacy.{key} needs privacy.update_clip > 0 (the L2 bound of a client's update)"
        return None
    if (p.update_noise_multiplier > 0) == (p.update_target_epsilon > 0):
        return (
            "privacy.update_clip > 0 needs exactly one of privacy.update_noise_multiplier (z) or "
            "privacy.update_target_epsilon (z planned from it)"
        )
    if f.min_fit_clients > 1:
        return (
            "with privacy.update_clip every round is released whatever the number of valid updates (holding a round "
            "back for too few clients would reveal how many took part); set federation.min_fit_clients = 1"
        )
    if cfg.lora.aggregation != "naive":
        return (
            f'privacy.update_clip bounds the sum of the clients\' factor deltas, which lora.aggregation = '
            f'"{cfg.lora.aggregation}" replaces; use lora.aggregation = "naive"'
        )
    if cfg.alignment.method == "fmgda":
        return 'privacy.update_clip does not cover alignment.method = "fmgda"\'s per-objective uploads; use "firm"'
    return None


def compression_problems(cfg: Any) -> str | None:
    """Why ``federation.compression`` cannot apply (None when it can or is off)."""
    c = cfg.federation.compression
    if c == "none":
        return None
    if cfg.flower.secagg == "updates":
        return (
            f'federation.compression = "{c}" cannot shrink SecAgg+ uploads (every coordinate travels as a masked '
            '32-bit integer); use compression = "none" or flower.secagg = "monitor"'
        )
    if cfg.alignment.method == "fmgda":
        return f'federation.compression = "{c}" compresses the adapter delta; alignment.method = "fmgda" uploads ' \
               'per-objective deltas instead: use compression = "none"'
    if cfg.lora.aggregation in ("product", "stack") or cfg.lora.client_ranks:
        return (
            f'federation.compression = "{c}" applies to equal-rank factor deltas; use lora.aggregation = "naive" '
            'or "zeropad" without lora.client_ranks, or compression = "none"'
        )
    return None


def trust_problems(cfg: Any) -> str | None:
    for check in (robust_problems, dp_problems, compression_problems):
        problem = check(cfg)
        if problem is not None:
            return problem
    return None
