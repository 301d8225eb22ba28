"""Which settings combine, asked of the parts that know: the personalization policy, the LoRA
aggregation, and the alignment recipe (which trains one shared adapter).

``check_combinations`` runs before anything is loaded or written: in ``openpfi run`` / ``deploy``
/ ``monitor plan`` right after the config is read, and again where every engine builds its
clients and server.
"""

from __future__ import annotations

from openpfi.client.personal import policy_class
from openpfi.config import Config
from openpfi.errors import UserError
from openpfi.strategies.lora_aggregation import check_aggregation_config


def check_alignment(cfg: Config) -> None:
    """Alignment trains one shared adapter: no personal parts, no LoRA-aware aggregation, one rank."""
    align, method, lo = cfg.alignment.method, cfg.personalization.method, cfg.lora
    if align == "none":
        return
    clashes = [f'personalization.method = "{method}"'] if method != "none" else []
    clashes += [f'lora.aggregation = "{lo.aggregation}"'] if lo.aggregation != "naive" else []
    clashes += [f"lora.client_ranks = {lo.client_ranks}"] if lo.client_ranks else []
    if clashes:
        raise UserError(f'alignment.method = "{align}" does not combine with {clashes[0]}; alignment trains one '
                        "shared adapter, so unset one of them")


def check_combinations(cfg: Config) -> None:
    """One clear UserError for the first combination of settings that cannot work together."""
    check_alignment(cfg)
    lo, f = cfg.lora, cfg.federation
    check_aggregation_config(lo.aggregation, lo.r, lo.client_ranks, lo.keep_merged, f.strategy, f.server_lr)
    policy_class(cfg.personalization.method).check_aggregation(lo.aggregation)
