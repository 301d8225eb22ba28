"""The methods `openpfi bench personalize` compares: each a name, a label and the config settings it runs with."""

from __future__ import annotations

from dataclasses import dataclass

from openpfi.bench import personalize_rag as rag


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    sets: tuple[str, ...] = ()
    train_phases: float = 1.0
    """Training passes per client per round, relative to FedAvg (for the duration estimate)."""
    personal: bool = False
    only_on: str = ""
    """A data set this method runs on alone ("" = every data set it suits)."""


METHODS: tuple[Method, ...] = (
    Method("fedavg", "FedAvg (naive A/B mean)"),
    Method("local", "local only", ('personalization.method="local"',), personal=True),
    Method("finetune", "FedAvg + local fine-tune", ('personalization.method="finetune"',), personal=True),
    Method("ditto", "Ditto", ('personalization.method="ditto"',), 2.0, True),
    Method("fedrep", "FedPer/FedRep (v_proj personal)", ('personalization.method="fedrep"',), personal=True),
    Method("fedsa-lora", "FedSA-LoRA (B personal)", ('personalization.method="fedsa-lora"',), personal=True),
    Method("ffa-lora", "FFA-LoRA (A frozen)", ('personalization.method="ffa-lora"',), 0.9),
    Method("product", "FedAvg, product mean (SVD)", ('lora.aggregation="product"',)),
    Method("stack-het", "FLoRA stacking, ranks 2/4/8", ('lora.aggregation="stack"', "lora.client_ranks=[2, 4, 8]")),
    Method(
        "zeropad-het", "HetLoRA zero-pad, ranks 2/4/8", ('lora.aggregation="zeropad"', "lora.client_ranks=[2, 4, 8]")
    ),
    Method("fedavg-dp", "FedAvg + client-level DP (C = 0.05, eps 8)",
           ("privacy.update_clip=0.05", "privacy.update_target_epsilon=8.0"), only_on="chitchat"),
)
"""``fedavg-dp`` is FedAvg with every client's update clipped and the sum noised (DP-FedAvg, central noise,
epsilon 8 at privacy.delta over the run): set beside ``fedavg`` it is the utility cost of DP, on the demo's
data set (chitchat)."""
METHODS += tuple(
    Method(m.name + rag.TRAINED, f"{m.label}, trained with retrieval", (*m.sets, rag.TRAIN_SET), m.train_phases, m.personal)
    for m in METHODS if m.name in rag.MEMORY_METHODS
)
"""The ``+rag`` variants (``rag.train``) run on the retrieval data set ``memory`` only (personalize_rag.py)."""
