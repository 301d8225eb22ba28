"""Shared data types of the monitor: what crosses its packages and layers, nothing more."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

Scope = Literal["clients", "global", "personal"]
"""Whose behaviour a stream measures: the DP sum of the clients' reports on the models they trained
("clients"), the global model the server scores on public items ("global"), or the clients'
personal models, reported like "clients" (DP sums) when personalization keeps a personal part."""
_PREFIX: dict[str, str] = {"clients": "", "global": "global_", "personal": "personal_"}


@dataclass(frozen=True, order=True)
class StreamName:
    """The key of a stream: ``<mode>.[<scope>_]<metric>[.<group>]`` as text, fields as data.

    ``alignment_erosion.global_refusal_rate`` is ``StreamName("alignment_erosion", "refusal_rate",
    scope="global")``; ``amplified_bias.bbq_amb_bias.Age`` has group ``Age``. Text is parsed only
    by :meth:`parse`; everything else reads the fields.
    """

    mode: str
    metric: str
    group: str | None = None
    scope: Scope = "clients"

    def __str__(self) -> str:
        tail = f".{self.group}" if self.group is not None else ""
        return f"{self.mode}.{_PREFIX[self.scope]}{self.metric}{tail}"

    @classmethod
    def parse(cls, text: str) -> StreamName:
        """The inverse of ``str``; ValueError for a name without a metric."""
        parts = str(text).split(".", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ValueError(f"stream name {text!r} is not <mode>.<metric>[.<group>]")
        mode, metric = parts[0], parts[1]
        scope: Scope = "clients"
        for s in ("global", "personal"):
            if metric.startswith(_PREFIX[s]):
                scope, metric = s, metric[len(_PREFIX[s]):]  # type: ignore[assignment]
                break
        return cls(mode, metric, parts[2] if len(parts) > 2 else None, scope)

    @property
    def scoped_metric(self) -> str:
        """The metric as written in the name, scope prefix included: ``global_refusal_rate``."""
        return f"{_PREFIX[self.scope]}{self.metric}"

    @property
    def within_mode(self) -> str:
        """The name without its mode: ``global_refusal_rate``, ``bbq_amb_bias.Age``."""
        return self.scoped_metric + (f".{self.group}" if self.group is not None else "")

    @property
    def key(self) -> str:
        """``<mode>.<metric>``: the metric the stream belongs to, whatever its scope and group."""
        return f"{self.mode}.{self.metric}"

    def scoped(self, scope: Scope) -> StreamName:
        return replace(self, scope=scope)

    def without_group(self) -> StreamName:
        return replace(self, group=None)


def stream_mode(stream: str) -> str:
    """The mode of a stream name."""
    return StreamName.parse(stream).mode


def global_name(stream: str) -> str:
    """``alignment_erosion.refusal_rate`` -> ``alignment_erosion.global_refusal_rate``: the stream of
    the global model the server scores itself."""
    return str(StreamName.parse(stream).scoped("global"))


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


@dataclass(frozen=True)
class Alarm:
    mode: str
    stream: str
    round: int
    magnitude: float
    detector: str
    threshold: float
    evidence: dict[str, float] = field(default_factory=dict)
