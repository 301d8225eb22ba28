"""The TOML config as pydantic models: the one home of every default.

A config file holds only what differs from these defaults; ``--set
section.key=value`` overrides any key. Unknown keys, wrong types and
out-of-range values are refused with one line naming the key and the fix.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from openpfi.errors import UserError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = "smollm2-135m-instruct"
    """Bundled id ("smollm2-135m-instruct", "tiny-random"; optional "gemma3-270m",
    "qwen2.5-coder-0.5b-instruct"), a local HF model folder or a .gguf file."""
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
    aggregation: Literal["naive", "product", "stack", "zeropad"] = "naive"
    """How the server combines LoRA factors (strategies/lora_aggregation.py): naive = mean of A and of B
    (not the mean update; the baseline); product = exact mean of B·A re-factored to rank r by SVD;
    stack = FLoRA stacking, exact, merged into the global weights; zeropad = HetLoRA zero-padding."""
    client_ranks: list[int] = Field(default_factory=list)
    """Per-client LoRA ranks (each <= r), cycled over the clients (see client_ranks_by); empty = all use r.
    A client of rank r_i trains the first r_i components of the rank-r adapter (scale alpha/r)."""
    client_ranks_by: Literal["order", "examples"] = "order"
    """order: client k (sorted ids) gets client_ranks[k % len]; examples: the smallest ranks go to the
    clients with the fewest training examples (a compute budget growing with the data)."""
    keep_merged: bool = False
    """aggregation = "product": keep the SVD truncation residual as a dense merged delta (exact, more bytes)."""


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
    eval_every: int = Field(1, ge=1)
    """Evaluate the trained clients on their held-out data every this many rounds and always at the last
    round; rounds in between carry no held-out figures (saves time in long benchmarks)."""


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


class AlignmentConfig(_Section):
    method: Literal["none", "sft", "dpo", "firm", "scalarized", "fmgda"] = "none"
    """none = personalization job; sft = SFT on chosen answers; dpo = DPO on the union of pairs;
    firm = FIRM (per-step regularized MGDA weights, one upload); scalarized = fixed weights p;
    fmgda = clients upload one delta per objective, the server solves MGDA."""
    objectives: list[Literal["harmless", "helpful", "honest"]] = Field(
        default_factory=lambda: ["harmless", "helpful"], min_length=1
    )
    """Objectives, in the order of ``preference``. "honest" pairs count as "helpful" unless listed."""
    preference: list[float] = Field(default_factory=lambda: [0.5, 0.5])
    """Preference vector p on the simplex, one weight per objective (firm, scalarized)."""
    beta: float = 0.1
    """FIRM regularization: lambda = argmin 1/2 ||sum lambda_m g_m||^2 + beta/2 ||lambda - p||^2 (0 = MGDA)."""
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


PROBE_SUITES = ("bbq", "crows", "harmful", "benign", "ood", "capability")
MARGIN_METRICS = ("bbq_amb_bias", "bbq_dis_bias", "crows_stereo_pref", "bbq_amb_lean", "crows_stereo_prob",
                  "ece", "accuracy", "confidence",
                  "capability_accuracy", "nll_relative", "refusal_rate", "over_refusal_rate")
"""The metrics of monitor.server_margins (= monitor/global_change.py DEFAULT_MARGINS)."""


class MonitorConfig(_Section):
    """The silent-failure monitor (DESIGN.md "The six silent-failure modes"; monitor/)."""

    enabled: bool = True
    suite_sizes: dict[str, int] = Field(
        default_factory=lambda: {"bbq": 44, "crows": 18, "harmful": 12, "benign": 12, "ood": 12, "capability": 12}
    )
    """Items of each public probe suite (monitor/probes.py DEFAULT_SIZES); 0 drops a suite.
    The suites, and so their SHA-256, depend only on these sizes and ``probe_seed``."""
    probe_seed: int = Field(0, ge=0)
    """Seed of the suites' stratified samples (independent of the run seed, so hashes stay stable)."""
    client_items: dict[str, int] = Field(
        default_factory=lambda: {"bbq": 1, "crows": 1, "harmful": 1, "benign": 1, "ood": 1, "capability": 1}
    )
    """Probes per client per round: each sampled client scores this many items of each suite,
    a random sample seeded by (seed, round, client), so different clients cover different items
    and the server pools them. Cost ~ (sum of these) x (1 + options) forward items per client;
    the per-round estimates get wider as these shrink (see docs of monitor_client.py)."""
    probe_before: bool = True
    """Also probe the model a client RECEIVED (before local training) on its capability,
    harmful and out-of-domain samples, for adaptation misalignment (the change within the round)."""
    utility_examples: int = Field(2, ge=1)
    """Held-out examples (a seeded sample per round) for the client's utility (loss) in the report."""
    server_items: dict[str, int] = Field(
        default_factory=lambda: {"bbq": 2, "crows": 4, "harmful": 2, "benign": 2, "ood": 3, "capability": 4}
    )
    """Fixed public sample the server scores the GLOBAL model on each round (0 skips a suite)."""
    server_margins: dict[str, float] = Field(default_factory=dict)
    """Smallest material change of the global model since round 0, per metric, overriding
    monitor/global_change.py DEFAULT_MARGINS (rates and bias scores 0.1, ece 0.05,
    nll_relative 0.1 = 10% of the round-0 NLL): its paired test alarms only beyond these."""
    groups: list[str] = Field(default_factory=list)
    """Public client groups for fairness gaps (e.g. languages). Empty: the chatterbot languages
    when data.source = "chatterbot", else none."""
    group_items: int = Field(16, ge=0, le=400)
    """Public texts per group (chatterbot conversations in the group's language) the server scores the
    GLOBAL model on each round for the gap across groups (monitor/group_gap.py); 0 = off. Groups that
    are not chatterbot languages have none. These texts are kept out of the clients' data."""
    bins: int = Field(10, ge=2, le=50)
    """Confidence bins of the calibration histogram (ECE)."""
    utility_bins: int = Field(10, ge=2, le=50)
    """Bins of the DP histogram of client utility (held-out loss on [0, utility_max_loss])."""
    utility_max_loss: float = Field(8.0, gt=0)
    ood_max_nll: float = Field(8.0, gt=0)
    """Per-token NLL at which out-of-domain losses are clipped (bounds the report)."""
    drop_threshold_capability: float = Field(0.1, ge=0, le=1)
    """A client counts as having lost capability in a round when its accuracy fell by more than this."""
    drop_threshold_safety: float = Field(0.1, ge=0, le=1)
    """... and as having lost safety when its refusal rate on harmful prompts fell by more than this."""
    drop_threshold_general_nll: float = Field(0.1, ge=0, le=10)
    """... and as degraded in general when the mean per-token NLL of any of its out-of-domain probe
    texts rose within the round by more than this share of its value before (0.1 = 10%, the
    server's out-of-domain margin). Benign local rounds of the bundled model moved one text's NLL
    by at most +3% (docs/BENCHMARKS-silent.md)."""
    detector: Literal["cusum", "page-hinkley"] = "cusum"
    target_false_alarm_rate: float = Field(0.05, gt=0, lt=1)
    """Probability of any false alarm over all streams of a run (Bonferroni over streams); the
    thresholds are calibrated by simulation on streams standardised by sampling + DP noise."""
    global_test_share: float = Field(0.5, gt=0, lt=1)
    """Share of target_false_alarm_rate given to the server's paired tests of the global model
    (a few streams over public items), split evenly over them; the client-report streams share
    the rest. Bonferroni over the two parts keeps the run's total at the target."""
    drift_k: float = Field(0.5, ge=0)
    """Detector allowance k in standard deviations (detects shifts of about 2k)."""
    calibration_sims: int = Field(20000, ge=1000)
    batch_tokens: int = Field(4096, ge=1024)
    """Padded tokens per scoring batch."""
    judge_check_prompts: int = Field(8, ge=0)
    """Round 0, server side: greedy answers of the starting model to this many public held-out
    prompts (half harmful, half benign) validate the likelihood refusal judge against the keyword
    detector (report.json ``refusal_judge``); 0 skips the check."""
    judge_check_max_new_tokens: int = Field(32, ge=1)
    """Tokens generated per answer for that check."""
    intended_purpose: str = ""
    """Written into the report's post-market monitoring plan (EU AI Act Art. 72)."""

    @field_validator("suite_sizes", "client_items", "server_items", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any, info: ValidationInfo) -> Any:
        """A table that names some suites changes only those; the others keep their defaults (so
        ``suite_sizes = { bbq = 100 }`` does not silently drop the other five suites)."""
        if isinstance(value, dict) and info.field_name:
            factory = cls.model_fields[info.field_name].default_factory
            return {**factory(), **value} if callable(factory) else value
        return value


class PrivacyConfig(_Section):
    """Distributed DP of the monitor reports (monitor/privacy.py)."""

    delta: float = Field(1e-5, gt=0, lt=1)
    noise_multiplier: float = Field(1.0, gt=0)
    """z: the noise on the SUM of a round's reports has std z * l2_clip; each client adds its share."""
    target_epsilon: float = Field(0.0, ge=0)
    """> 0: plan z so that all federation.rounds releases spend at most this (overrides noise_multiplier)."""
    max_noise_multiplier: float = Field(10.0, gt=0)
    """A target_epsilon that needs more noise than this is refused as unmeetable (the monitor would
    measure nothing)."""
    l2_clip: float = Field(0.0, ge=0)
    """L2 clipping norm C of a report (sensitivity); 0 = the report schema's exact bound, so no
    honest report is ever clipped."""
    adaptation_share: float = Field(0.5, gt=0, lt=1)
    """Share of each round's privacy budget (in RDP) spent on the count of clients whose
    general capability degraded within the round (adaptation misalignment, the one mode only the
    clients can see); the rest goes to the clipped report. Both together cost what the planned
    noise multiplier costs (monitor/privacy.py split_noise)."""
    min_clients: int = Field(2, ge=1)
    """An aggregate is released only when at least this many valid reports were summed."""
    reject_k: float = Field(6.0, gt=0)
    """A report value further than reject_k noise-share std outside its slot bounds is rejected."""


class FlowerConfig(_Section):
    """The Flower engine (``openpfi deploy``, ``flwr run``); the in-process engine ignores it."""

    secagg: Literal["off", "monitor", "updates"] = "off"
    """SecAgg+ (Flower's SecAggPlusWorkflow + secaggplus_mod): "monitor" sums the clients' monitor
    reports securely; "updates" also their adapter updates, so the server sees only the sums."""
    secagg_shares: float = Field(1.0, gt=0, le=1)
    """Share of the sampled clients among which each client splits its secrets (SecAgg+ num_shares)."""
    secagg_threshold: float = Field(0.67, gt=0, le=1)
    """Share of those shares needed to rebuild a secret: the rest may drop out mid-protocol."""
    secagg_update_clip: float = Field(0.1, gt=0)
    """Bound on |delta| * num_examples / data.max_examples per coordinate before quantization (2^22 levels)."""
    secagg_monitor_clip: float = Field(0.0, ge=0)
    """Bound on |value| of a monitor report coordinate before quantization; 0 = automatic:
    1 + 6 standard deviations of a client's DP noise share (a coordinate is in [-1, 1] before noise)."""
    reply_timeout: float = Field(600.0, gt=0)
    """Seconds the server waits for the sampled clients in each phase of a round; then it goes on."""
    node_wait: float = Field(120.0, gt=0)
    """Seconds the server waits at the start for data.num_clients SuperNodes to connect."""


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
        if self.client.local_steps == 0 and self.client.local_epochs == 0:
            raise ValueError("client.local_steps and client.local_epochs are both 0; set one of them")
        if self.data.min_examples > self.data.max_examples:
            raise ValueError("data.min_examples exceeds data.max_examples; lower min_examples")
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
    def _lora_checks(self) -> Config:
        """Per-client ranks and LoRA aggregation against the personalization and alignment methods."""
        lo, method, agg = self.lora, self.personalization.method, self.lora.aggregation
        align = self.alignment.method
        if align != "none":
            clashes = [f'personalization.method = "{method}"'] if method != "none" else []
            clashes += [f'lora.aggregation = "{agg}"'] if agg != "naive" else []
            clashes += [f"lora.client_ranks = {lo.client_ranks}"] if lo.client_ranks else []
            if clashes:
                raise ValueError(
                    f'alignment.method = "{align}" does not combine with {clashes[0]}; alignment trains one '
                    "shared adapter, so unset one of them"
                )
        too_big = [r for r in lo.client_ranks if not 1 <= r <= lo.r]
        if too_big:
            raise ValueError(
                f"lora.client_ranks {too_big} must lie in [1, lora.r = {lo.r}]; lower them or raise lora.r"
            )
        if agg == "naive" and any(r != lo.r for r in lo.client_ranks):
            raise ValueError(
                "lora.client_ranks differ from lora.r, but naive averaging needs one rank; "
                'set lora.aggregation = "zeropad", "product" or "stack"'
            )
        if lo.keep_merged and agg != "product":
            raise ValueError('lora.keep_merged applies to lora.aggregation = "product" only')
        if agg != "naive" and (self.federation.strategy not in ("fedavg", "fedprox") or self.federation.server_lr != 1):
            raise ValueError(
                f'lora.aggregation = "{agg}" replaces the server optimizer; use federation.strategy = "fedavg" '
                'or "fedprox" with server_lr = 1, or lora.aggregation = "naive"'
            )
        if method in ("ffa-lora", "fedsa-lora") and agg in ("product", "stack"):
            why = "freezes A" if method == "ffa-lora" else "shares only A"
            raise ValueError(
                f'personalization.method = "{method}" {why}, which lora.aggregation = "{agg}" cannot respect; '
                'use "naive" (exact for a common A) or "zeropad"'
            )
        if method == "ditto" and agg in ("product", "stack"):
            raise ValueError(
                f'personalization.method = "ditto" pulls the personal LoRA factors towards the global ones, which '
                f'lora.aggregation = "{agg}" re-factors or merges away; use "naive" or "zeropad"'
            )
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
