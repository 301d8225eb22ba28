"""Personalization and alignment methods: [personalization] and [alignment]."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, model_validator

from openpfi.config.section import Section


class PersonalizationConfig(Section):
    method: Literal["none", "local", "finetune", "ditto", "fedrep", "fedsa-lora", "ffa-lora"] = "none"
    """none = FedAvg; local = no federation; finetune = FedAvg + local fine-tuning; ditto = personal adapter
    pulled to the global one; fedrep = parameters matching personal_patterns stay personal;
    fedsa-lora = A shared, B personal; ffa-lora = A frozen, B trained and shared (client/personal.py)."""
    ditto_lambda: float = Field(0.1, ge=0)
    """Ditto: the personal loss adds lambda/2 ||w_personal - w_global||^2 (0 = purely local personal model)."""
    personal_patterns: list[str] = Field(default_factory=lambda: ["v_proj"])
    """fedrep: regexes (re.search) over adapter tensor names, e.g. "v_proj" or "layers\\.(2[4-9])\\.";
    matching tensors stay personal, the rest is shared. Each must match at least one tensor."""
    personal_steps: int = Field(0, ge=0)
    """Steps of the personal model each round (ditto) or of fine-tuning before evaluation (finetune);
    0 = client.local_steps."""
    head_steps: int = Field(0, ge=0)
    """fedrep: 0 = FedPer (personal and shared parts train jointly); > 0 = FedRep: this many steps on
    the personal part alone, then the local steps on the shared part alone."""

    @model_validator(mode="after")
    def _check_patterns(self) -> PersonalizationConfig:
        for p in self.personal_patterns:
            try:
                re.compile(p)
            except re.error as err:
                raise ValueError(f"personalization.personal_patterns: {p!r} is not a valid regex ({err})") from None
        if self.method == "fedrep" and not self.personal_patterns:
            raise ValueError('personalization.method = "fedrep" needs personal_patterns, e.g. ["v_proj"]')
        return self


Objective = Literal["harmless", "helpful", "honest"]
"""The alignment objectives a preference pair can serve."""


class AlignmentConfig(Section):
    method: Literal["none", "sft", "dpo", "firm", "scalarized", "fmgda"] = "none"
    """none = personalization job; sft = SFT on chosen answers; dpo = DPO on the union of pairs;
    firm = FIRM (per-step regularized MGDA weights, one upload); scalarized = fixed weights p;
    fmgda = clients upload one delta per objective, the server solves MGDA."""
    data: str = ""
    """Users' own preference pairs: a JSONL file of client / prompt / chosen / rejected (and objective, needed
    by firm, scalarized and fmgda) per line; its clients are the run's clients and its sha256 goes into
    manifest.json (data/preference_file.py). "" = pairs built from the shipped packages, dealt by mix."""
    objectives: list[Objective] = Field(
        default_factory=lambda: ["harmless", "helpful"], min_length=1
    )
    """Objectives, in the order of ``preference``. "honest" pairs count as "helpful" unless listed."""
    preference: list[float] = Field(default_factory=lambda: [0.5, 0.5])
    """Preference vector p on the simplex, one weight per objective (firm, scalarized)."""
    beta: float = 3.0
    """FIRM regularization toward p, relative to the gradients' scale: lambda = argmin 1/2 ||sum lambda_m g_m||^2
    + b/2 ||lambda - p||^2 with b = beta * tr(G) / M (0 = MGDA; larger = closer to scalarization with p)."""
    dpo_beta: float = Field(0.1, gt=0)
    """DPO temperature: reward r = dpo_beta * (log pi(y|x) - log pi_ref(y|x))."""
    pairs_per_client: int = Field(48, ge=1)
    """Preference pairs dealt to each client (its held-out slice included)."""
    mix: Literal["spread", "uniform", "dirichlet"] = "spread"
    """How clients' objective shares differ (see data/preference_split.py)."""
    mix_spread: float = Field(0.8, ge=0, le=1)
    """mix = "spread": 0 = every client the same mix, 1 = from all one objective to all the other."""
    mix_alpha: float = Field(1.0, gt=0)
    """mix = "dirichlet": concentration."""
    client_mix: list[list[float]] = Field(default_factory=list)
    """Explicit per-client objective shares (one row per client, each on the simplex); overrides mix."""
    eval_pairs: int = Field(32, ge=1)
    """Public held-out pairs per objective scored each round (accuracy, reward margin)."""
    eval_prompts: int = Field(24, ge=0)
    """Held-out harmful and benign prompts for refusal / over-refusal rates (0 = skip)."""
    client_eval_pairs: int = Field(8, ge=1)
    """Each client's own held-out pairs used for its eval loss (DPO loss)."""

    @model_validator(mode="after")
    def _check(self) -> AlignmentConfig:
        p = self.preference
        if any(not math.isfinite(x) or x < 0 for x in p) or abs(sum(p) - 1.0) > 1e-6:
            raise ValueError(
                f"alignment.preference = {p} is not on the simplex: weights must be >= 0 and sum to 1 "
                f"(sum = {sum(p):.6g}); e.g. preference = [0.5, 0.5]"
            )
        if len(p) != len(self.objectives):
            raise ValueError(
                f"alignment.preference has {len(p)} weights but alignment.objectives has "
                f"{len(self.objectives)} ({self.objectives}); give one weight per objective"
            )
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"alignment.objectives = {self.objectives} lists an objective twice")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"alignment.beta = {self.beta} must be >= 0 (FIRM regularization; 0 = plain MGDA)")
        return self
