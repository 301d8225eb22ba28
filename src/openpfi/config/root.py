"""The whole config: every section, and the checks that span sections."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from openpfi.config.data import DataConfig
from openpfi.config.methods import AlignmentConfig, PersonalizationConfig
from openpfi.config.model import LoraConfig, ModelConfig
from openpfi.config.monitor import MARGIN_METRICS, PROBE_SUITES, MonitorConfig
from openpfi.config.privacy import FlowerConfig, OutputConfig, PrivacyConfig
from openpfi.config.rag import RagConfig
from openpfi.config.section import Section
from openpfi.config.training import ClientConfig, FederationConfig
from openpfi.config.trust import trust_problems


class Config(Section):
    seed: int = Field(0, ge=0)
    """Seeds the partition, the LoRA init, the batches and every sampled client; same config + seed = same metrics."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    client: ClientConfig = Field(default_factory=ClientConfig)
    personalization: PersonalizationConfig = Field(default_factory=PersonalizationConfig)
    alignment: AlignmentConfig = Field(default_factory=AlignmentConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    rag: RagConfig = Field(default_factory=RagConfig)
    flower: FlowerConfig = Field(default_factory=FlowerConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.federation.clients_per_round > self.data.num_clients:
            raise ValueError(
                f"federation.clients_per_round ({self.federation.clients_per_round}) exceeds "
                f"data.num_clients ({self.data.num_clients}); lower it or add clients"
            )
        if self.data.source == "jsonl" and not self.data.path:
            raise ValueError('data.path is required when data.source = "jsonl"; set it to your .jsonl file')
        if self.data.source == "hf" and not self.data.path:
            raise ValueError('data.path is required when data.source = "hf"; set it to the folder save_to_disk wrote')
        if self.client.local_steps == 0 and self.client.local_epochs == 0:
            raise ValueError("client.local_steps and client.local_epochs are both 0; set one of them")
        if self.data.min_examples > self.data.max_examples:
            raise ValueError("data.min_examples exceeds data.max_examples; lower min_examples")
        return self

    @model_validator(mode="after")
    def _trust_checks(self) -> Config:
        """Robust aggregation, DP of the updates and compression against the rest (config/trust.py)."""
        problem = trust_problems(self)
        if problem is not None:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _monitor_checks(self) -> Config:
        m = self.monitor
        if not m.enabled:
            return self
        for key in ("suite_sizes", "client_items", "server_items"):
            unknown = sorted(set(getattr(m, key)) - set(PROBE_SUITES))
            if unknown:
                raise ValueError(f"monitor.{key} names unknown probe suites {unknown}; use {list(PROBE_SUITES)}")
        for name, size in m.suite_sizes.items():
            if size < 0:
                raise ValueError(f"monitor.suite_sizes.{name} = {size} must be >= 0")
            if size == 0:
                continue
            k, srv = m.client_items.get(name, 0), m.server_items.get(name, 0)
            if not 1 <= k <= size:
                raise ValueError(
                    f"monitor.client_items.{name} = {k} must lie in [1, monitor.suite_sizes.{name} = {size}]; "
                    f"set monitor.suite_sizes.{name} = 0 to drop the suite"
                )
            if not 0 <= srv <= size:
                raise ValueError(f"monitor.server_items.{name} = {srv} must lie in [0, {size}]")
        if not any(v > 0 for v in m.suite_sizes.values()):
            raise ValueError("monitor.suite_sizes are all 0; keep at least one probe suite or set monitor.enabled = false")
        unknown = sorted(set(m.server_margins) - set(MARGIN_METRICS))
        if unknown:
            raise ValueError(f"monitor.server_margins names unknown metrics {unknown}; use {list(MARGIN_METRICS)}")
        bad = sorted(k for k, v in m.server_margins.items() if not (math.isfinite(v) and v >= 0))
        if bad:
            raise ValueError(f"monitor.server_margins.{bad[0]} must be a finite number >= 0")
        return self

    @model_validator(mode="after")
    def _lora_ranks(self) -> Config:
        """The [lora] section on its own; combinations with methods are asked of the policies and
        aggregations that know them (assembly/compatibility.py)."""
        too_big = [r for r in self.lora.client_ranks if not 1 <= r <= self.lora.r]
        if too_big:
            raise ValueError(
                f"lora.client_ranks {too_big} must lie in [1, lora.r = {self.lora.r}]; lower them or raise lora.r"
            )
        return self
