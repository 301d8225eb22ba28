"""From a config to the clients of a run: data dealt to clients, the shared base model, tokenized examples.

Every engine builds its clients here (in-process: all of them; Flower: each node its own),
and everything that can fail on bad input fails here, before a run folder is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from openpfi.assembly.compatibility import check_combinations
from openpfi.assembly.personalization import PersonalSetup, setup_personalization
from openpfi.assembly.retrieval import attach_retrieval
from openpfi.client.federated import ClientSettings, FederatedClient, SharedModel
from openpfi.client.train import TrainSettings
from openpfi.config import Config
from openpfi.data import ClientData, Example, LoadResult, groups_are_public, load_examples, make_clients
from openpfi.data.lazy import LazyEncoded
from openpfi.data.tokenize import encode_example
from openpfi.models.adapter_check import read_checked_adapter
from openpfi.models.loader import load_model
from openpfi.monitor.probes import group_probe_filter


@dataclass
class Prepared:
    cfg: Config
    shared: SharedModel
    data: list[ClientData]
    loaded_data: LoadResult
    start_adapter: dict[str, Any]
    clients: list[FederatedClient] = field(default_factory=list)
    personal: PersonalSetup | None = None
    """Personalization method and LoRA aggregation (assembly/personalization.py)."""


def load_clients(cfg: Config) -> tuple[LoadResult, list[ClientData]]:
    d = cfg.data
    loaded = load_examples(
        d.source,
        path=d.path,
        client_field=d.client_field,
        prompt_field=d.prompt_field,
        response_field=d.response_field,
        label_field=d.label_field,
        strict=d.strict,
        languages=d.languages,
        messages_field=d.messages_field,
        split=d.split,
        opening_turns=d.opening_turns,
    )
    clients = make_clients(
        _without_group_probes(cfg, loaded.examples),
        method=d.partition,
        num_clients=d.num_clients,
        seed=cfg.seed,
        heldout_fraction=d.heldout_fraction,
        min_examples=d.min_examples,
        max_examples=d.max_examples,
        alpha=d.alpha,
        quantity_sigma=d.quantity_sigma,
    )
    return loaded, clients


def _without_group_probes(cfg: Config, examples: list[Example]) -> list[Example]:
    """``examples`` without the public group texts the monitor's server scores (probes.group_items):
    a group's fairness gap is measured on text no client trains or evaluates on."""
    m = cfg.monitor
    if not (m.enabled and m.group_items and groups_are_public(cfg.data.source)):
        return examples
    keep = group_probe_filter(sorted({e.group for e in examples}), m.group_items, m.probe_seed)
    return [e for e in examples if keep(e.prompt, e.response)]


def client_settings(cfg: Config) -> ClientSettings:
    c = cfg.client
    return ClientSettings(
        steps=c.local_steps,
        local_epochs=c.local_epochs,
        train=TrainSettings.from_config(c, cfg.alignment.dpo_beta),
        eval_batch_size=c.eval_batch_size,
        max_eval_examples=c.max_eval_examples,
        proximal_mu=cfg.federation.proximal_mu if cfg.federation.strategy == "fedprox" else 0.0,
    )


def load_shared(cfg: Config, shared: SharedModel | None = None) -> tuple[SharedModel, dict[str, Any]]:
    """The base model with LoRA attached (seeded) and the starting adapter (``model.adapter`` or the init).

    ``shared``: an already loaded model to reuse (a benchmark's), its adapter reset to the start.
    """
    if shared is None:
        lm = load_model(cfg.model.name, cfg.model.device, cfg.model.dtype)
        shared = SharedModel(lm, cfg.lora.r, cfg.lora.alpha, cfg.lora.targets, cfg.lora.dropout, cfg.seed)
    start = shared.initial_state
    if cfg.model.adapter:
        start = read_checked_adapter(cfg.model.adapter, shared.layout, shared.params)
        shared.load_external(start)
        start = shared.get_state()
    shared.set_state(start)
    return shared, start


def prepare(cfg: Config) -> Prepared:
    """Everything that can fail on bad input, before anything is written."""
    check_combinations(cfg)
    loaded_data, data = load_clients(cfg)
    shared, start = load_shared(cfg)
    lm = shared.loaded
    settings = client_settings(cfg)
    encode = partial(encode_example, lm.tokenizer, max_length=cfg.client.max_length)
    clients = [  # tokenized when a round reads them, dropped after (FederatedClient.release)
        FederatedClient(
            c.client_id,
            LazyEncoded(c.train, encode),
            LazyEncoded(c.heldout[: cfg.client.max_eval_examples], encode),
            settings,
            group=c.train[0].group if c.train else "",
        )
        for c in data
    ]
    attach_retrieval(cfg, data, clients)
    personal = setup_personalization(cfg, shared, start, clients)
    return Prepared(cfg, shared, data, loaded_data, start, clients, personal)
