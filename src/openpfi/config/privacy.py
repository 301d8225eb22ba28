"""Privacy, the Flower engine and the output folder: [privacy], [flower], [output]."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from openpfi.config.section import Section


class PrivacyConfig(Section):
    """Distributed DP of the monitor reports (monitor/privacy/) and what else of a client the server sees."""

    delta: float = Field(1e-5, gt=0, lt=1)
    """DP delta of the (epsilon, delta) guarantee."""
    target_epsilon: float = Field(8.0, gt=0)
    """The privacy budget of the monitor reports over all federation.rounds releases: the noise
    multiplier z is planned so that they spend at most this, unless privacy.noise_multiplier is set.
    A run whose plan spends more says so in one line before it starts."""
    noise_multiplier: float = Field(0.0, ge=0)
    """z: the noise on the SUM of a round's reports has std z * l2_clip; each client adds its share.
    0 = planned from target_epsilon; > 0 = this z, fixed (the plan's epsilon is still compared with
    target_epsilon)."""
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
    noise multiplier costs (monitor/privacy/mechanism.py split_noise)."""
    min_clients: int = Field(2, ge=1)
    """An aggregate is released only when at least this many valid reports were summed."""
    reject_k: float = Field(6.0, gt=0)
    """A report value further than reject_k noise-share std outside its slot bounds is rejected."""
    share_client_metrics: bool = False
    """Research simulations only: also write each client's raw figures (held-out and train loss,
    perplexity, tokens/s, worst client, spread) into the server's metrics.jsonl. Off, per-client
    utility reaches the server only through the monitor's DP report; on, manifest.json and the
    report say so."""

    # -- client-level DP of the adapter updates (DP-FedAvg; strategies/update_privacy.py) --------
    update_clip: float = Field(0.0, ge=0)
    """C: L2 bound of each client's update; > 0 turns on client-level DP of the updates (0 = off)."""
    update_noise_multiplier: float = Field(0.0, ge=0)
    """z: the noise on the SUM of a round's clipped updates has std z * C (central on the server, or
    per-client shares summed under SecAgg+); 0 = planned from update_target_epsilon."""
    update_target_epsilon: float = Field(0.0, ge=0)
    """> 0: plan z so that all federation.rounds rounds spend at most this epsilon on the updates
    (at privacy.delta, with client sampling accounted)."""
    update_max_noise_multiplier: float = Field(10.0, gt=0)
    """A update_target_epsilon that needs more noise than this is refused as unmeetable."""


class FlowerConfig(Section):
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
    """Seconds the server waits at the start for data.num_clients SuperNodes to connect, and for each
    (also one that rejoins mid-run) to answer that it is ready (its model and data loaded)."""
    node_worker: bool = True
    """Deployment runtime: each SuperNode's messages go to one long-lived node worker process that
    keeps the model, the data and the client's state in memory for the run (false: every message's
    own ClientApp process loads them again). Flower's simulation workers keep them anyway."""
    worker_idle: float = Field(1800.0, gt=0)
    """Seconds a node worker waits for its next message before it exits (it also exits with its SuperNode)."""


class OutputConfig(Section):
    dir: str = "runs/demo"
    """Run folder when `openpfi run` gets no --out."""
    audit_signing_key: str = ""
    """Path to an ed25519 private key (PEM, from `openpfi audit keygen`) the run owner holds: every
    audit entry is then signed, and `openpfi audit verify --public-key` checks the signatures.
    "" = unsigned (the chain is still anchored by its head hash)."""
