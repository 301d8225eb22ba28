"""Which settings combine, asked of the parts that know: the personalization policy, the LoRA
aggregation, and the alignment recipe (which trains one shared adapter).

``check_combinations`` runs before anything is loaded or written: in ``openpfi run`` / ``deploy``
/ ``monitor plan`` right after the config is read, and again where every engine builds its
clients and server.
"""

from __future__ import annotations

from openpfi.client.personal import policy_class
from openpfi.config import AlignmentConfig, Config, DataConfig
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


def check_alignment_data(cfg: Config) -> None:
    """Data settings an alignment job would not read are refused, never dropped."""
    a, d = cfg.alignment, cfg.data
    if a.method == "none":
        if a.data:
            raise UserError('alignment.data is read by the alignment methods only; set alignment.method (e.g. "dpo") '
                            "or remove alignment.data")
        return
    defaults = DataConfig()
    # min/max_examples shape a partition of examples (examples/demo.toml sets them); the others name data
    used = {"num_clients", "heldout_fraction", "min_examples", "max_examples"} | ({"strict"} if a.data else set())
    ignored = [k for k in DataConfig.model_fields if k not in used and getattr(d, k) != getattr(defaults, k)]
    if ignored:
        where = "alignment.data (client/prompt/chosen/rejected JSONL)" if a.data else "alignment.data or the shipped pairs"
        raise UserError(f'data.{ignored[0]} is not read by alignment.method = "{a.method}", which trains on {where}; '
                        f"remove data.{ignored[0]} (own preference pairs: alignment.data = PATH)")
    if a.data:
        base = AlignmentConfig()
        dealt = [k for k in ("pairs_per_client", "mix", "mix_spread", "mix_alpha", "client_mix")
                 if getattr(a, k) != getattr(base, k)]
        if dealt:
            raise UserError(f"alignment.{dealt[0]} deals the shipped pairs and is not used with alignment.data "
                            f"(each client trains on its own rows); remove alignment.{dealt[0]}")


def check_retrieval(cfg: Config) -> None:
    """Retrieval (rag.train, rag.evaluate) is part of federated SFT; the alignment recipe trains on
    preference pairs and keeps no retrieval store, so it would ignore them."""
    used = [k for k in ("train", "evaluate") if getattr(cfg.rag, k)]
    if used and cfg.alignment.method != "none":
        raise UserError(f'rag.{used[0]} needs a retrieval store, which alignment.method = "{cfg.alignment.method}" '
                        f'does not keep (it trains on preference pairs); remove rag.{used[0]} or set alignment.method '
                        '= "none"')


def check_combinations(cfg: Config) -> None:
    """One clear UserError for the first combination of settings that cannot work together."""
    check_alignment(cfg)
    check_alignment_data(cfg)
    check_retrieval(cfg)
    lo, f = cfg.lora, cfg.federation
    check_aggregation_config(lo.aggregation, lo.r, lo.client_ranks, lo.keep_merged, f.strategy, f.server_lr)
    policy_class(cfg.personalization.method).check_aggregation(lo.aggregation)
