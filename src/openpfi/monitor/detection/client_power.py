"""The power of a client-report stream (a change detector on a DP sum), and what would make it watching.

One round's point of a client stream has a std from sampling (which clients and items were drawn:
the Bhatia-Davis bound of ``vector/sums.py``) and from the DP noise on the sum. For a mean over ``n``
clients the first scales as ``1 / sqrt(n)`` and the second as ``z / n`` (``z`` the noise multiplier)::

    std(n, z)^2 = s^2 n0 / n + d^2 (z / z0)^2 (n0 / n)^2

from the two parts ``s``, ``d`` at the planned ``n0`` clients per round and ``z0``. The detectable
shift is the change detector's even-odds shift in stds (``power.detectable_shift``) times ``std``;
``clients_needed`` and ``epsilon_needed`` invert it for 1.5 x the stream's margin.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from openpfi.algorithms.privacy import epsilon_after
from openpfi.monitor.detection.power import DETECTION_ROUNDS, detectable_shift
from openpfi.monitor.detection.verdicts import WATCH_FACTOR, verdict

MAX_CLIENTS = 100_000


@dataclass(frozen=True)
class ClientPlan:
    """What the power of a client-report stream rests on."""

    margin: float | None
    direction: str
    span: float
    sampling_std: float
    """One round's std from sampling, at ``clients`` clients a round."""
    dp_std: float
    """One round's std from the DP noise, at ``clients`` and ``noise_multiplier``."""
    clients: int
    noise_multiplier: float
    detector: str
    threshold: float
    drift_k: float
    rounds: int
    """Releases the privacy budget is spent over (``federation.rounds``)."""
    delta: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClientPlan:
        return cls(**d)


def client_std(plan: ClientPlan, clients: float | None = None, z: float | None = None) -> float:
    """One round's std at ``clients`` clients and noise multiplier ``z`` (module docstring)."""
    n = plan.clients if clients is None else clients
    zz = plan.noise_multiplier if z is None else z
    r = plan.clients / n
    dp = plan.dp_std * (zz / plan.noise_multiplier if plan.noise_multiplier > 0 else 1.0) * r
    return math.sqrt(plan.sampling_std**2 * r + dp**2)


def _shift_in_std(plan: ClientPlan, rounds: int, power: float) -> float:
    direction = plan.direction if plan.direction in ("increase", "decrease") else "both"
    return detectable_shift(plan.detector, plan.threshold, plan.drift_k, min(rounds, plan.rounds),
                            power=power, direction=direction)


def client_detectable(plan: ClientPlan, observed_std: float | None = None, rounds: int = DETECTION_ROUNDS,
                      power: float = 0.5) -> dict[str, Any]:
    """``{detectable, round_std, shift_in_std, margin, verdict, fix}`` of a client stream: the planned std,
    or the std a run observed (``observed_std``) when it has one, never below the DP noise's own part (which
    is known exactly; an interval clipped to the metric's range understates it)."""
    d = _shift_in_std(plan, rounds, power)
    std = max(observed_std, plan.dp_std) if observed_std is not None else client_std(plan)
    change = d * std
    v = verdict(change, plan.margin, plan.span)
    return {"detectable": change, "round_std": std, "shift_in_std": d, "margin": plan.margin, "span": plan.span,
            "verdict": v,
            "fix": None if v == "watching" or plan.margin is None else client_fix(plan, d, std)}


def clients_needed(plan: ClientPlan, target_std: float, std: float | None = None) -> int | None:
    """The fewest clients a round whose std is at most ``target_std`` at the same epsilon (``std``: the
    std observed at ``plan.clients``, scaled like the planned one); None beyond ``MAX_CLIENTS``."""
    scale = (std / client_std(plan)) if std is not None and client_std(plan) > 0 else 1.0
    if scale * client_std(plan, MAX_CLIENTS) > target_std:
        return None
    lo, hi = 1, MAX_CLIENTS
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if scale * client_std(plan, mid) <= target_std else (mid, hi)
    return hi


def epsilon_needed(plan: ClientPlan, target_std: float) -> float | None:
    """The largest epsilon whose noise keeps the std within ``target_std`` at the same clients; None when
    the sampling part alone is larger (no privacy budget helps)."""
    if plan.sampling_std >= target_std or plan.dp_std <= 0:
        return None
    z = plan.noise_multiplier * math.sqrt(target_std**2 - plan.sampling_std**2) / plan.dp_std
    return epsilon_after(z, plan.rounds, plan.delta) if z > 0 else None


def client_fix(plan: ClientPlan, shift_in_std: float, std: float) -> str:
    """What would make the stream watching: clients per round at this epsilon, or the epsilon at these clients."""
    assert plan.margin is not None
    target = WATCH_FACTOR * plan.margin / shift_in_std
    n = clients_needed(plan, target, std)
    eps = epsilon_needed(plan, target)
    parts = [f"about {n} clients per round at this epsilon" if n is not None else
             f"more than {MAX_CLIENTS} clients per round at this epsilon"]
    if eps is not None:
        parts.append(f"epsilon {eps:.3g} at {plan.clients} clients")
    return "needs " + " or ".join(parts)
