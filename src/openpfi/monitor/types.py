"""Shared data types of the monitor: what crosses layers, nothing more."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

MODES: tuple[str, ...] = (
    "amplified_bias",
    "confidence_miscalibration",
    "fairness_collapse",
    "adaptation_misalignment",
    "out_of_domain_degradation",
    "alignment_erosion",
)


@dataclass(frozen=True)
class ScoreItem:
    """One likelihood query: log p(continuation | prompt).

    chat=True renders ``prompt`` as the user turn and ``continuation`` as the
    assistant turn with the model's chat template; chat=False scores plain
    text ``prompt + continuation`` (e.g. CrowS-Pairs sentences, prompt="").
    """

    prompt: str
    continuation: str
    chat: bool = True


class Scorer(Protocol):
    """The model seen by the monitor: batched continuation log-likelihoods.

    Returns, per item, (sum of log-probabilities of the continuation tokens,
    number of continuation tokens). Implemented in ``openpfi.client.scoring``
    on a real model; tests use a fake.
    """

    def logprobs(self, items: Sequence[ScoreItem]) -> list[tuple[float, int]]: ...


@dataclass(frozen=True)
class MetricPoint:
    """A derived, server-side figure with its uncertainty interval.

    ``lo``/``hi`` bound a ~95% interval that includes both sampling and DP noise.
    """

    value: float
    lo: float
    hi: float
    n_clients: int = 0


def global_name(stream: str) -> str:
    """``alignment_erosion.refusal_rate`` -> ``alignment_erosion.global_refusal_rate``: the
    stream of the global model the server scores itself."""
    mode, rest = stream.split(".", 1)
    return f"{mode}.global_{rest}"


def stream_mode(stream: str) -> str:
    """Streams are named ``<mode>.<metric>[.<group>]``; return the mode."""
    return stream.split(".", 1)[0]


@dataclass(frozen=True)
class Alarm:
    mode: str
    stream: str
    round: int
    magnitude: float
    detector: str
    threshold: float
    evidence: dict[str, float] = field(default_factory=dict)
