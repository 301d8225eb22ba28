"""The TOML config as pydantic models: the one home of every default.

A config file holds only what differs from these defaults; ``--set
section.key=value`` overrides any key. Unknown keys, wrong types and
out-of-range values are refused with one line naming the key and the fix.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from openpfi.errors import UserError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = "smollm2-135m-instruct"
    """Bundled id ("smollm2-135m-instruct", "tiny-random"), a local HF model folder or a .gguf file."""
    device: Literal["cpu", "cuda"] = "cpu"
    adapter: str = ""
    """Optional starting adapter: a folder or .safetensors file of LoRA weights (e.g. safety-tuned)."""
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    """Compute dtype of the frozen base: auto = bfloat16 where the CPU/GPU supports it."""


class LoraConfig(_Section):
    r: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)


class DataConfig(_Section):
    source: Literal["chitchat", "shakespeare", "chatterbot", "jsonl"] = "chitchat"
    path: str = ""
    """JSONL file (source = "jsonl")."""
    client_field: str = "client"
    prompt_field: str = "prompt"
    response_field: str = "response"
    label_field: str = ""
    strict: bool = True
    """Strict: a corrupt JSONL row fails with its line number. Lenient: skipped and counted."""
    partition: Literal["natural", "iid", "dirichlet", "quantity"] = "natural"
    num_clients: int = Field(8, ge=1, le=100_000)
    alpha: float = Field(0.5, gt=0)
    """Dirichlet concentration (partition = "dirichlet")."""
    quantity_sigma: float = Field(1.0, gt=0)
    heldout_fraction: float = Field(0.2, gt=0, lt=1)
    min_examples: int = Field(10, ge=2)
    max_examples: int = Field(200, ge=2)
    languages: list[str] = Field(default_factory=list)
    """chatterbot: restrict to these languages (empty = all)."""


class FederationConfig(_Section):
    rounds: int = Field(3, ge=1, le=100_000)
    clients_per_round: int = Field(8, ge=1)
    strategy: Literal["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"] = "fedavg"
    server_lr: float = Field(1.0, gt=0)
    server_momentum: float = Field(0.9, ge=0, lt=1)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)
    proximal_mu: float = Field(0.01, ge=0)
    """FedProx: mu/2 ||w - w_global||^2 added to each client's loss."""
    min_fit_clients: int = Field(1, ge=1)
    """A round goes on when at least this many sampled clients answered."""


class ClientConfig(_Section):
    local_steps: int = Field(10, ge=0)
    """Optimizer steps per round (0 = use local_epochs)."""
    local_epochs: float = Field(0.0, ge=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(256, ge=8)
    lr: float = Field(2e-4, gt=0)
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    eval_batch_size: int = Field(8, ge=1)
    max_eval_examples: int = Field(32, ge=1)


class PersonalizationConfig(_Section):
    method: Literal["none", "local", "finetune", "ditto", "fedrep", "fedsa-lora", "ffa-lora"] = "none"


class AlignmentConfig(_Section):
    method: Literal["none", "sft", "dpo", "firm", "scalarized", "fmgda"] = "none"


class MonitorConfig(_Section):
    enabled: bool = True


class PrivacyConfig(_Section):
    delta: float = Field(1e-5, gt=0, lt=1)


class OutputConfig(_Section):
    dir: str = "runs/demo"


class Config(_Section):
    seed: int = Field(0, ge=0)
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    client: ClientConfig = Field(default_factory=ClientConfig)
    personalization: PersonalizationConfig = Field(default_factory=PersonalizationConfig)
    alignment: AlignmentConfig = Field(default_factory=AlignmentConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
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
        if self.client.local_steps == 0 and self.client.local_epochs == 0:
            raise ValueError("client.local_steps and client.local_epochs are both 0; set one of them")
        if self.data.min_examples > self.data.max_examples:
            raise ValueError("data.min_examples exceeds data.max_examples; lower min_examples")
        return self


def _parse_value(text: str) -> Any:
    """Parse the right side of ``--set key=value`` as a TOML value, else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a raw config dict (copy)."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected section.key=value, e.g. --set federation.rounds=5")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise UserError(f"--set {key}: {p!r} is not a section")
            node[p] = dict(nxt)
            node = node[p]
        node[parts[-1]] = _parse_value(value.strip())
    return out


def _format_error(err: ValidationError, origin: str) -> str:
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"] if not isinstance(x, int)) or "config"
    if e["type"] == "extra_forbidden":
        return f"{origin}: unknown key '{loc}'; remove it or check its spelling (see openpfi/config.py)"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "value_error":
        return f"{origin}: {msg}"
    got = e.get("input")
    return f"{origin}: {loc} = {got!r} is invalid ({msg}); fix the value in the file or with --set {loc}=..."


def from_dict(raw: dict[str, Any], origin: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(_format_error(err, origin)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a TOML config (or only defaults when path is None) and apply overrides."""
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        p = Path(path)
        origin = str(p)
        if not p.is_file():
            raise UserError(f"config file not found: {p}; pass an existing .toml file (e.g. examples/demo.toml)")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise UserError(f"{p}: not valid TOML ({err}); fix the syntax at that line") from None
        except UnicodeDecodeError:
            raise UserError(f"{p}: not a UTF-8 text file; pass a TOML config") from None
    if overrides:
        raw = apply_overrides(raw, overrides)
        origin = f"{origin} (with --set)"
    return from_dict(raw, origin)


def dump_toml(cfg: Config) -> str:
    """The resolved config (all defaults filled in) as TOML."""
    return tomli_w.dumps(cfg.model_dump(mode="json"))
